"""vendhw's MDB hosts replay exchanges taken from other implementations' tests.

Each test builds a ``replay://`` capture from a peer's exchanges (``mdb_peers``), runs the
vendhw host on it with ``strict=True`` (every byte the host writes must be the capture's),
and checks the host decodes each reply the way the peer's test expects: same values, tube
counts and events. Where vendhw deliberately differs, the test says so and checks vendhw's
own outcome; ``tests/conformance/MDB.md`` lists the differences.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conformance.mdb_peers import (
    VENDER_BILL,
    VENDER_BILL_ID,
    VENDER_BILL_POLLS,
    VENDER_COIN,
    VENDER_COIN_ID,
    VENDER_COIN_INIT,
    VENDER_COIN_POLLS,
    ZZZ_BILL,
    ZZZ_COIN,
    ZZZ_COIN_ENABLE,
    ZZZ_COIN_INIT,
    ZZZ_TUBES,
    Exchange,
    capture,
    vender_bill_init,
    zzz_bill_init,
)

from vendhw.devices.cash import CashEvent
from vendhw.devices.mdb import (
    MdbBillValidator,
    MdbCoinChanger,
    open_bill_validator,
    open_changer,
    parse_identification,
)


def replay(exchanges: list[Exchange], tmp_path: Path, opener: Any, **options: Any) -> Any:
    url = capture(exchanges, tmp_path / "capture.jsonl")
    return opener(url, strict=True, **options)


def done(dev: MdbCoinChanger | MdbBillValidator) -> None:
    """The host wrote exactly the capture's bytes and consumed all of it."""
    transport = dev.link.transport
    assert getattr(transport, "mismatches", []) == []
    assert getattr(transport, "remaining", 0) == 0


def summary(events: list[CashEvent]) -> list[tuple[Any, ...]]:
    return [(e.kind.value, e.value, e.channel, e.route) for e in events]


# ---- temoto/vender coin_test.go -----------------------------------------------------------

VENDER_COIN_EXPECT: dict[str, list[tuple[Any, ...]]] = {
    # vender: PollItem list (Status, DataNominal, DataCashbox); values x testScalingFactor 100
    "empty": [],
    "reset": [("device_reset", 0, None, None)],  # vender: [] with "TODO StatusWasReset"
    "slugs": [("rejected", 0, None, None)],  # vender: [] with "TODO ErrSlugs, DataCount 1"
    "deposited-cashbox": [("credit", 200, 1, "cashbox")],
    "return-request": [("returned", 0, None, None)],
    "deposited-tube": [("credit", 500, 2, "tubes")],
    "deposited-reject": [("rejected", 1000, 3, "reject")],
    "dispensed": [("payout_progress", 500, 2, "customer")],
}


def test_vender_coin_init_reads_setup_and_tubes(tmp_path: Path) -> None:
    dev = replay(VENDER_COIN_INIT, tmp_path, open_changer)
    dev.start()
    assert dev.setup.level == 2 and dev.currency == "RUB"
    assert dev.setup.coin_values[:6] == (100, 200, 500, 1000, 1000, 2500)
    assert dev.tubes[:3] == [0x11, 0, 8]
    done(dev)


@pytest.mark.parametrize("case", sorted(VENDER_COIN_POLLS))
def test_vender_coin_poll(case: str, tmp_path: Path) -> None:
    poll = Exchange("0b", VENDER_COIN_POLLS[case], VENDER_COIN)
    dev = replay([*VENDER_COIN_INIT, poll], tmp_path, open_changer)
    dev.start()
    events = dev.poll()
    assert summary(events) == VENDER_COIN_EXPECT[case]
    if case == "deposited-tube":
        assert events[0].detail["in_tube"] == 0x1E
    done(dev)


def test_vender_coin_identification(tmp_path: Path) -> None:
    ident = parse_identification(bytes.fromhex(VENDER_COIN_ID))
    assert (ident.manufacturer, ident.serial, ident.model) == ("COG", "000000000000",
                                                               "F0012001")
    assert (ident.software_version, ident.features) == ("0290", 3)


# ---- temoto/vender bill_test.go -----------------------------------------------------------

