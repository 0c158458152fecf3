"""Who may take over an Idempotency-Key left "in progress", on SQLite and PostgreSQL.

Two :class:`Backend` instances over one database stand for two backend processes (each its
own instance id, engine and in-flight set); they share one :class:`FakeClock`, so time moves
when a test says so. A process "beats" by calling :meth:`Backend.heartbeat`, which is what
its heartbeat thread does every ``instance_heartbeat`` seconds; a process that stops calling
it stands for one that was SIGKILLed.

The rules (``AuthMixin._still_running``): a key held by a live process is never taken over,
however long its request runs; a key of a process whose beats stopped is taken over once
its ``instance_timeout`` has passed (not the whole lease); a process knows exactly which of
its own keys it is running; a key whose holder has no heartbeat falls back to the lease.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import func, insert, select, text

from vendhw.errors import ConfigurationError
from vendhw.server.instances import Heartbeat, InFlight
from vendhw.server.models import (
    AuditEntry,
    IdempotentResponse,
    Order,
    Refund,
    ServerInstance,
)
from vendhw.server.service import ApiError, Backend
from vendhw.server.settings import FakeClock, ServerSettings

CATALOGUE = {
    "currency": "CNY",
    "products": [{"id": "cola", "name": "Cola", "price": 350}],
    "machines": [{"id": "m1", "secret": "s3cret-m1-0123456789",
                  "slots": [{"slot": "A1", "product": "cola"}]}],
}
REQUEST = b"POST /machine/v1/orders/x/result\n{}"
WAIT = 30.0
"""Upper bound of every wait on another thread (never reached when the code is right)."""


class Killed(BaseException):
    """Stands for SIGKILL inside a request: nothing after it runs, not even its cleanup."""


def _backend(url: str, clock: FakeClock) -> Backend:
    return Backend(ServerSettings(db_url=url, operator_token="t", run_poller=False,
                                  public_url="http://testserver"), clock=clock)


@pytest.fixture
def pair(db_url: str) -> Iterator[tuple[Backend, Backend]]:
    clock = FakeClock()
    first = _backend(db_url, clock)
    first.load_catalogue(CATALOGUE)
    second = _backend(db_url, clock)
    second.settings.sandbox_secret = first.settings.sandbox_secret
    yield first, second
    first.close()
    second.close()


def _dispensing_order(backend: Backend) -> str:
    order = backend.create_order("m1", "A1")
    assert backend.sandbox is not None
    backend.sandbox.pay(order["id"])
    [instruction], _ = backend.take_instructions("m1")
    backend.ack("m1", instruction["id"])
    return str(order["id"])


def _clock(backend: Backend) -> FakeClock:
    assert isinstance(backend.clock, FakeClock)
    return backend.clock


def _refused(call: Callable[[], Any]) -> ApiError:
    with pytest.raises(ApiError) as info:
        call()
    assert info.value.status == 409 and info.value.code == "request_in_progress"
    return info.value


def _count(backend: Backend, column: Any, *where: Any) -> int:
    with backend.db.read() as s:
        return int(s.execute(select(func.count(column)).where(*where)).scalar() or 0)


def _moves(backend: Backend, order_id: str, to: str) -> int:
    return _count(backend, AuditEntry.id, AuditEntry.entity == "order",
                  AuditEntry.entity_id == order_id, AuditEntry.to_state == to)


class Report:
    """The machine's result report (a refund: ``jammed``) as a keyed request, counting the
    times it really runs."""

    def __init__(self, order_id: str, key: str = "k1") -> None:
        self.order_id, self.key = order_id, key
        self.runs = 0

    def compute(self, backend: Backend) -> Callable[[], tuple[int, dict[str, Any]]]:
        def run() -> tuple[int, dict[str, Any]]:
            self.runs += 1
            return 200, backend.report_result("m1", self.order_id, "jammed")
        return run

    def send(self, backend: Backend) -> tuple[int, dict[str, Any]]:
        return backend.idempotent("m1", self.key, REQUEST, self.compute(backend))

    def killed(self, backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
        """The request claims its key and its process dies before the work (the key stays
        in progress, nothing else happened)."""
        def die() -> tuple[int, dict[str, Any]]:
            raise Killed

        with monkeypatch.context() as patch:
            patch.setattr(backend, "_forget", lambda claim: None)  # a dead process forgets nothing
            with pytest.raises(Killed):
                backend.idempotent("m1", self.key, REQUEST, die)
        with backend.db.read() as s:
            row = s.get(IdempotentResponse, ("m1", self.key))
            assert row is not None and row.status_code == 0
            assert row.holder == backend.instance_id


class Held:
    """A keyed request running in a thread of ``backend`` until released (a slow refund)."""

    def __init__(self, backend: Backend, report: Report) -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        self.result: list[Any] = []
        run = report.compute(backend)

        def slow() -> tuple[int, dict[str, Any]]:
            self.entered.set()  # the claim has committed
            assert self.release.wait(WAIT)
            return run()

        def request() -> None:
            try:
                self.result.append(backend.idempotent("m1", report.key, REQUEST, slow))
            except BaseException as exc:
                self.result.append(exc)

        self.thread = threading.Thread(target=request, daemon=True)
        self.thread.start()
        assert self.entered.wait(WAIT)

    def finish(self) -> tuple[int, dict[str, Any]]:
        self.release.set()
        self.thread.join(WAIT)
        [answer] = self.result
        assert isinstance(answer, tuple), answer
        return answer


def test_a_live_holders_key_is_never_taken_over(pair: tuple[Backend, Backend]) -> None:
    """A slow request in a live process: retries to the other process (and to its own) are
    refused for as long as it runs, far beyond the lease; it runs once and its answer is
    everybody's. (Before instances, the lease let a retry run it a second time.)"""
    a, b = pair
    clock = _clock(a)
    a.heartbeat()
    b.heartbeat()
    report = Report(_dispensing_order(a))
    held = Held(a, report)
    refused = _refused(lambda: report.send(b))
    assert 1 <= int(refused.headers["Retry-After"]) <= a.settings.instance_timeout + 1
    _refused(lambda: report.send(a))  # its own process: running here
    step = a.settings.instance_heartbeat
    for _ in range(int(3 * a.settings.idempotency_lease / step)):
        clock.advance(step)
        a.heartbeat()  # alive: its thread beats on
        b.heartbeat()
        _refused(lambda: report.send(b))
    assert clock.now() - a._started_at > 2 * a.settings.idempotency_lease
    answer = held.finish()
    assert answer[0] == 200 and answer[1]["state"] == "refunded"
    assert report.send(b) == answer
    assert report.runs == 1
    assert _count(a, Refund.id) == 1


