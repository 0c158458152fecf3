"""A backend SIGKILLed mid-request leaves its Idempotency-Key "in progress"; a retry (to a new
process) runs the request within seconds (its process stopped beating), not after the
minute-long lease, and the outcome is applied once. A process that is alive keeps its key
however long its request takes: a retry elsewhere is refused, never run a second time.

Real ``vendhw backend serve`` processes, on a real PostgreSQL (and SQLite, where several
processes share one file). The first test holds the order's row lock so the result report is
provably inside the backend (its key recorded, its work waiting) when the process is killed;
the others hold the request with ``VENDHW_BACKEND_HANG_AT`` after its work committed."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from vendhw.client import signing
from vendhw.server.service import BACKEND_HANG_ENV

TOKEN = "killed-operator-token"
SECRET = "s3cret-m1-0123456789"
CATALOGUE = {"products": [{"id": "cola", "name": "Cola", "price": 350}],
             "machines": [{"id": "m1", "secret": SECRET,
                           "slots": [{"slot": "A1", "product": "cola"}]}]}


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(db: str, port: int, *options: str, hang_at: str | None = None
           ) -> subprocess.Popen[bytes]:
    """A backend process with the default lease (60 s) unless ``options`` say otherwise."""
    env = {k: v for k, v in os.environ.items() if k != BACKEND_HANG_ENV}
    env["VENDHW_OPERATOR_TOKEN"] = TOKEN
    if hang_at:
        env[BACKEND_HANG_ENV] = hang_at
    process = subprocess.Popen(
        [sys.executable, "-m", "vendhw", "backend", "serve", "--db", db, "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning", *options],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, process.communicate()[1]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                return process
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server did not become ready"
        time.sleep(0.1)


def _post(url: str, path: str, body: bytes, key: str | None = None,
          timeout: float = 30.0) -> httpx.Response:
    headers = signing.signed_headers(SECRET, "m1", "POST", path, body, time.time())
    headers["Content-Type"] = "application/json"
    if key:
        headers[signing.HEADER_IDEMPOTENCY] = key
    return httpx.post(url + path, content=body, headers=headers, timeout=timeout)


@pytest.fixture
def database(pg_cluster: object) -> Iterator[str]:
    yield pg_cluster.create_database("killed")  # type: ignore[attr-defined]


def test_a_key_whose_process_was_killed_becomes_retryable(database: str) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    conninfo = make_url(database).set(drivername="postgresql").render_as_string(
        hide_password=False)
    port = _port()
    url = f"http://127.0.0.1:{port}"
    first = _serve(database, port)
    second: subprocess.Popen[bytes] | None = None
    try:
        httpx.post(url + "/operator/v1/catalogue", json=CATALOGUE,
                   headers={"Authorization": f"Bearer {TOKEN}"}).raise_for_status()
        order = _post(url, "/machine/v1/orders", b'{"slot": "A1"}').json()
        httpx.post(f"{url}/sandbox/orders/{order['id']}/pay").raise_for_status()
        path = f"/machine/v1/orders/{order['id']}/result"
        body = json.dumps({"outcome": "jammed"}).encode()

        with psycopg.connect(conninfo) as holder, psycopg.connect(conninfo,
                                                                  autocommit=True) as look:
            holder.execute("SELECT id FROM orders WHERE id = %s FOR UPDATE", (order["id"],))
            outcome: list[object] = []
            report = threading.Thread(target=lambda: outcome.append(_try(
                lambda: _post(url, path, body, key="k-killed", timeout=60))), daemon=True)
            report.start()
            deadline = time.monotonic() + 30
            while look.execute("SELECT status_code FROM idempotent_responses WHERE key = %s",
                               ("k-killed",)).fetchone() != (0,):
                assert time.monotonic() < deadline, "the report never reached the backend"
                time.sleep(0.05)
            time.sleep(0.3)  # let it reach the order's row lock
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            report.join(timeout=30)
            holder.rollback()
            assert outcome and isinstance(outcome[0], Exception)  # the connection died
            stuck = look.execute("SELECT status_code FROM idempotent_responses WHERE key = %s",
                                 ("k-killed",)).fetchone()
            state = look.execute("SELECT state FROM orders WHERE id = %s",
                                 (order["id"],)).fetchone()
        assert stuck == (0,) and state == ("paid",)  # the dead request applied nothing

        second = _serve(database, port)  # the default lease: 60 s
        answers = []
        deadline = time.monotonic() + 30  # well inside the lease
        while True:
            response = _post(url, path, body, key="k-killed")
            answers.append(response.status_code)
            if response.status_code != 409:
                break
            assert response.json()["error"] == "request_in_progress"
            assert time.monotonic() < deadline, f"the key stayed in progress: {answers}"
            time.sleep(0.5)
        assert response.status_code == 200, response.text
        assert response.json()["state"] == "refunded"
        again = _post(url, path, body, key="k-killed")
        assert again.status_code == 200 and again.json() == response.json()
        detail = httpx.get(f"{url}/operator/v1/orders/{order['id']}",
                           headers={"Authorization": f"Bearer {TOKEN}"}).json()
        moves = [a["to"] for a in detail["audit"] if a["entity"] == "order"]
        assert moves.count("refunding") == 1 and moves.count("refunded") == 1
        assert detail["refund"]["status"] == "succeeded"
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def _try(call: object) -> object:
    try:
        return call()  # type: ignore[operator]
    except Exception as exc:
        return exc


# --- a request held after its work committed (VENDHW_BACKEND_HANG_AT) ---------------------


class Fleet:
    """Backend processes on one database, killed at the end of the test whatever happens."""

    def __init__(self, db: str) -> None:
        self.db = db
        self.processes: list[subprocess.Popen[bytes]] = []

    def serve(self, port: int, *options: str, hang_at: str | None = None
              ) -> subprocess.Popen[bytes]:
        process = _serve(self.db, port, *options, hang_at=hang_at)
        self.processes.append(process)
        return process

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(10)


@pytest.fixture
def fleet(db_url: str) -> Iterator[Fleet]:
    group = Fleet(db_url)
    yield group
    group.close()


def _paid_order(url: str) -> str:
    httpx.post(url + "/operator/v1/catalogue", json=CATALOGUE,
               headers={"Authorization": f"Bearer {TOKEN}"}).raise_for_status()
    order = _post(url, "/machine/v1/orders", b'{"slot": "A1"}').json()
    httpx.post(f"{url}/sandbox/orders/{order['id']}/pay").raise_for_status()
    return str(order["id"])


def _held_report(url: str, db: str, order_id: str, key: str) -> float:
    """Send a result report (jammed: a refund) that its backend holds after committing the
    outcome, its key still in progress; returns the key's claim time (unix seconds)."""
    from sqlalchemy import create_engine, text

    path = f"/machine/v1/orders/{order_id}/result"
    body = json.dumps({"outcome": "jammed"}).encode()
    threading.Thread(target=lambda: _try(lambda: _post(url, path, body, key=key, timeout=120)),
                     daemon=True).start()
    engine = create_engine(db)
    try:
        deadline = time.monotonic() + 30
        while True:
            with engine.connect() as connection:
                key_row = connection.execute(text(
                    "SELECT status_code, created_at FROM idempotent_responses WHERE key = :k"),
                    {"k": key}).first()
                outcome = connection.execute(text("SELECT outcome FROM orders WHERE id = :o"),
                                             {"o": order_id}).scalar()
            if key_row is not None and key_row[0] == 0 and outcome == "jammed":
                return float(key_row[1])
            assert time.monotonic() < deadline, "the report never reached its hold"
            time.sleep(0.05)
    finally:
        engine.dispose()


