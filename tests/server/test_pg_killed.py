"""A backend SIGKILLed mid-request leaves its Idempotency-Key "in progress"; after the lease a
retry (to a new process) runs the request, and the outcome is applied once.

Real processes on a real PostgreSQL: the test holds the order's row lock so the result report
is provably inside the backend (its key recorded, its work waiting) when the process is
killed."""

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

TOKEN = "killed-operator-token"
SECRET = "s3cret-m1-0123456789"
CATALOGUE = {"products": [{"id": "cola", "name": "Cola", "price": 350}],
             "machines": [{"id": "m1", "secret": SECRET,
                           "slots": [{"slot": "A1", "product": "cola"}]}]}


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(db: str, port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "vendhw", "backend", "serve", "--db", db, "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning", "--idempotency-lease", "2s"],
        env={**os.environ, "VENDHW_OPERATOR_TOKEN": TOKEN},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
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

        second = _serve(database, port)
        answers = []
        deadline = time.monotonic() + 30
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