VENDER_BILL_EXPECT: dict[str, list[tuple[Any, ...]]] = {
    "empty": [],
    "disabled": [("disabled", 0, None, None)],
    "reset,disabled": [("device_reset", 0, None, None), ("disabled", 0, None, None)],
    "escrow": [("escrow", 10000, 2, "escrow"), ("disabled", 0, None, None)],
}
HELD_FROM_INIT = [("disabled", 0, None, None)]
"""vender's init POLL answers ``06 09``: vendhw reports the 09 at its first poll."""


@pytest.mark.parametrize("case", sorted(VENDER_BILL_POLLS))
def test_vender_bill_poll(case: str, tmp_path: Path) -> None:
    poll = Exchange("33", VENDER_BILL_POLLS[case], VENDER_BILL)
    dev = replay([*vender_bill_init(), poll], tmp_path, open_bill_validator)
    dev.start()
    assert summary(dev.poll()) == HELD_FROM_INIT + VENDER_BILL_EXPECT[case]
    done(dev)


@pytest.mark.parametrize(("scaling", "decimals"), [(10, 0), (100, 1), (1000, 2)])
def test_vender_bill_scaling(scaling: int, decimals: int, tmp_path: Path) -> None:
    stacker = Exchange("36", "000b", VENDER_BILL)
    dev = replay([*vender_bill_init(scaling, decimals), stacker], tmp_path,
                 open_bill_validator)
    dev.start()
    assert dev.setup.bill_values[:5] == (1000, 5000, 10000, 50000, 100000)
    assert dev.stacker() == (11, False)
    ident = dev.identity
    assert (ident.manufacturer, ident.model, ident.software_version) == (
        "ICT", "V7-RUR500000", "0120")
    done(dev)


def test_vender_bill_identification_bytes() -> None:
    assert parse_identification(bytes.fromhex(VENDER_BILL_ID)).serial == "000000000000"


# ---- Zzzzipper/projects coin changer master ----------------------------------------------

ZZZ_COIN_POLLS: list[tuple[str, list[tuple[Any, ...]]]] = [
    # (reply, vendhw events) ; the peer's event string in the comment
    ("4657", [("credit", 1000, 6, "cashbox")]),  # <event=1,Deposite,1000,70,87>
    ("5658", [("credit", 1000, 6, "tubes")]),  # <event=1,Deposite,1000,86,88>
    ("7658", [("rejected", 1000, 6, "reject")]),  # peer: no event (not money either way)
    ("4757", [("token", 0, 7, "cashbox")]),  # <event=1,DepositeToken,0,71,87>
    ("01", [("returned", 0, None, None)]),  # <event=1,EscrowRequest>
    ("", []),
]


def test_zzzzipper_coin_init_identification_tubes_and_token(tmp_path: Path) -> None:
    dev = replay([*ZZZ_COIN_INIT, ZZZ_COIN_ENABLE], tmp_path, open_changer,
                 accept_tokens="1")
    dev.start()
    assert dev.setup.level == 3
    assert dev.setup.tokens == frozenset({7})
    assert dev.setup.coin_values[:8] == (0, 0, 100, 200, 500, 1000, 1000, 0)
    assert (dev.identity.manufacturer, dev.identity.serial, dev.identity.model) == (
        "JOF", "053679", "J2000MDB P32")
    assert dev.identity.features == 1
    assert dev.tubes[:7] == [0, 0, 0x41, 0x37, 0x57, 0, 0]
    dev.enable()  # 0C 00FC 005C, the peer's exact request
    done(dev)


def test_zzzzipper_coin_deposits_token_and_escrow_request(tmp_path: Path) -> None:
    polls = [Exchange("0B", reply, ZZZ_COIN) for reply, _ in ZZZ_COIN_POLLS]
    dev = replay([*ZZZ_COIN_INIT, *polls], tmp_path, open_changer)
    dev.start()
    for (_, expected), in_tube in zip(ZZZ_COIN_POLLS, (87, 88, 88, 87, None, None),
                                      strict=True):
        events = dev.poll()
        assert summary(events) == expected
        if in_tube is not None:
            assert events[0].detail["in_tube"] == in_tube
    done(dev)