def _audit(url: str, order_id: str) -> dict[str, object]:
    detail: dict[str, object] = httpx.get(f"{url}/operator/v1/orders/{order_id}",
                                          headers={"Authorization": f"Bearer {TOKEN}"}).json()
    return detail


def _refunded_once(url: str, order_id: str) -> None:
    deadline = time.monotonic() + 30
    while True:  # the refund itself is the background loop's (the report's process died)
        detail = _audit(url, order_id)
        if detail["state"] == "refunded":
            break
        assert time.monotonic() < deadline, detail["state"]
        time.sleep(0.2)
    moves = [a["to"] for a in detail["audit"] if a["entity"] == "order"]  # type: ignore[attr-defined]
    assert moves.count("refunding") == 1 and moves.count("refunded") == 1


def test_a_killed_backends_key_is_taken_over_in_seconds(fleet: Fleet) -> None:
    """SIGKILL while a report holds its key (its outcome committed, its answer not): the
    restarted backend answers the machine's retry as soon as the dead process's heartbeat
    has lapsed (instance timeout, 5 s), with the default lease of 60 s. Before, every retry
    got 409 request_in_progress for that whole minute."""
    port = _port()
    url = f"http://127.0.0.1:{port}"
    first = fleet.serve(port, hang_at="backend:reported")
    order_id = _paid_order(url)
    claimed = _held_report(url, fleet.db, order_id, "k-held")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    killed = time.time()
    fleet.serve(port)  # restarted, without the hold
    path = f"/machine/v1/orders/{order_id}/result"
    body = json.dumps({"outcome": "jammed"}).encode()
    answers = []
    deadline = claimed + 45  # the lease (60 s from the claim) must not be what frees it
    while True:
        response = _post(url, path, body, key="k-held")
        answers.append(response.status_code)
        if response.status_code != 409:
            break
        assert response.json()["error"] == "request_in_progress"
        assert time.time() < deadline, f"the key stayed in progress: {answers}"
        time.sleep(0.25)
    print(f"answered {time.time() - killed:.1f} s after the SIGKILL, "
          f"{time.time() - claimed:.1f} s after the claim; answers {answers}")
    assert response.status_code == 200, response.text
    assert response.json()["state"] in ("refunding", "refunded")
    again = _post(url, path, body, key="k-held")
    assert again.status_code == 200 and again.json() == response.json()
    _refunded_once(url, order_id)


