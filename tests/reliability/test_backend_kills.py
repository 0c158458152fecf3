"""SIGKILL of the backend (``os._exit`` at a named step, ``VENDHW_BACKEND_CRASH_AT``) right
after each step of a QR sale and of a pickup-code sale has committed: order created, paid
notification, instruction pushed, ack, result report, refund sent to the provider. The
backend is restarted on the same SQLite database; the agent (``powercut_agent.py``) runs
until its outbox drains. Each order ends delivered once, refunded, or needs_review (or was
never paid); the motor turned at most once.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.reliability.test_power_cuts import AGENT, CHILD_TIMEOUT, PRICE, final_state, in_flight
from vendhw import sim as sim_registry
from vendhw.agent.demo import _free_port, _wait_ready
from vendhw.client import BackendClient
from vendhw.errors import VendhwError
from vendhw.machine.journal import CRASH_ENV
from vendhw.server.service import BACKEND_CRASH_ENV
from vendhw.sim.ssp import SspSimulator
from vendhw.transport import SimulatorOnPty

STEPS = ("backend:order-created", "backend:paid", "backend:pushed", "backend:acked",
         "backend:reported", "backend:refund-sent")
# A pickup-code sale has no order-created or paid step of its own (the redeem is both:
# backend:redeemed, killed after the reservation committed, before its answer left); CI
# walks one of its steps, VENDHW_POWERCUT_ALL=1 every one.
CODE_STEPS = (("backend:redeemed", *STEPS[2:]) if os.environ.get("VENDHW_POWERCUT_ALL")
              else ("backend:reported",))
CASES = [("qr", s) for s in STEPS] + [("code", s) for s in CODE_STEPS]
UNPAID = {"created", "awaiting_payment", "cancelled", "expired"}
RUNS = 8


class Backend:
    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token, self.secret = secrets.token_hex(8), secrets.token_hex(16)
        self.operator = {"Authorization": f"Bearer {self.token}"}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, crash_at: str | None = None) -> None:
        env = {k: v for k, v in os.environ.items() if k not in (CRASH_ENV, BACKEND_CRASH_ENV)}
        if crash_at:
            env[BACKEND_CRASH_ENV] = crash_at
        log = self.folder / "backend.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vendhw", "backend", "serve", "--db",
             f"sqlite:///{self.folder / 'b.db'}", "--host", "127.0.0.1", "--port",
             str(self.port), "--operator-token", self.token, "--query-interval", "200ms",
             "--query-max", "1s", "--redeliver-after", "1s",
             "--log-level", "warning"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log.open("a"),
            start_new_session=True, env=env)
        _wait_ready(self.url, self.proc, log)  # type: ignore[arg-type]

    def dead(self) -> bool:
        return self.proc is None or self.proc.poll() is not None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[Backend]:
    server = Backend(tmp_path)
    yield server
    server.stop()


def run_agent(server: Backend, board: str, cash: str, data: Path, mode: str) -> None:
    """One agent run; it may die of the backend's death (a restart follows)."""
    env = {k: v for k, v in os.environ.items() if k not in (CRASH_ENV, BACKEND_CRASH_ENV)}
    subprocess.run([sys.executable, str(AGENT), mode, server.url, server.secret, board, cash,
                    str(data), "0"], env=env, capture_output=True, timeout=CHILD_TIMEOUT,
                   stdin=subprocess.DEVNULL, check=False)


def outbox_queued(data: Path) -> int:
    if not (data / "outbox.db").exists():
        return 0
    with sqlite3.connect(data / "outbox.db") as db:
        return int(db.execute("SELECT COUNT(*) FROM backend_outbox WHERE state = 'queued'"
                              ).fetchone()[0])


def orders(server: Backend) -> list[tuple[str, str]]:
    with sqlite3.connect(server.folder / "b.db") as db:
        return [(str(i), str(s)) for i, s in db.execute("SELECT id, state FROM orders")]


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize(("mode", "step"), CASES, ids=[f"{m}-{s}" for m, s in CASES])
def test_backend_killed_at_every_step(backend: Backend, tmp_path: Path, mode: str,
                                      step: str) -> None:
    refund = step == "backend:refund-sent"  # an empty slot: the vend fails, a refund
    board_sim = sim_registry.create("easivend-column", motor_time=0.01,
                                    inventory=0 if refund else 5)
    board, notes = SimulatorOnPty(board_sim), SimulatorOnPty(
        SspSimulator(reply_delay=0, speed=50, levels="500:10"))
    backend.start()
    httpx.post(f"{backend.url}/operator/v1/catalogue", headers=backend.operator, timeout=10,
               json={"currency": "EUR", "products": [{"id": "tea", "name": "Tea"}],
                     "machines": [{"id": "m1", "secret": backend.secret, "slots": [
                         {"slot": "1", "product": "tea", "price": PRICE}]}]}
               ).raise_for_status()
    backend.stop()
    backend.start(step)
    data = tmp_path / "agent"
    data.mkdir()
    client = BackendClient(backend.url, "m1", backend.secret, retries=0)
    try:
        try:
            if mode == "qr":
                order = client.create_order("1")
                httpx.post(f"{backend.url}/sandbox/orders/{order.id}/pay",
                           timeout=10).raise_for_status()
            else:
                reply = httpx.post(f"{backend.url}/operator/v1/codes",
                                   headers=backend.operator, timeout=10,
                                   json={"product": "tea", "count": 1, "valid_for": "10m",
                                         "machine": "m1"})
                reply.raise_for_status()
                client.redeem_code(str(reply.json()["codes"][0]["code"]))
        except (httpx.HTTPError, VendhwError):
            assert backend.proc is not None  # the failure is the backend's death
            assert backend.proc.wait(timeout=30) == 137
        crashed = False
        for _ in range(RUNS):
            if backend.dead():
                crashed = True
                backend.start()  # the restart: no crash point any more
            run_agent(backend, board.port, notes.port, data, mode)
            states = dict(orders(backend))
            if (not backend.dead() and outbox_queued(data) == 0 and not in_flight(data)
                    and all(s not in ("paid", "dispensing") for s in states.values())):
                break
        if backend.dead():
            crashed = True
            backend.start()
        assert crashed, f"the backend never reached step {step!r}"
        assert outbox_queued(data) == 0, "the machine's outbox did not drain"
        assert in_flight(data) == []
        vends = board_sim.vends
        assert len(vends) <= 1, "the motor turned twice"
        delivered = any(v.dropped for v in vends)
        [(order_id, state)] = orders(backend)
        if state not in UNPAID:
            state = final_state(backend.url, backend.operator, order_id)
            assert state in ("delivered", "refunded", "needs_review"), state
        else:
            assert step == "backend:order-created" and not vends
        assert (state == "delivered") == delivered, (state, vends)
        if refund:
            assert state == "refunded"
    finally:
        client.close()
        board.close()
        notes.close()
