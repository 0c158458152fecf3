"""The cash journal: every credit journaled before it is acknowledged, never twice, never lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from vendhw.devices.cash import CashEvent, CashEventKind
from vendhw.devices.mdb import MdbBillValidator, MdbCoinChanger, MdbLink
from vendhw.machine.cash import CashAcceptor, CashJournal, InsufficientCredit
from vendhw.sim.mdb import MdbBillSimulator, MdbChangerSimulator
from vendhw.transport import SimTransport


def credit(eid: str, value: int) -> CashEvent:
    return CashEvent(CashEventKind.CREDIT, "dev", value, "EUR", event_id=eid)


def test_record_is_idempotent(tmp_path: Path) -> None:
    journal = CashJournal(tmp_path / "cash.db")
    assert journal.record(credit("a", 100)) is True
    assert journal.record(credit("a", 100)) is False
    assert journal.balance() == 100


def test_journal_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "cash.db"
    journal = CashJournal(path)
    journal.record(credit("a", 200))
    journal.spend(150, "order-1")
    journal.close()
    again = CashJournal(path)
    assert again.balance() == 50
    assert again.record(credit("a", 200)) is False


def test_spend_is_idempotent_and_bounded(tmp_path: Path) -> None:
    journal = CashJournal(tmp_path / "cash.db")
    journal.record(credit("a", 100))
    assert journal.spend(60, "order-1") is True
    assert journal.spend(60, "order-1") is False  # a retried spend takes nothing more
    assert journal.balance() == 40
    with pytest.raises(InsufficientCredit):
        journal.spend(41, "order-2")
    assert journal.balance() == 40


def test_event_without_id_is_refused(tmp_path: Path) -> None:
    journal = CashJournal(tmp_path / "cash.db")
    with pytest.raises(ValueError):
        journal.record(CashEvent(CashEventKind.CREDIT, "dev", 100))


def acceptor(tmp_path: Path) -> tuple[CashAcceptor, MdbChangerSimulator, MdbBillSimulator]:
    coin_sim, bill_sim = MdbChangerSimulator(), MdbBillSimulator()
    coins = MdbCoinChanger(MdbLink(SimTransport(coin_sim), response_timeout=0.1))
    notes = MdbBillValidator(MdbLink(SimTransport(bill_sim), response_timeout=0.1))
    coins.start()
    notes.start()
    acc = CashAcceptor([coins, notes], CashJournal(tmp_path / "cash.db"))
    acc.enable()
    return acc, coin_sim, bill_sim


def test_acceptor_takes_coins_and_escrowed_notes_without_knowing_the_protocol(
        tmp_path: Path) -> None:
    acc, coin_sim, bill_sim = acceptor(tmp_path)
    heard: list[CashEvent] = []
    acc.listeners.append(heard.append)
    coin_sim.insert_coin(4)
    bill_sim.insert_bill(0)
    acc.poll_once()  # coin credited, note escrowed -> stacked by the policy
    acc.poll_once()  # stacked note credited
    assert acc.journal.balance() == 100 + 500
    assert bill_sim.stacked == [0]
    assert [e.kind for e in heard].count(CashEventKind.CREDIT) == 2


def test_escrow_policy_can_return_a_note(tmp_path: Path) -> None:
    acc, _, bill_sim = acceptor(tmp_path)
    acc.escrow_policy = lambda event: event.value <= 1000
    bill_sim.insert_bill(3)  # 50 EUR: too large for this machine
    acc.poll_once()
    acc.poll_once()
    assert acc.journal.balance() == 0 and bill_sim.stacked == []


def test_journal_failure_means_the_device_repeats(tmp_path: Path) -> None:
    acc, coin_sim, _ = acceptor(tmp_path)
    coin_sim.insert_coin(5)
    real_record = acc.journal.record
    acc.journal.record = lambda event: (_ for _ in ()).throw(OSError("disk full"))  # type: ignore[method-assign]
    with pytest.raises(OSError):
        acc.poll_once()
    acc.journal.record = real_record  # type: ignore[method-assign]
    acc.poll_once()
    assert acc.journal.balance() == 200  # credited exactly once, after the repeat


def test_wait_for_balance_with_poller_thread(tmp_path: Path) -> None:
    acc, coin_sim, _ = acceptor(tmp_path)
    acc.poll_interval = 0.01
    acc.start()
    try:
        coin_sim.insert_coin(5)
        assert acc.wait_for_balance(200, timeout=5.0)
        assert not acc.wait_for_balance(10_000, timeout=0.05)
    finally:
        acc.stop()


def test_give_change_is_journaled_once(tmp_path: Path) -> None:
    acc, coin_sim, _ = acceptor(tmp_path)
    coin_sim.insert_coin(5)
    acc.poll_once()
    acc.journal.spend(150, "order-7")
    changer = acc.devices[0]
    assert acc.give_change(changer, "order-7") == 50
    assert coin_sim.paid_out == 50
    assert acc.give_change(changer, "order-7") == 0
    assert coin_sim.paid_out == 50
