"""MDB ACK timing: the peripheral repeats data whose ACK came after ``ACK_TIMEOUT`` (5 ms),
so the host must ACK at once and journal afterwards. The journal here takes 50 ms a commit
(an fsync on an SD card) on a virtual clock, and the simulator enforces the spec's window."""

from __future__ import annotations

from pathlib import Path

from conformance.mdb_clock import SlowJournal, VirtualClock, VirtualClockTransport

from vendhw.devices.cash import CashEvent, CashEventKind
from vendhw.devices.mdb import MdbBillValidator, MdbCoinChanger, MdbLink
from vendhw.framing.mdb import ACK_TIMEOUT
from vendhw.machine.cash import CashJournal
from vendhw.sim.mdb import MdbBillSimulator, MdbChangerSimulator

SD_CARD_COMMIT = 0.050
"""Seconds one journal commit takes in these tests (ten times the ACK window)."""
COINS = (0, 1, 2, 3, 4, 5, 4, 3, 2, 1, 0, 5, 5, 4, 3)
VALUES = (5, 10, 20, 50, 100, 200)


def test_the_simulator_ignores_a_late_ack_and_repeats() -> None:
    clock = VirtualClock()
    sim = MdbChangerSimulator(ack_window="spec")
    link = MdbLink(VirtualClockTransport(sim, clock), response_timeout=0.1)
    dev = MdbCoinChanger(link)
    dev.start()
    dev.enable()
    sim.insert_coin(3)
    first = link.transact(0x08, 3)
    clock.advance(ACK_TIMEOUT * 2)
    link.ack()
    assert sim.late_acks == 1
    assert link.transact(0x08, 3) == first  # the same activity again
    link.ack()
    assert link.transact(0x08, 3) is None


def test_every_coin_is_credited_once_with_a_50ms_journal(tmp_path: Path) -> None:
    clock = VirtualClock()
    sim = MdbChangerSimulator(ack_window="spec", tubes="40,40,40,40,40,40")
    dev = MdbCoinChanger(MdbLink(VirtualClockTransport(sim, clock), response_timeout=0.1))
    journal = SlowJournal(CashJournal(tmp_path / "cash.db"), clock, SD_CARD_COMMIT)
    dev.start()
    dev.enable()
    for index, coin in enumerate(COINS):
        sim.insert_coin(coin)
        if index % 3 == 0:
            sim.insert_coin(coin)  # two coins in one POLL reply now and then
        dev.poll(journal.record)
        clock.advance(0.2)
    for _ in range(3):
        dev.poll(journal.record)
    expected = sum(VALUES[c] for c in COINS) + sum(VALUES[c] for c in COINS[::3])
    credits = [e for e in journal.journal.events() if e["kind"] == "credit"]
    assert len(credits) == len(COINS) + len(COINS[::3])
    assert journal.journal.credited() == expected
    assert sim.late_acks == 0


def test_every_bill_is_credited_once_with_a_50ms_journal(tmp_path: Path) -> None:
    clock = VirtualClock()
    sim = MdbBillSimulator(ack_window="spec")
    dev = MdbBillValidator(MdbLink(VirtualClockTransport(sim, clock), response_timeout=0.1))
    journal = SlowJournal(CashJournal(tmp_path / "cash.db"), clock, SD_CARD_COMMIT)
    dev.start()
    dev.enable()
    for bill in (0, 1, 2, 3, 1):
        sim.insert_bill(bill)
        for event in dev.poll(journal.record):
            if event.kind is CashEventKind.ESCROW:
                dev.stack()
        dev.poll(journal.record)
        clock.advance(0.2)
    assert journal.journal.credited() == 500 + 1000 + 2000 + 5000 + 1000
    assert sim.late_acks == 0


def test_a_sink_that_fails_after_the_ack_gets_the_same_events_again(tmp_path: Path) -> None:
    """ACKed first, so the peripheral will not repeat: the host keeps what the sink refused."""
    clock = VirtualClock()
    sim = MdbChangerSimulator(ack_window="spec")
    dev = MdbCoinChanger(MdbLink(VirtualClockTransport(sim, clock), response_timeout=0.1))
    journal = CashJournal(tmp_path / "cash.db")
    dev.start()
    dev.enable()
    sim.insert_coin(5)
    sim.insert_coin(4)
    failures = iter([True, False, False])

    def flaky(event: CashEvent) -> None:
        if next(failures, False):
            raise OSError("journal disk full")
        journal.record(event)

    try:
        dev.poll(flaky)
    except OSError:
        pass
    again = dev.poll(flaky)
    assert [e.value for e in again] == [200, 100]
    assert journal.credited() == 300
    assert dev.poll(journal.record) == []
