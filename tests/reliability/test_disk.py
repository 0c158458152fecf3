"""A full disk or a read-only journal stops the sale before the motor turns, with one clear
error (JournalError, shown by the screen) and nothing half-written.

Tests run as root here, so file permissions cannot make SQLite read-only, and a tiny tmpfs
needs mount: the connection is wrapped to fail the way SQLite does (at COMMIT for a full disk,
at the first write for a read-only file)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vendhw.agent.runner import Agent
from vendhw.agent.shipper import Shipper
from vendhw.devices.cash import CashEvent, CashEventKind
from vendhw.errors import JournalError
from vendhw.machine import Machine
from vendhw.machine.cash import CashJournal
from vendhw.testing.backend import InProcessServer

BOARD = "sim://easivend-column?inventory=3&motor_time=0.01"
FAILURES = {"full": "database or disk is full", "read-only": "attempt to write a readonly database"}


class FailingDb:
    """An sqlite3 connection whose writes fail like a full disk or a read-only file."""

    def __init__(self, db: sqlite3.Connection, failure: str) -> None:
        self.db = db
        self.failure = failure
        self.on = True

    def execute(self, sql: str, args: Any = ()) -> Any:
        verb = sql.lstrip().split(None, 1)[0].upper()
        if self.on:
            if self.failure == "full" and verb == "COMMIT":
                raise sqlite3.OperationalError(FAILURES["full"])
            if self.failure == "full" and verb in ("INSERT", "UPDATE") and not \
                    self.db.in_transaction:
                raise sqlite3.OperationalError(FAILURES["full"])  # autocommit statement
            if self.failure == "read-only" and verb in ("BEGIN", "INSERT", "UPDATE"):
                raise sqlite3.OperationalError(FAILURES["read-only"])
        return self.db.execute(sql, args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


@pytest.fixture(params=sorted(FAILURES))
def failure(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_vend_journal_failure_stops_the_vend_before_the_motor(tmp_path: Path,
                                                              failure: str) -> None:
    machine = Machine("easivend-column", BOARD, journal=tmp_path / "vends.db")
    sim = machine.board.transport.simulator  # type: ignore[attr-defined]
    real = machine.journal._store.db
    machine.journal._store.db = FailingDb(real, failure)  # type: ignore[assignment]
    try:
        with pytest.raises(JournalError, match="not started and nothing was sent") as caught:
            machine.dispense("1", vend_id="v1")
        assert FAILURES[failure] in str(caught.value)
        assert sim.vends == []  # the motor never turned
        assert real.execute("SELECT COUNT(*) FROM vends").fetchone() == (0,)  # no half row
        assert not real.in_transaction
        machine.journal._store.db = real  # space freed / permissions fixed
        assert machine.dispense("1", vend_id="v1").delivered  # the same vend, once
        assert len(sim.vends) == 1
    finally:
        machine.journal._store.db = real
        machine.close()


def test_cash_journal_failure_spends_nothing_and_vends_nothing(tmp_path: Path,
                                                               failure: str) -> None:
    cash = CashJournal(tmp_path / "cash.db")
    cash.record(CashEvent(CashEventKind.CREDIT, "coin", 500, "EUR", event_id="c1"))
    machine = Machine("easivend-column", BOARD, journal=tmp_path / "vends.db")
    sim = machine.board.transport.simulator  # type: ignore[attr-defined]
    real = cash._store.db
    cash._store.db = FailingDb(real, failure)  # type: ignore[assignment]
    try:
        with pytest.raises(JournalError, match="cash journal"):
            machine.sell_for_cash("1", 300, cash, reference="sale:1")
        with pytest.raises(JournalError):  # a coin now: not journaled, so not acknowledged
            cash.record(CashEvent(CashEventKind.CREDIT, "coin", 100, "EUR", event_id="c2"))
        assert sim.vends == [] and machine.history() == []
        cash._store.db = real
        assert cash.balance() == 500
        assert machine.sell_for_cash("1", 300, cash, reference="sale:1").delivered
        assert cash.balance() == 200 and len(sim.vends) == 1
    finally:
        cash._store.db = real
        machine.close()
        cash.close()


@pytest.fixture
def server() -> Iterator[InProcessServer]:
    srv = InProcessServer()
    srv.add_machine("m1", slots={"1": ("tea", 500)})
    yield srv
    srv.close()


def test_ship_journal_failure_stops_the_sale_and_the_screen_says_why(
        server: InProcessServer, tmp_path: Path, failure: str,
        caplog: pytest.LogCaptureFixture) -> None:
    client = server.client(outbox=tmp_path / "outbox.db")
    machine = Machine("easivend-column", BOARD, journal=tmp_path / "vends.db")
    sim = machine.board.transport.simulator  # type: ignore[attr-defined]
    shipper = Shipper(client, machine, tmp_path / "ships.db")
    real = shipper._store.db
    try:
        order = client.create_order("1")
        server.pay(order.id)
        [instruction] = client.next_instructions(wait=0)
        shipper._store.db = FailingDb(real, failure)  # type: ignore[assignment]
        with pytest.raises(JournalError, match="ship journal"):
            shipper.process(instruction)
        assert sim.vends == []
        assert server.state(order.id) == "paid"  # not acknowledged: delivered again later
        assert "cannot be written" in caplog.text
        agent = Agent.__new__(Agent)  # the screen's view of this agent
        agent.shipper = shipper
        with pytest.raises(JournalError, match="cannot sell right now"):
            agent.products()
        with pytest.raises(JournalError):
            agent.buy("1")
        shipper._store.db = real  # space freed: the redelivered instruction ships, once
        assert shipper.process(instruction).outcome == "delivered"
        assert shipper.fault is None and len(sim.vends) == 1
        assert server.state(order.id) == "delivered"
    finally:
        shipper._store.db = real
        shipper.close()
        machine.close()
        client.close()
