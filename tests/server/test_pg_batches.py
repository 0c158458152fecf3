"""An operator batch of 10,000 codes does not stall machines: a machine's request is answered
while the batch is still running (between two of its chunks), on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import func, select

from vendhw.server.db import FairLock
from vendhw.server.models import Code
from vendhw.server.service import CODE_BATCH_CHUNK
from vendhw.testing.backend import InProcessServer


def _codes(server: InProcessServer) -> int:
    with server.backend.db.tx() as s:
        return int(s.execute(select(func.count(Code.id))).scalar() or 0)


def test_a_machine_is_answered_during_a_10000_code_batch(db_url: str) -> None:
    server = InProcessServer(None, db_url=db_url)
    try:
        server.add_machine("m1", slots={"A1": ("cola", 350)})
        client = server.client("m1")
        batch_done = threading.Event()
        result: dict[str, Any] = {}

        def batch() -> None:
            try:
                result["codes"] = server.backend.create_codes("cola", 10_000, "1d")
            except BaseException as exc:  # reported below
                result["error"] = exc
            finally:
                batch_done.set()

        thread = threading.Thread(target=batch)
        thread.start()
        while _codes(server) == 0 and not batch_done.is_set():
            pass  # until the first chunk has committed
        order = client.create_order("A1")  # a write: waits for the database like any sale
        answered_with = _codes(server)
        finished_first = batch_done.is_set()
        thread.join(timeout=120)
        assert "error" not in result
        assert order.state == "awaiting_payment"
        assert not finished_first, "the machine waited for the whole batch"
        assert answered_with < 10_000
        assert len(result["codes"]) == 10_000
        assert len({c["code"] for c in result["codes"]}) == 10_000
        assert _codes(server) == 10_000
    finally:
        server.close()


def test_the_batch_is_committed_in_chunks_and_all_shown_once(db_url: str) -> None:
    server = InProcessServer(None, db_url=db_url)
    try:
        server.add_machine("m1", slots={"A1": ("cola", 350)})
        count = CODE_BATCH_CHUNK * 2 + 7
        codes = server.operator("POST", "/operator/v1/codes",
                                json={"product": "cola", "count": count}).json()["codes"]
        assert len(codes) == count and len({c["id"] for c in codes}) == count
        # Every code works (each is the one stored under its id).
        redeemed = server.client("m1").redeem_code(codes[-1]["code"])
        assert redeemed.order.kind == "code"
    finally:
        server.close()


def test_fair_lock_serves_waiters_in_arrival_order() -> None:
    lock = FairLock()
    order: list[int] = []
    lock.acquire()
    started = []
    threads = []
    for i in range(5):
        ready = threading.Event()

        def run(i: int = i, ready: threading.Event = ready) -> None:
            ready.set()
            with lock:
                order.append(i)

        thread = threading.Thread(target=run)
        thread.start()
        ready.wait()
        # wait until the thread is queued inside acquire()
        while len(lock._waiters) < i + 1:
            pass
        started.append(thread)
        threads.append(thread)
    lock.release()
    for thread in threads:
        thread.join(timeout=10)
    assert order == [0, 1, 2, 3, 4]


def test_reads_do_not_queue_behind_a_writer(tmp_path: object) -> None:
    """SQLite file: a read-only request is answered while a write transaction is open."""
    server = InProcessServer(f"{tmp_path}/r.db")
    try:
        server.add_machine("m1", slots={"A1": ("cola", 350)})
        order = server.client("m1").create_order("A1")
        holding, release = threading.Event(), threading.Event()

        def writer() -> None:
            with server.backend.db.tx():
                holding.set()
                release.wait(30)

        thread = threading.Thread(target=writer)
        thread.start()
        assert holding.wait(30)
        answered: list[Any] = []
        reader = threading.Thread(target=lambda: answered.append(
            server.backend.get_order(order.id)))
        reader.start()
        reader.join(timeout=20)  # a liveness bound: before the fix it waited for the writer
        answered_while_writing = bool(answered)
        release.set()
        thread.join(timeout=30)
        reader.join(timeout=30)
        assert answered_while_writing, "the read waited for the write transaction"
        assert answered[0]["id"] == order.id
    finally:
        server.close()
