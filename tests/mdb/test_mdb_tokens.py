"""Vend tokens: a changer coin type whose SETUP credit byte is 0xFF is a token, never money."""

from __future__ import annotations

import pytest

from vendhw.devices.cash import CashEventKind
from vendhw.devices.mdb import MdbCoinChanger, MdbLink, parse_changer_setup
from vendhw.errors import ConfigurationError
from vendhw.sim.mdb import MdbChangerSimulator
from vendhw.transport import SimTransport

TOKEN = 6


def token_changer(tubes: str = "20,20,20,10,10,10,5") -> tuple[MdbCoinChanger,
                                                                MdbChangerSimulator]:
    sim = MdbChangerSimulator(tokens=str(TOKEN), tubes=tubes)
    dev = MdbCoinChanger(MdbLink(SimTransport(sim), response_timeout=0.1), accept_tokens=True)
    dev.start()
    return dev, sim


def test_setup_marks_the_token_coin_type() -> None:
    setup = parse_changer_setup(bytes((3, 0x19, 0x78, 5, 2, 0, 0x7F, 1, 2, 4, 10, 20, 40, 0xFF))
                                + bytes(9))
    assert setup.tokens == frozenset({TOKEN})
    assert setup.coin_values[TOKEN] == 0
    assert setup.coin_values[:6] == (5, 10, 20, 50, 100, 200)


def test_a_token_is_reported_as_a_token_with_value_zero() -> None:
    dev, sim = token_changer()
    dev.enable()
    sim.insert_coin(TOKEN)
    sim.insert_coin(4)
    events = dev.poll()
    assert [(e.kind, e.value, e.channel) for e in events] == [
        (CashEventKind.TOKEN, 0, TOKEN), (CashEventKind.CREDIT, 100, 4)]


def test_tokens_are_not_enabled_unless_asked() -> None:
    sim = MdbChangerSimulator(tokens=str(TOKEN))
    dev = MdbCoinChanger(MdbLink(SimTransport(sim), response_timeout=0.1))
    dev.start()
    dev.enable()
    assert not sim.enabled_mask >> TOKEN & 1
    assert sim.enabled_mask & 0x3F == 0x3F


def test_change_is_never_planned_with_tokens() -> None:
    dev, sim = token_changer()
    dev.payout(1500)  # 7 x 2 EUR + 1 EUR; the five tokens in tube 6 stay
    done = [e for _ in range(5) for e in dev.poll() if e.kind is CashEventKind.PAYOUT_DONE]
    assert [(e.value, e.detail["coins"]) for e in done] == [(1500, {"5": 7, "4": 1})]
    assert sim.tubes[TOKEN] == 5
    assert sim.paid_out == 1500


def test_tokens_alone_cannot_make_change() -> None:
    dev, sim = token_changer(tubes="0,0,0,0,0,0,9")
    with pytest.raises(ConfigurationError, match="cannot pay"):
        dev.payout(100)
    assert sim.tubes[TOKEN] == 9