def test_a_dead_holders_key_is_taken_over_once_its_beats_stop(
        pair: tuple[Backend, Backend], monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = pair
    clock = _clock(a)
    a.heartbeat()
    report = Report(_dispensing_order(a))
    report.killed(a, monkeypatch)  # and a never beats again
    refused = _refused(lambda: report.send(b))  # not yet known to be dead
    assert 1 <= int(refused.headers["Retry-After"]) <= a.settings.instance_timeout + 1
    clock.advance(a.settings.instance_timeout - 0.5)
    _refused(lambda: report.send(b))
    clock.advance(1.0)  # its timeout has passed; the lease (60 s) has not
    assert a.settings.instance_timeout + 1 < a.settings.idempotency_lease
    status, body = report.send(b)
    assert status == 200 and body["state"] == "refunded"
    assert report.send(b) == (status, body)
    assert report.send(a) == (status, body)
    assert report.runs == 1
    assert _moves(a, report.order_id, "refunding") == 1
    assert _count(a, Refund.id) == 1
    with b.db.read() as s:
        row = s.get(IdempotentResponse, ("m1", report.key))
        assert row is not None and row.holder == b.instance_id


def test_a_process_knows_which_of_its_own_keys_run(
        pair: tuple[Backend, Backend], monkeypatch: pytest.MonkeyPatch) -> None:
    """Held by this process: running while one of its requests has it in hand, dead at
    once otherwise (its request died with an exception that skipped the cleanup)."""
    a, _ = pair
    running = Report(_dispensing_order(a), key="k-running")
    held = Held(a, running)
    _refused(lambda: running.send(a))
    _refused(lambda: running.send(a))  # a refused retry does not count as its runner
    dead = Report(_dispensing_order(a), key="k-dead")
    dead.killed(a, monkeypatch)
    status, body = dead.send(a)  # at once: no clock moved, no heartbeat needed
    assert status == 200 and body["state"] == "refunded" and dead.runs == 1
    assert held.finish()[0] == 200 and running.runs == 1


def test_an_orphan_of_a_live_process_is_released_by_its_heartbeat(
        pair: tuple[Backend, Backend], monkeypatch: pytest.MonkeyPatch) -> None:
    """A request whose cleanup failed (the database was away) leaves its key held by a live
    process; other processes must trust a live holder, so that process's next beat releases
    the key, and the retry runs the request once."""
    a, b = pair
    a.heartbeat()
    report = Report(_dispensing_order(a))

    def broken_forget(claim: Any) -> None:
        raise RuntimeError("database unreachable")

    def fails() -> tuple[int, dict[str, Any]]:
        raise ApiError(503, "unavailable")

    with monkeypatch.context() as patch:
        patch.setattr(a, "_forget", broken_forget)
        with pytest.raises(RuntimeError):
            a.idempotent("m1", report.key, REQUEST, fails)
    _refused(lambda: report.send(b))  # a is alive and holds it
    a.heartbeat()
    assert _count(a, IdempotentResponse.key) == 0
    status, body = report.send(b)
    assert status == 200 and body["state"] == "refunded" and report.runs == 1


def test_a_heartbeat_never_releases_a_key_a_request_is_running(
        pair: tuple[Backend, Backend], monkeypatch: pytest.MonkeyPatch) -> None:
    """An orphan's key taken over by a retry in the same process: the next beat must leave
    the running retry's claim alone (and the answer it stores afterwards)."""
    a, b = pair
    a.heartbeat()
    report = Report(_dispensing_order(a))
    report.killed(a, monkeypatch)  # its cleanup skipped: an orphan of a live process
    held = Held(a, report)  # the retry, in a: takes the key over and runs slowly
    a.heartbeat()
    _refused(lambda: report.send(b))
    assert _count(a, IdempotentResponse.key, IdempotentResponse.status_code == 0) == 1
    answer = held.finish()
    a.heartbeat()
    assert answer[0] == 200 and report.send(b) == answer and report.runs == 1


def test_a_cleanly_stopped_process_hands_over_at_once(
        pair: tuple[Backend, Backend], monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = pair
    a.start_heartbeat()
    report = Report(_dispensing_order(a))
    report.killed(a, monkeypatch)
    a.stop_heartbeat()  # nothing is running in a: it says so
    with b.db.read() as s:
        assert s.get(ServerInstance, a.instance_id).alive_until == 0  # type: ignore[union-attr]
    status, _ = report.send(b)
    assert status == 200 and report.runs == 1


def test_a_process_stopping_while_a_request_runs_is_left_to_time_out(
        pair: tuple[Backend, Backend]) -> None:
    a, b = pair
    a.start_heartbeat()
    report = Report(_dispensing_order(a))
    held = Held(a, report)
    a.stop_heartbeat()
    _refused(lambda: report.send(b))
    assert held.finish()[0] == 200 and report.runs == 1


def test_a_holder_without_heartbeat_keeps_its_key_for_the_lease(
        pair: tuple[Backend, Backend], monkeypatch: pytest.MonkeyPatch) -> None:
    """The last resort: a process that never beat (a Backend used without the app, a
    server older than migration 0004) is judged by the lease, as before."""
    a, b = pair
    clock = _clock(a)
    lease = a.settings.idempotency_lease
    report = Report(_dispensing_order(a))
    report.killed(a, monkeypatch)  # a has no heartbeat row
    refused = _refused(lambda: report.send(b))
    assert int(refused.headers["Retry-After"]) > lease - 2
    clock.advance(lease - 1)
    _refused(lambda: report.send(b))
    clock.advance(2)
    assert report.send(b)[0] == 200 and report.runs == 1


def test_a_key_from_before_holders_waits_for_the_lease(pair: tuple[Backend, Backend]
                                                       ) -> None:
    a, b = pair
    clock = _clock(a)
    report = Report(_dispensing_order(a))
    with a.db.tx() as s:  # the row an older server leaves: no holder
        s.execute(insert(IdempotentResponse).values(
            machine_id="m1", key=report.key, request_hash=_digest(REQUEST), status_code=0,
            body={}, created_at=clock.now()))
    _refused(lambda: report.send(b))
    clock.advance(a.settings.idempotency_lease + 1)
    assert report.send(b)[0] == 200 and report.runs == 1


def _digest(request: bytes) -> str:
    import hashlib

    return hashlib.sha256(request).hexdigest()


def test_a_holder_whose_row_was_purged_is_judged_by_the_lease(
        pair: tuple[Backend, Backend], monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = pair
    clock = _clock(a)
    a.heartbeat()
    report = Report(_dispensing_order(a))
    report.killed(a, monkeypatch)
    clock.advance(2 * 86400)
    b.run_due_work()  # purges instances not seen for a day
    assert _count(b, ServerInstance.id, ServerInstance.id == a.instance_id) == 0
    assert report.send(b)[0] == 200 and report.runs == 1  # its lease ran out long ago


def test_instance_settings_are_checked(db_url: str) -> None:
    backend = Backend(ServerSettings(db_url=db_url, operator_token="t", run_poller=False,
                                     instance_heartbeat=2.0, instance_timeout=3.0))
    try:
        with pytest.raises(ConfigurationError, match="twice"):
            backend.start_heartbeat()
    finally:
        backend.close()


def test_the_heartbeat_thread_beats_until_stopped() -> None:
    beats: list[int] = []
    three = threading.Event()

    def beat() -> None:
        beats.append(1)
        if len(beats) == 2:
            raise RuntimeError("one failed beat: logged, the next comes anyway")
        if len(beats) >= 3:
            three.set()

    heart = Heartbeat(beat, 0.01)
    heart.start()
    assert three.wait(WAIT)
    heart.stop()
    count = len(beats)
    assert heart._thread is None
    heart.stop()  # twice is fine
    assert len(beats) == count


def test_in_flight_counts_each_request() -> None:
    flight = InFlight()
    key = ("m1", "k")
    flight.enter(key)
    assert not flight.others(key)  # only the caller
    flight.enter(key)
    assert flight.others(key)
    flight.leave(key, orphaned=True)
    assert flight.take_orphans() == []  # still entered by someone: not an orphan to release
    flight.leave(key)
    assert flight.running() == 0
    [taken] = flight.take_orphans()
    flight.enter(key)  # a retry arriving while the heartbeat releases it
    assert flight.others(key)
    flight.put_orphans([taken], released=False)
    flight.leave(key)
    assert flight.take_orphans() == [key]  # not released: tried again next beat
    flight.put_orphans([key], released=True)
    assert flight.take_orphans() == [] and flight.running() == 0

REDEEM = b"POST /machine/v1/codes/redeem\n{}"


@pytest.mark.parametrize("meanwhile", ["nothing", "vended", "vend failed", "wrong code"])
def test_a_redeem_retried_after_its_process_died_gets_its_first_answer(
        pair: tuple[Backend, Backend], monkeypatch: pytest.MonkeyPatch, meanwhile: str
        ) -> None:
    """The process dies right after the redeem committed, before the answer left. The
    retry (to the other process, once the first is known dead) must get that same answer:
    the reservation's order and instruction, not the code "used", not a second order for a
    code released by a failed vend, not a wrong code counted twice. Meanwhile the machine
    may have had the instruction from the push channel (redelivered, as it was never
    acknowledged) and vended."""
    a, b = pair
    clock = _clock(a)
    a.heartbeat()
    [code] = a.create_codes("cola", 1, 3600, machine_id="m1")
    typed = code["code"] if meanwhile != "wrong code" else _wrong(code["code"])
    first: list[tuple[int, dict[str, Any]]] = []

    def redeem_then_die() -> tuple[int, dict[str, Any]]:
        try:
            first.append((200, a.redeem_code("m1", typed)))
        except ApiError as exc:
            first.append((exc.status, exc.body()))
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(a, "_forget", lambda claim: None)
        with pytest.raises(Killed):
            a.idempotent("m1", "k-redeem", REDEEM, redeem_then_die)
    clock.advance(max(a.settings.instance_timeout, a.settings.redeliver_after) + 1)
    if meanwhile in ("vended", "vend failed"):
        [ship], _ = b.take_instructions("m1")
        b.ack("m1", ship["id"])
        b.report_result("m1", ship["order_id"],
                        "delivered" if meanwhile == "vended" else "jammed")

    def redeem() -> tuple[int, dict[str, Any]]:
        return 200, b.redeem_code("m1", typed)

    assert b.idempotent("m1", "k-redeem", REDEEM, redeem) == first[0]
    if meanwhile == "wrong code":
        assert first[0][0] == 404
        with a.db.read() as s:
            failures = s.execute(text("SELECT failures FROM code_attempts "
                                      "WHERE selector = '*'")).scalar()
        assert failures == 1  # counted once
    else:
        assert first[0][0] == 200 and first[0][1]["instruction"]["delivery"] == 1
        assert _count(a, Order.id, Order.kind == "code") == 1  # never a second order


def _wrong(code: str) -> str:
    last = str((int(code[-1]) + 1) % 10)
    return code[:-1] + last


def test_0004_keeps_keys_in_progress_and_judges_them_by_the_lease(db_url: str) -> None:
    """A database at 0003 with a key in progress (an old server's request): 0004 adds the
    instances and the holder column, keeps the row (holder NULL), and the lease decides."""
    from test_operators_migration import _upgrade

    from vendhw.server.db import Database

    _upgrade(db_url, "0003")
    clock = FakeClock()
    engine = Database(db_url).engine
    with engine.begin() as c:
        c.execute(text("INSERT INTO idempotent_responses (machine_id, key, request_hash, "
                       "status_code, body, created_at) VALUES ('m1', 'k-old', :h, 0, '{}', "
                       ":at)"), {"h": _digest(REQUEST), "at": clock.now()})
    engine.dispose()
    backend = _backend(db_url, clock)  # migrates to the newest
    try:
        with backend.db.read() as s:
            row = s.get(IdempotentResponse, ("m1", "k-old"))
            assert row is not None and row.holder is None and row.status_code == 0
        _refused(lambda: backend.idempotent("m1", "k-old", REQUEST, lambda: (200, {})))
        clock.advance(backend.settings.idempotency_lease + 1)
        assert backend.idempotent("m1", "k-old", REQUEST, lambda: (200, {"ok": 1})) == (
            200, {"ok": 1})
    finally:
        backend.close()


def test_answered_keys_are_purged_after_idempotency_keep(pair: tuple[Backend, Backend]
                                                         ) -> None:
    """The table does not grow with every keyed request: answers older than
    ``idempotency_keep`` go with the expired nonces; newer answers and keys in progress
    (the takeover rules' business) stay."""
    a, _ = pair
    clock = _clock(a)
    keep = a.settings.idempotency_keep
    rows = {"old-answer": (200, clock.now() - keep - 10),
            "new-answer": (200, clock.now() - keep + 3600),
            "old-in-progress": (0, clock.now() - keep - 10)}
    with a.db.tx() as s:
        for key, (status, at) in rows.items():
            s.execute(insert(IdempotentResponse).values(
                machine_id="m1", key=key, request_hash=_digest(REQUEST), status_code=status,
                body={}, created_at=at))
    a._last_purge = 0.0
    a.run_due_work()
    with a.db.read() as s:
        left = set(s.execute(select(IdempotentResponse.key)).scalars())
    assert left == {"new-answer", "old-in-progress"}
