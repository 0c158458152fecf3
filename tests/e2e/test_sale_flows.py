"""Sale flows end to end with real processes: backend server, board simulator on a pty, and the
machine side (signed client, shipping loop, Machine journal) in the test process.

Declined payment, payment after expiry, a reused pickup code, and the backend going down
while the result is reported, then coming back.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from vendhw.agent.demo import _free_port, _wait_ready
from vendhw.agent.shipper import Shipper
from vendhw.client import BackendClient
from vendhw.client.errors import BackendError
from vendhw.machine import Machine

MACHINE = "e2e-machine"
FINAL = {"delivered", "refunded", "needs_review", "expired", "cancelled"}


@dataclass
class World:
    tmp: Path
    port: int
    token: str
    secret: str
    server_args: list[str]
    server: subprocess.Popen[str] | None = None
    sim: subprocess.Popen[str] | None = None
    client: BackendClient | None = None
    machine: Machine | None = None
    shipper: Shipper | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start_server(self) -> None:
        log = self.tmp / "backend.log"
        self.server = subprocess.Popen(
            [sys.executable, "-m", "vendhw", "backend", "serve",
             "--db", f"sqlite:///{self.tmp / 'backend.db'}", "--host", "127.0.0.1",
             "--port", str(self.port), "--operator-token", self.token,
             "--query-interval", "200ms", "--query-max", "1s", "--redeliver-after", "1s",
             "--log-level", "warning", *self.server_args],
            stdout=subprocess.DEVNULL, stderr=log.open("a"), text=True)
        _wait_ready(self.url, self.server, log)

    def stop_server(self) -> None:
        assert self.server is not None
        self.server.terminate()
        self.server.wait(timeout=10)

    def operator(self, method: str, path: str, **kwargs: Any) -> Any:
        reply = httpx.request(method, f"{self.url}/operator/v1{path}", timeout=10,
                              headers={"Authorization": f"Bearer {self.token}"}, **kwargs)
        reply.raise_for_status()
        return reply.json()

    def wait_state(self, order_id: str, states: set[str], timeout: float = 30.0) -> str:
        assert self.client is not None
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            state = self.client.order_status(order_id).state
            if state in states:
                return state
            self.stop.wait(0.1)
        return state


@pytest.fixture
def world(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[World]:
    marker = request.node.get_closest_marker("server_args")
    sim_options = request.node.get_closest_marker("sim_options")
    w = World(tmp_path, _free_port(), secrets.token_hex(8), secrets.token_hex(16),
              list(marker.args) if marker else [])
    try:
        w.start_server()
        w.operator("POST", "/catalogue", json={
            "products": [{"id": "cola", "name": "Cola", "price": 350}],
            "machines": [{"id": MACHINE, "secret": w.secret,
                          "slots": [{"slot": "1", "product": "cola", "price": 350}]}]})
        w.sim = subprocess.Popen(
            [sys.executable, "-m", "vendhw", "sim", "easivend-column", "--json",
             "-o", "inventory=3", *(sim_options.args if sim_options else ())],
            stdout=subprocess.PIPE, text=True)
        assert w.sim.stdout is not None
        port = json.loads(w.sim.stdout.readline())["port"]
        w.client = BackendClient(w.url, MACHINE, w.secret, outbox=tmp_path / "outbox.db",
                                 retries=1, backoff=0.05)
        w.machine = Machine("easivend-column", port, journal=tmp_path / "vends.db")
        w.shipper = Shipper(w.client, w.machine, tmp_path / "ships.db")
        w.thread = threading.Thread(target=w.shipper.run, args=(w.stop, 0.5), daemon=True)
        w.thread.start()
        yield w
    finally:
        w.stop.set()
        if w.thread is not None:
            w.thread.join(timeout=10)
        for thing in (w.shipper, w.client, w.machine):
            if thing is not None:
                thing.close()
        for proc in (w.server, w.sim):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=10)


def vends(w: World) -> int:
    assert w.machine is not None
    return len([r for r in w.machine.history() if r.outcome is not None])


@pytest.mark.timeout(120)
def test_declined_payment_ships_nothing(world: World) -> None:
    assert world.client is not None
    order = world.client.create_order("1")
    httpx.post(f"{world.url}/sandbox/orders/{order.id}/decline", timeout=10).raise_for_status()
    assert world.wait_state(order.id, FINAL) == "cancelled"
    world.stop.wait(1.0)  # a wrongly issued instruction would have been shipped by now
    assert vends(world) == 0


@pytest.mark.timeout(120)
@pytest.mark.server_args("--order-ttl", "1s")
def test_payment_after_expiry_is_refunded_and_nothing_ships(world: World) -> None:
    assert world.client is not None
    order = world.client.create_order("1")
    assert world.wait_state(order.id, {"expired"}) == "expired"
    httpx.post(f"{world.url}/sandbox/orders/{order.id}/pay", timeout=10).raise_for_status()
    assert world.wait_state(order.id, {"refunded"}) == "refunded"
    assert vends(world) == 0


@pytest.mark.timeout(120)
def test_pickup_code_delivers_once_and_is_refused_the_second_time(world: World) -> None:
    assert world.client is not None and world.shipper is not None
    (code,) = world.operator("POST", "/codes", json={"product": "cola", "count": 1,
                                                      "valid_for": "10m"})["codes"]
    redemption = world.client.redeem_code(str(code["code"]))
    if redemption.instruction is not None:
        world.shipper.process(redemption.instruction)
    assert world.wait_state(redemption.order.id, FINAL) == "delivered"
    with pytest.raises(BackendError) as refused:
        world.client.redeem_code(str(code["code"]))
    assert "used" in refused.value.code
    assert vends(world) == 1


@pytest.mark.timeout(120)
@pytest.mark.sim_options("-o", "motor_time=1.5")
def test_backend_down_during_report_then_recovered(world: World) -> None:
    assert world.client is not None and world.shipper is not None
    order = world.client.create_order("1")
    httpx.post(f"{world.url}/sandbox/orders/{order.id}/pay", timeout=10).raise_for_status()
    assert world.wait_state(order.id, {"dispensing", "paid"}, timeout=30) in ("dispensing", "paid")
    deadline = time.monotonic() + 10
    while not world.shipper.unfinished() and time.monotonic() < deadline:
        world.stop.wait(0.02)  # the instruction is journaled; the motor runs 1.5 s
    world.stop_server()  # the link goes down while the product is dropping
    deadline = time.monotonic() + 20
    while world.shipper.unfinished() and time.monotonic() < deadline:
        world.stop.wait(0.05)
    assert not world.shipper.unfinished(), "the vend finished and its report was queued"
    assert world.client.outbox.pending(), "the undelivered report waits in the outbox"
    world.start_server()  # the link returns (same database)
    world.client.flush()
    assert world.wait_state(order.id, FINAL) == "delivered"
    assert not world.client.outbox.pending()
    assert vends(world) == 1
