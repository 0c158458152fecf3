"""Machine.sell_for_cash: credit from any cash device, spent once, given back on failure."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from vendhw.devices.cash import CashEventKind
from vendhw.devices.cctalk import open_coin_acceptor
from vendhw.machine import Machine
from vendhw.machine.cash import CashAcceptor, CashJournal, InsufficientCredit


def coins_in(tmp_path: Path) -> CashAcceptor:
    coins = open_coin_acceptor("sim://cctalk-coin?auto_insert=6,6&insert_interval=0.01",
                               reply_timeout=0.05)
    coins.start()
    acceptor = CashAcceptor([coins], CashJournal(tmp_path / "cash.db"))
    acceptor.enable()
    deadline = time.monotonic() + 3
    credits = 0
    while credits < 2 and time.monotonic() < deadline:
        credits += sum(e.kind is CashEventKind.CREDIT for e in acceptor.poll_once())
        time.sleep(0.01)
    assert acceptor.journal.balance() == 400  # two EUR 2 coins
    return acceptor


def test_sell_for_cash_spends_once_and_replays(tmp_path: Path) -> None:
    acceptor = coins_in(tmp_path)
    cash = acceptor.journal
    with Machine("easivend-column", "sim://easivend-column?motor_time=0.01",
                 journal=tmp_path / "vends.db") as machine:
        with pytest.raises(InsufficientCredit):
            machine.sell_for_cash("1", 500, cash)
        result = machine.sell_for_cash("1", 300, cash, reference="sale:1:a")
        assert result.delivered and result.vend_id == "sale:1:a" and cash.balance() == 100
        again = machine.sell_for_cash("1", 300, cash, reference="sale:1:a")
        assert again.replayed and cash.balance() == 100  # not spent, not vended twice
        assert cash.settled("sale:1:a") == "delivered"
    acceptor.devices[0].close()


def test_sell_for_cash_gives_the_credit_back_after_a_definite_failure(tmp_path: Path) -> None:
    acceptor = coins_in(tmp_path)
    cash = acceptor.journal
    with Machine("easivend-column", "sim://easivend-column?motor_time=0.01&empty=2",
                 journal=tmp_path / "vends.db") as machine:
        result = machine.sell_for_cash("2", 300, cash, reference="sale:2:b")
        assert not result.delivered and result.outcome.value != "unknown"  # a definite failure
        assert cash.balance() == 400 and cash.settled("sale:2:b") == result.outcome.value
    acceptor.devices[0].close()
