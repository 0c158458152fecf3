"""A failure in the ship path ends the order, keeps the shipper alive and never blocks a
restart (regression: a slot missing from the board profile used to kill the shipping thread
with ConfigurationError, leave the order ``dispensing`` and make every restart exit)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from vendhw.agent.shipper import Shipper
from vendhw.errors import NoResponseError
from vendhw.machine import Machine
from vendhw.testing.backend import InProcessServer

BOARD = "sim://easivend-column?inventory=3&motor_time=0.01"


@pytest.fixture
def server() -> Iterator[InProcessServer]:
    srv = InProcessServer()
    # "Z99" is sold by the backend but is not a slot of the easivend-column profile.
    srv.add_machine("m1", slots={"1": ("tea", 500), "Z99": ("ghost", 300)})
    yield srv
    srv.close()


def paid_instruction(server: InProcessServer, client: object, slot: str) -> object:
    order = client.create_order(slot)  # type: ignore[attr-defined]
    server.pay(order.id)
    [instruction] = client.next_instructions(wait=0)  # type: ignore[attr-defined]
    return instruction


def test_unknown_slot_refunds_and_the_next_order_still_ships(server: InProcessServer,
                                                             tmp_path: Path) -> None:
    client = server.client(outbox=tmp_path / "outbox.db")
    machine = Machine("easivend-column", BOARD, journal=tmp_path / "vends.db")
    shipper = Shipper(client, machine, tmp_path / "ships.db")
    try:
        bad = paid_instruction(server, client, "Z99")
        shipped = shipper.process(bad)  # type: ignore[arg-type]
        assert shipped.outcome == "motor_fault"
        assert "ConfigurationError" in shipped.result["detail"]
        assert server.state(bad.order_id) in ("refunding", "refunded")  # type: ignore[attr-defined]
        assert shipper.unfinished() == []
        assert machine.pending() == []  # nothing was journaled as a vend
        good = paid_instruction(server, client, "1")
        assert shipper.process(good).outcome == "delivered"  # type: ignore[arg-type]
        assert server.state(good.order_id) == "delivered"  # type: ignore[attr-defined]
    finally:
        shipper.close()
        machine.close()
        client.close()


def test_the_shipping_thread_survives_a_failing_instruction(server: InProcessServer,
                                                            tmp_path: Path) -> None:
    client = server.client(outbox=tmp_path / "outbox.db")
    machine = Machine("easivend-column", BOARD, journal=tmp_path / "vends.db")
    shipper = Shipper(client, machine, tmp_path / "ships.db")
    bad = client.create_order("Z99")
    server.pay(bad.id)
    good = client.create_order("1")
    server.pay(good.id)
    stop = threading.Event()
    done: list[str] = []

    def on_event(kind: str, data: dict[str, object]) -> None:
        if kind == "reported":
            done.append(str(data["order"]))
            if len(done) == 2:
                stop.set()

    shipper.on_event = on_event
    thread = threading.Thread(target=shipper.run, args=(stop, 0.0), daemon=True)
    thread.start()
    thread.join(30)
    try:
        assert not thread.is_alive()
        assert sorted(done) == sorted([bad.id, good.id])
        assert server.state(good.id) == "delivered"
        assert server.state(bad.id) in ("refunding", "refunded")
    finally:
        stop.set()
        shipper.close()
        machine.close()
        client.close()


def test_a_restart_finishes_a_journaled_bad_instruction(server: InProcessServer,
                                                        tmp_path: Path) -> None:
    """The journal an old agent left (instruction received, never reported)."""
    client = server.client(outbox=tmp_path / "outbox.db")
    bad = paid_instruction(server, client, "Z99")
    client.ack(bad.id, bad.order_id)  # type: ignore[attr-defined]
    db = sqlite3.connect(tmp_path / "ships.db")
    db.executescript("CREATE TABLE ships (instruction_id TEXT PRIMARY KEY, order_id TEXT NOT "
                     "NULL, slot TEXT NOT NULL, vend_id TEXT NOT NULL, state TEXT NOT NULL, "
                     "outcome TEXT, received_at REAL NOT NULL, done_at REAL);")
    db.execute("INSERT INTO ships VALUES (?,?,?,?,?,?,?,?)",
               (bad.id, bad.order_id, "Z99", f"order-{bad.order_id}",  # type: ignore[attr-defined]
                "received", None, 0.0, None))
    db.commit()
    db.close()
    machine = Machine("easivend-column", BOARD, journal=tmp_path / "vends.db")
    shipper = Shipper(client, machine, tmp_path / "ships.db")
    try:
        [done] = shipper.recover()
        assert done.outcome == "motor_fault"
        assert shipper.unfinished() == []
        assert server.state(bad.order_id) in ("refunding", "refunded")  # type: ignore[attr-defined]
    finally:
        shipper.close()
        machine.close()
        client.close()


class ExplodingBoardMachine:
    """A Machine whose board fails after the command was sent (journal says ``sent``)."""

    def __init__(self, machine: Machine, *, sent: bool) -> None:
        self.machine = machine
        self.journal = machine.journal
        self.sent = sent

    def dispense(self, slot: str, vend_id: str) -> object:
        motor = self.machine.profile.slot_to_motor(slot)
        self.journal.begin(vend_id, board=self.machine.name, slot=slot, motor=motor,
                           drop_sensor=False, sequence_range=self.machine.board.sequence_range)
        if not self.sent:
            self.journal.abort(vend_id, "board silent")
            raise NoResponseError("board silent before the command")
        from vendhw.machine.journal import VendState
        self.journal.mark(vend_id, VendState.SENT)
        raise RuntimeError("driver bug after the send")


@pytest.mark.parametrize(("sent", "outcome", "state"),
                         [(False, "motor_fault", ("refunding", "refunded")),
                          (True, "unknown", ("needs_review",))])
def test_failure_after_the_send_goes_to_review_not_refund(server: InProcessServer,
                                                          tmp_path: Path, sent: bool,
                                                          outcome: str,
                                                          state: tuple[str, ...]) -> None:
    client = server.client(outbox=tmp_path / "outbox.db")
    machine = Machine("easivend-column", BOARD, journal=tmp_path / "vends.db")
    shipper = Shipper(client, ExplodingBoardMachine(machine, sent=sent), tmp_path / "ships.db")
    try:
        instruction = paid_instruction(server, client, "1")
        assert shipper.process(instruction).outcome == outcome  # type: ignore[arg-type]
        assert server.state(instruction.order_id) in state  # type: ignore[attr-defined]
    finally:
        shipper.close()
        machine.close()
        client.close()
