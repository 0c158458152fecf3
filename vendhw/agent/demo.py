"""``vendhw demo``: a whole sale on simulated hardware with the local reference backend.

It starts the reference server (sandbox provider, SQLite in a temporary folder) and a "101"
spiral board simulator with a light-curtain drop sensor on a pty, each in its own process, as
in production. It then ships through the same code a machine runs: the signed client, the
shipping loop and ``Machine.dispense`` with its journal. A QR sale (or a pickup code) goes
from choice to receipt, and everything started is cleaned up, also on failure, Ctrl-C or
SIGTERM: the children run in their own sessions, so a terminal's Ctrl-C reaches the demo
alone, which then stops them (simulator first, then the backend) and removes its folder.

The "101" board is chosen because its protocol cannot be asked about a vend afterwards. With
``--fault power-cut`` the machine's controller loses power the moment the vend command has
left it: the first shipping attempt runs in a child process that the vend journal's crash
hook kills right after the "sent" step. The agent then restarts on the same journals, finds
the vend in flight, cannot ask the board, and reports ``unknown``: the order ends in
``needs_review`` for an operator, never refunded or shipped again automatically.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from vendhw.agent.shipper import Shipper
from vendhw.errors import ConfigurationError, NoResponseError, VendhwError

BOARD = "board101"
MACHINE_ID = "demo-machine-1"
PRODUCTS = [("cola", "Cola 330 ml", 350), ("water", "Mineral water", 200),
            ("chips", "Potato chips", 500)]
FAULTS = {"jam": "jam", "empty": "empty", "no-drop": "no_drop", "power-cut": ""}
"""Demo fault -> board simulator fault; a power cut hits the controller, not the board."""
EXPECTED = {None: "delivered", "jam": "refunded", "empty": "refunded", "no-drop": "refunded",
            "power-cut": "needs_review"}
FINAL = {"delivered", "refunded", "needs_review", "expired", "cancelled"}

READY_TIMEOUT = 30.0
"""Seconds the backend may take to answer /healthz after start."""
READY_INTERVAL = 0.05
"""Seconds between readiness probes of the starting backend."""
STATUS_INTERVAL = 0.1
"""Seconds between order-status checks while waiting for the sale to finish."""
SALE_TIMEOUT = 60.0
"""Seconds a sale may take once paid (the simulated motor runs in milliseconds)."""
HUMAN_PAY_TIMEOUT = 300.0
"""Seconds to wait for a person to pay on the pay page (without --auto-pay)."""


@dataclass
class DemoResult:
    state: str
    order_id: str
    expected: str
    sale_ms: float | None
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.state == self.expected


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Processes:
    """Child processes that must not outlive the demo."""

    def __init__(self) -> None:
        self.children: list[subprocess.Popen[str]] = []

    def start(self, *args: str, log: Path) -> subprocess.Popen[str]:
        # Its own session: the terminal's Ctrl-C reaches the demo alone, which then stops
        # its children in order (a simulator killed mid-vend would read as "unplugged").
        proc = subprocess.Popen([sys.executable, "-m", "vendhw", *args], text=True,
                                stdout=subprocess.PIPE, stderr=log.open("w"),
                                stdin=subprocess.DEVNULL, start_new_session=True)
        self.children.append(proc)
        return proc

    def stop(self) -> None:
        """Stop the children, newest first (the simulator before the backend it serves)."""
        for proc in reversed(self.children):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.children:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def _wait_ready(url: str, proc: subprocess.Popen[str], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    pause = threading.Event()
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ConfigurationError(f"the backend exited at start: {log.read_text()[-800:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        pause.wait(READY_INTERVAL)  # sleep-ok: a starting server has no event to wait on
    raise NoResponseError("the backend did not become ready", port=url, timeout=READY_TIMEOUT)


def run_demo(*, auto_pay: bool = False, pickup: bool = False, fault: str | None = None,
             emit: Callable[[dict[str, Any]], None] | None = None,
             show_qr: Callable[[str], None] | None = None, card: bool = False) -> DemoResult:
    """Run one sale end to end and return its final state (see the module docstring).

    ``card``: the customer pays at a simulated MDB card reader (:mod:`vendhw.agent.card`).
    """
    if fault is not None and fault not in FAULTS:
        raise ConfigurationError(f"unknown fault {fault!r}; choose from {', '.join(FAULTS)}")
    if card and (pickup or fault == "power-cut"):
        raise ConfigurationError("--card goes with no --pickup and no power-cut fault")
    events: list[dict[str, Any]] = []
    started = time.monotonic()

    def say(event: str, **data: Any) -> None:
        record = {"event": event, "t_ms": round((time.monotonic() - started) * 1000), **data}
        events.append(record)
        if emit is not None:
            emit(record)

    procs = _Processes()
    stop = threading.Event()
    with tempfile.TemporaryDirectory(prefix="vendhw-demo-") as tmp_name:
        tmp = Path(tmp_name)
        machine = client = shipper = None
        thread: threading.Thread | None = None
        try:
            port = _free_port()
            url = f"http://127.0.0.1:{port}"
            token = secrets.token_hex(16)
            secret = secrets.token_hex(16)
            server = procs.start(
                "backend", "serve", "--db", f"sqlite:///{tmp / 'backend.db'}",
                "--host", "127.0.0.1", "--port", str(port), "--operator-token", token,
                "--order-ttl", "5m", "--query-interval", "200ms", "--query-max", "1s",
                "--redeliver-after", "2s", "--log-level", "warning",
                log=tmp / "backend.log")
            _wait_ready(url, server, tmp / "backend.log")
            operator = {"Authorization": f"Bearer {token}"}
            catalogue = {
                "currency": "CNY",
                "products": [{"id": pid, "name": name, "price": price}
                             for pid, name, price in PRODUCTS],
                "machines": [{"id": MACHINE_ID, "secret": secret, "name": "vendhw demo",
                              "slots": [{"slot": str(i + 1), "product": pid, "price": price}
                                        for i, (pid, _, price) in enumerate(PRODUCTS)]}],
            }
            httpx.post(f"{url}/operator/v1/catalogue", json=catalogue, headers=operator,
                       timeout=10).raise_for_status()
            say("backend_ready", url=url, provider="sandbox")

            sim_args = ["sim", BOARD, "--json", "-o", "inventory=3"]
            if fault and FAULTS[fault]:
                sim_args += ["--fault", f"{FAULTS[fault]}=1"]
            sim = procs.start(*sim_args, log=tmp / "sim.log")
            assert sim.stdout is not None
            sim_port = json.loads(sim.stdout.readline())["port"]
            say("board_ready", board=BOARD, port=sim_port, fault=fault)

            from vendhw.client import BackendClient
            from vendhw.machine import Machine

            client = BackendClient(url, MACHINE_ID, secret, outbox=tmp / "outbox.db")
            motor_ms: list[float] = []

            def on_event(kind: str, data: dict[str, Any]) -> None:
                if kind == "dispensed" and data.get("duration_ms") is not None:
                    motor_ms.append(float(data["duration_ms"]))
                say(kind, **{k: v for k, v in data.items() if k != "raw"})

            def start_agent() -> None:
                nonlocal machine, shipper, thread
                machine = Machine(BOARD, sim_port, journal=tmp / "vends.db")
                shipper = Shipper(client, machine, tmp / "ships.db", on_event=on_event)
                recovered = shipper.recover()
                if recovered:
                    say("agent_restarted", recovered=[r.order_id for r in recovered],
                        outcomes=[r.outcome for r in recovered])
                thread = threading.Thread(target=shipper.run, args=(stop, 1.0), daemon=True)
                thread.start()

            if fault != "power-cut":
                start_agent()

            chosen = "1"
            if card:
                from vendhw.agent.card import card_demo_sale

                choice_at = time.monotonic()
                order = card_demo_sale(client, machine, chosen, PRODUCTS[0][2], say)
            elif pickup:
                reply = httpx.post(f"{url}/operator/v1/codes", headers=operator, timeout=10,
                                   json={"product": PRODUCTS[0][0], "count": 1,
                                         "valid_for": "10m", "machine": MACHINE_ID})
                reply.raise_for_status()
                code = str(reply.json()["codes"][0]["code"])
                say("pickup_code", code=code)
                choice_at = time.monotonic()
                redemption = client.redeem_code(code)
                order = redemption.order
                say("code_accepted", order=order.id, state=order.state)
                if redemption.instruction is not None and shipper is not None:
                    # The ship instruction comes with the answer; the push channel repeats
                    # it only if it is not acknowledged, and the journal dedupes it then.
                    shipper.process(redemption.instruction)
            else:
                choice_at = time.monotonic()
                order = client.create_order(chosen)
                say("order_created", order=order.id, slot=chosen, amount=order.amount,
                    currency=order.currency, pay_url=order.qr_text, state=order.state)
                if show_qr is not None and order.qr_text:
                    show_qr(order.qr_text)
                if auto_pay:
                    httpx.post(f"{url}/sandbox/orders/{order.id}/pay",
                               timeout=10).raise_for_status()
                    say("paid", order=order.id, by="sandbox auto-pay")
                else:
                    say("waiting_for_payment", pay_url=order.qr_text)
            if fault == "power-cut":
                status = _ship_in_child(url, secret, sim_port, tmp)
                say("power_cut", exit_status=status, step="vend command sent")
                start_agent()

            deadline = time.monotonic() + (SALE_TIMEOUT if auto_pay or pickup
                                           else HUMAN_PAY_TIMEOUT)
            state = order.state
            while state not in FINAL and time.monotonic() < deadline:
                stop.wait(STATUS_INTERVAL)  # sleep-ok: the backend's order status has no push
                state = client.order_status(order.id).state
            ended = time.monotonic()
            stop.set()  # the shipping loop's last events come before the final line
            if thread is not None:
                thread.join(timeout=10)
            sale_ms = None
            if state == "delivered":
                sale_ms = round((ended - choice_at) * 1000 - sum(motor_ms), 1)
            say("final", state=state, order=order.id, expected=EXPECTED[fault],
                sale_ms=sale_ms, motor_ms=round(sum(motor_ms), 1))
            return DemoResult(state, order.id, EXPECTED[fault], sale_ms, events)
        finally:
            stop.set()
            if thread is not None:
                thread.join(timeout=5)
            for thing in (shipper, client, machine):
                if thing is not None:
                    try:
                        thing.close()
                    except (VendhwError, OSError):
                        pass
            procs.stop()


CHILD_SHIP_TIMEOUT = 30.0
"""Seconds the power-cut child may take to receive its instruction and die."""


def _ship_in_child(url: str, secret: str, port: str, tmp: Path) -> int:
    """Ship the next instruction in a child process that dies right after the vend is sent."""
    env = {**os.environ, "VENDHW_CRASH_AT": "sent"}
    code = ("import sys, threading\n"
            "from vendhw.agent.shipper import Shipper\n"
            "from vendhw.client import BackendClient\n"
            "from vendhw.machine import Machine\n"
            "url, secret, port, tmp = sys.argv[1:5]\n"
            f"client = BackendClient(url, {MACHINE_ID!r}, secret, outbox=tmp + '/outbox.db')\n"
            f"machine = Machine({BOARD!r}, port, journal=tmp + '/vends.db')\n"
            "shipper = Shipper(client, machine, tmp + '/ships.db')\n"
            "for instruction in client.next_instructions(wait=20):\n"
            "    shipper.process(instruction)\n")
    proc = subprocess.run([sys.executable, "-c", code, url, secret, port, str(tmp)], env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=CHILD_SHIP_TIMEOUT, start_new_session=True)
    if proc.returncode == 0:
        raise ConfigurationError("the power-cut child finished instead of dying mid-vend: "
                                 + proc.stderr[-500:])
    return proc.returncode


__all__ = ["EXPECTED", "FAULTS", "DemoResult", "run_demo"]

if __name__ == "__main__":  # pragma: no cover - python -m vendhw.agent.demo
    result = run_demo(auto_pay=True, emit=lambda e: print(json.dumps(e)))  # noqa: T201
    os._exit(0 if result.ok else 1)