def test_a_slow_request_is_never_run_twice_by_another_process(fleet: Fleet) -> None:
    """Two processes on one database, a lease of 1 s: a report held in the first (alive,
    beating) is refused to every retry at the second long after the lease; once the first
    is killed the second answers, and the outcome applied once. Before, the second took the
    key over after the lease and ran the report a second time while the first still ran."""
    port_a, port_b = _port(), _port()
    url_a, url_b = f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"
    lease = 1.0
    first = fleet.serve(port_a, "--idempotency-lease", f"{lease:g}s",
                        hang_at="backend:reported")
    fleet.serve(port_b, "--idempotency-lease", f"{lease:g}s")
    order_id = _paid_order(url_a)
    claimed = _held_report(url_a, fleet.db, order_id, "k-slow")
    path = f"/machine/v1/orders/{order_id}/result"
    body = json.dumps({"outcome": "jammed"}).encode()
    refusals = 0
    while time.time() < claimed + 4 * lease or refusals < 5:
        response = _post(url_b, path, body, key="k-slow")
        assert response.status_code == 409, (refusals, response.text)
        assert response.json()["error"] == "request_in_progress"
        assert int(response.headers["Retry-After"]) >= 1
        refusals += 1
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    deadline = time.monotonic() + 30
    while True:
        response = _post(url_b, path, body, key="k-slow")
        if response.status_code != 409:
            break
        assert time.monotonic() < deadline, "the dead process's key stayed in progress"
        time.sleep(0.25)
    assert response.status_code == 200, response.text
    _refunded_once(url_b, order_id)
