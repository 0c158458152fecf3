"""`vendhw backend serve` as a real process on 127.0.0.1, driven over real HTTP."""

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
from pathlib import Path
from typing import Any

import httpx
import pytest

from vendhw.client import BackendClient

TOKEN = "cli-test-operator-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def vendhw(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vendhw", *args], capture_output=True,
                          text=True, timeout=60)


def wait_ready(url: str, process: subprocess.Popen[str]) -> None:
    """Until the served process answers /healthz (its stderr if it died first)."""
    deadline = time.monotonic() + 20
    while True:
        assert process.poll() is None, process.communicate()[1]
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server did not become ready"
        time.sleep(0.05)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    db = f"sqlite:///{tmp_path / 'served.db'}"
    added = vendhw("backend", "machines", "add", "m1", "--slot", "A1=cola:350",
                   "--slot", "A2=chips:500", "--db", db, "--json")
    assert added.returncode == 0, added.stderr
    secret = json.loads(added.stdout)["secret"]
    bootstrap = tmp_path / "catalogue.json"
    bootstrap.write_text(json.dumps({"products": [{"id": "tea", "name": "Tea", "price": 300}],
                                     "machines": [{"id": "m2", "secret": "m2-secret-0123456789",
                                                   "slots": [{"slot": "B1", "product": "tea"}]}]}))
    port = free_port()
    env = {**os.environ, "VENDHW_OPERATOR_TOKEN": TOKEN}
    process = subprocess.Popen(
        [sys.executable, "-m", "vendhw", "backend", "serve", "--db", db, "--host", "127.0.0.1",
         "--port", str(port), "--order-ttl", "1s", "--query-interval", "0.1s",
         "--query-max", "0.2s", "--log-level", "warning", "--bootstrap", str(bootstrap)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process)
        yield url, secret, db
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_serve_runs_a_whole_sale_and_a_late_payment_refund(
        served: tuple[str, str, str], tmp_path: Path) -> None:
    url, secret, db = served
    with BackendClient(url, "m1", secret, outbox=tmp_path / "outbox.db") as client:
        assert [s["slot"] for s in client.catalogue()["slots"]] == ["A1", "A2"]
        order = client.create_order("A1")
        assert order.qr_text == f"{url}/sandbox/pay/{order.id}"
        assert httpx.get(order.qr_text).status_code == 200  # the pay page
        paid = httpx.post(f"{url}/sandbox/orders/{order.id}/pay")  # notifies over HTTP
        assert paid.json()["status"] == "paid"
        [ship] = client.next_instructions(wait=5)
        client.ack(ship.id, ship.order_id)
        receipt = client.report_result(order.id, "delivered", instruction_id=ship.id)
        assert receipt.order is not None and receipt.order.state == "delivered"

        late = client.create_order("A2")
        deadline = time.monotonic() + 10
        while client.order_status(late.id).state != "expired":  # --order-ttl 1s
            assert time.monotonic() < deadline
            time.sleep(0.05)
        httpx.post(f"{url}/sandbox/orders/{late.id}/pay")
        # The refund runs after the payment's commit: "refunding" may show for a moment on a
        # loaded machine, and nothing else may.
        seen = {client.order_status(late.id).state}
        while "refunded" not in seen:
            assert seen <= {"refunding"} and time.monotonic() < deadline + 10, seen
            time.sleep(0.05)
            seen.add(client.order_status(late.id).state)

    headers = {"Authorization": f"Bearer {TOKEN}"}
    machines = httpx.get(f"{url}/operator/v1/machines", headers=headers).json()["machines"]
    assert [m["id"] for m in machines] == ["m1", "m2"]  # m2 from --bootstrap
    assert httpx.get(f"{url}/operator/v1/machines").status_code == 401
    detail = httpx.get(f"{url}/operator/v1/orders/{late.id}", headers=headers).json()
    assert detail["payment"]["late"] is True and detail["refund"]["status"] == "succeeded"
    codes = httpx.post(f"{url}/operator/v1/codes", headers=headers,
                       json={"product": "chips", "count": 2, "valid_for": "10m"})
    assert codes.status_code == 201 and len(codes.json()["codes"]) == 2
    listed = vendhw("backend", "orders", "list", "--json", "--db", db)
    assert {json.loads(line)["state"] for line in listed.stdout.splitlines()} == {
        "delivered", "refunded"}


@pytest.mark.slow
def test_serve_stops_promptly_with_a_machine_long_polling(tmp_path: Path) -> None:
    """A restart must not wait out every machine's 25 s long poll: open polls are cut after
    GRACEFUL_SHUTDOWN seconds and the machine just asks again."""
    from vendhw.cli.backend import GRACEFUL_SHUTDOWN

    db = f"sqlite:///{tmp_path / 'served.db'}"
    added = vendhw("backend", "machines", "add", "m1", "--slot", "A1=cola:350", "--db", db,
                   "--json")
    secret = json.loads(added.stdout)["secret"]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "vendhw", "backend", "serve", "--db", db, "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "VENDHW_OPERATOR_TOKEN": TOKEN})
    polled: list[BaseException | list[Any]] = []
    try:
        wait_ready(url, process)
        client = BackendClient(url, "m1", secret, outbox=tmp_path / "outbox.db", retries=0)

        def long_poll() -> None:
            try:
                polled.append(client.next_instructions(wait=25))
            except Exception as exc:  # recorded for the assertion
                polled.append(exc)

        poller = threading.Thread(target=long_poll, daemon=True)
        poller.start()
        time.sleep(0.5)  # the poll is open on the server
        process.send_signal(signal.SIGTERM)
        # Well before the poll's 25 s; uvicorn ends by re-raising the SIGTERM it handled.
        assert process.wait(GRACEFUL_SHUTDOWN + 10) in (0, -signal.SIGTERM)
        poller.join(10)
        assert polled and not isinstance(polled[0], list)  # cut, not answered
        client.close()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