def test_zzzzipper_coin_dispense(tmp_path: Path) -> None:
    """testDispense: DISPENSE 0D12, POLL 02 (payout busy), POLL ACK, TUBE STATUS. vendhw
    sends the peer's exact DISPENSE; the peer's fixture answers the same tube counts after
    the coin left, so vendhw cannot confirm it and says payout_incomplete (value 0), where
    the peer reports DispenseCoin without a value."""
    steps = [*ZZZ_COIN_INIT,
             Exchange("0A", ZZZ_TUBES, "vendhw"),  # vendhw reads the tubes before planning
             Exchange("0D12", None, ZZZ_COIN),
             Exchange("0B", "02", ZZZ_COIN),
             Exchange("0B", "", ZZZ_COIN),
             Exchange("0A", ZZZ_TUBES, ZZZ_COIN)]
    dev = replay(steps, tmp_path, open_changer)
    dev.start()
    dev.alternative_payout = False  # testDispense drives DISPENSE, not EXPANSION PAYOUT
    dev.payout(100)
    assert dev.poll() == []  # payout busy
    (outcome,) = dev.poll()
    assert (outcome.kind.value, outcome.value, outcome.requested) == (
        "payout_incomplete", 0, 100)
    done(dev)


def test_zzzzipper_coin_expansion_payout(tmp_path: Path) -> None:
    """testExpansionPayout: 300 EUR... units in steps of 200 (0F02 C8, 0F02 64), each
    followed by PAYOUT VALUE POLL until ACK and PAYOUT STATUS, then TUBE STATUS. vendhw sends
    the peer's exact requests. The fixture's PAYOUT STATUS says two coins of type 0, which
    has no value in its SETUP, so vendhw reports payout_incomplete with value 0; the peer
    reports <event=1,Dispense,0,0,0>, also without a value."""
    chunk = [Exchange("0F04", "02", ZZZ_COIN), Exchange("0F04", "02", ZZZ_COIN),
             Exchange("0F04", None, ZZZ_COIN), Exchange("0F03", "02", ZZZ_COIN)]
    steps = [*ZZZ_COIN_INIT,
             Exchange("0A", ZZZ_TUBES, "vendhw"),  # vendhw checks the tubes before paying
             Exchange("0F02C8", None, ZZZ_COIN), *chunk,
             Exchange("0F0264", None, ZZZ_COIN), *chunk,
             Exchange("0A", ZZZ_TUBES, ZZZ_COIN)]
    dev = replay(steps, tmp_path, open_changer)
    dev.start()
    assert dev.alternative_payout
    dev.payout(30000)
    outcomes: list[CashEvent] = []
    polls = 0
    while not outcomes:
        outcomes = dev.poll()
        polls += 1
    assert polls == 6  # three value polls for each of the two payouts
    assert [(e.kind.value, e.value, e.requested, e.detail["coins"]) for e in outcomes] == [
        ("payout_incomplete", 0, 30000, {"0": 4})]
    done(dev)


# ---- Zzzzipper/projects bill validator master --------------------------------------------


@pytest.mark.parametrize(("name", "escrow_reply", "scaling", "value"), [
    ("testBtDepositeBill", "3392", 100, 10000),
    ("testJsmDepositeBill", "339209", 100, 10000),
    ("testScalingFactor1000", "3392", 1000, 100000),
])
def test_zzzzipper_bill_escrow_stack_credit(name: str, escrow_reply: str, scaling: int,
                                            value: int, tmp_path: Path) -> None:
    """Peer: <event=1,Deposite,1,VALUE> after ESCROW 3501 and the stacked report 3382."""
    steps = [*zzz_bill_init(scaling),
             Exchange("34000F000F", None, ZZZ_BILL),
             Exchange("33", "03", ZZZ_BILL),
             Exchange("33", escrow_reply, ZZZ_BILL),
             Exchange("3501", None, ZZZ_BILL),
             Exchange("33", "09", ZZZ_BILL),
             Exchange("33", "3382", ZZZ_BILL)]
    dev = replay(steps, tmp_path, open_bill_validator)
    dev.start()
    assert dev.identity.model == "11MDRU__0004"
    dev.enable()
    assert dev.poll() == []  # 03 validator busy
    escrow = [e for e in dev.poll() if e.kind.value == "escrow"]
    assert [(e.value, e.channel) for e in escrow] == [(value, 2)]
    dev.stack()
    assert [e.kind.value for e in dev.poll()] == ["disabled"]
    credits = [(e.kind.value, e.value, e.route) for e in dev.poll()
               if e.kind.value == "credit"]
    assert credits == [("credit", value, "stacked")]
    done(dev)
