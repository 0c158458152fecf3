"""MDB coin changer and bill validator hosts against their simulators."""

from __future__ import annotations

from typing import Any

import pytest

from vendhw.devices.cash import CashEvent, CashEventKind
from vendhw.devices.mdb import (
    MdbBillValidator,
    MdbCoinChanger,
    MdbLink,
    open_bill_validator,
    open_changer,
    parse_bill_poll,
    parse_changer_poll,
    parse_changer_setup,
)
from vendhw.errors import ConfigurationError, NoResponseError
from vendhw.sim import create
from vendhw.sim.mdb import MdbBillSimulator, MdbChangerSimulator
from vendhw.transport import SimTransport, SimulatorOnPty, open_transport
from vendhw.transport.mdb9 import runs_by_mode


def changer(**options: Any) -> tuple[MdbCoinChanger, MdbChangerSimulator]:
    sim = MdbChangerSimulator(**options)
    dev = MdbCoinChanger(MdbLink(SimTransport(sim), response_timeout=0.1))
    dev.start()
    return dev, sim


def bill(**options: Any) -> tuple[MdbBillValidator, MdbBillSimulator]:
    sim = MdbBillSimulator(**options)
    dev = MdbBillValidator(MdbLink(SimTransport(sim), response_timeout=0.1))
    dev.start()
    return dev, sim


def test_changer_start_reads_setup_and_tubes() -> None:
    dev, _ = changer()
    assert dev.setup is not None
    assert dev.setup.coin_values[:6] == (5, 10, 20, 50, 100, 200)
    assert dev.currency == "EUR"
    assert dev.tubes[:6] == [20, 20, 20, 10, 10, 10]


def test_coins_credited_once_each() -> None:
    dev, sim = changer()
    dev.enable()
    sim.insert_coin(4)
    sim.insert_coin(2)
    seen: list[CashEvent] = []
    events = dev.poll(seen.append)
    assert [(e.kind, e.value, e.route) for e in events] == [
        (CashEventKind.CREDIT, 100, "tubes"), (CashEventKind.CREDIT, 20, "tubes")]
    assert seen == events
    assert dev.poll() == []  # ACKed: never reported twice
    assert len({e.event_id for e in events}) == 2


def test_every_identical_copy_after_the_first_is_flagged_with_its_value() -> None:
    # Regression (long line-fault run, full tubes): coins to the cash box leave the tube
    # count at its maximum, so consecutive coins give identical POLL data. The second copy
    # was flagged; the third got the same fault event_id and the journal swallowed it, so
    # a coin was neither credited nor reported.
    dev, sim = changer(tubes="50,50,50,50,50,50")
    dev.enable()
    seen: list[CashEvent] = []
    for _ in range(4):
        sim.insert_coin(4)
        dev.poll(seen.append)
    credits = {e.event_id for e in seen if e.kind is CashEventKind.CREDIT}
    faults = [e for e in seen if e.kind is CashEventKind.FAULT]
    assert len(credits) == 1  # a sequence-free protocol cannot tell: counted once...
    assert len({e.event_id for e in faults}) == 3  # ...and each other copy goes to an operator
    assert all(e.value == 100 and e.detail["needs_review"] for e in faults)


def test_coin_while_disabled_is_not_credited() -> None:
    dev, sim = changer()
    sim.insert_coin(4)
    assert dev.poll() == []


def test_sink_failure_means_no_ack_and_the_peripheral_repeats() -> None:
    dev, sim = changer()
    dev.enable()
    sim.insert_coin(5)

    def broken(event: CashEvent) -> None:
        raise OSError("journal disk full")

    with pytest.raises(OSError):
        dev.poll(broken)
    again = dev.poll()
    assert [(e.kind, e.value) for e in again] == [(CashEventKind.CREDIT, 200)]


def test_a_repeat_after_a_sink_failure_midway_counts_each_coin_once(tmp_path: Any) -> None:
    """The sink journaled the first coin and failed on the second: no ACK, the changer repeats
    both, and the repeat carries the same event ids, so the journal keeps one of each."""
    from vendhw.machine.cash import CashJournal

    journal = CashJournal(tmp_path / "cash.db")
    dev, sim = changer()
    dev.enable()
    sim.insert_coin(5)
    sim.insert_coin(4)
    calls = 0

    def flaky(event: CashEvent) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError("journal disk full")
        journal.record(event)

    with pytest.raises(OSError):
        dev.poll(flaky)
    again = dev.poll(journal.record)
    assert [e.value for e in again] == [200, 100]
    assert journal.credited() == 300
    sim.insert_coin(5)  # the same coin again, after the ACK: a new credit, a new id
    dev.poll(journal.record)
    assert journal.credited() == 500


def payout_outcome(dev: MdbCoinChanger, polls: int = 20) -> CashEvent:
    for _ in range(polls):
        for event in dev.poll():
            if event.kind in (CashEventKind.PAYOUT_DONE, CashEventKind.PAYOUT_INCOMPLETE):
                return event
    raise AssertionError("payout did not finish")


def test_payout_from_tubes() -> None:
    dev, sim = changer()
    dev.payout(270)  # 2 EUR + 50c + 20c, one DISPENSE after the other
    assert sim.paid_out == 200
    assert [e.reason for e in dev.poll()] == []  # "payout busy" is not an event
    done = payout_outcome(dev)
    assert (done.kind, done.value, done.requested) == (CashEventKind.PAYOUT_DONE, 270, 270)
    assert done.detail["coins"] == {"5": 1, "3": 1, "2": 1}
    assert sim.paid_out == 270
    assert sim.tubes[:6] == [20, 20, 19, 9, 10, 9]
    assert dev.poll() == []


def test_a_second_payout_waits_for_the_first() -> None:
    dev, _ = changer()
    dev.payout(100)
    with pytest.raises(ConfigurationError, match="still running"):
        dev.payout(100)
    assert payout_outcome(dev).kind is CashEventKind.PAYOUT_DONE
    dev.payout(100)
    assert payout_outcome(dev).value == 100


def test_payout_that_tubes_cannot_make_is_refused_before_moving() -> None:
    dev, sim = changer(tubes="0,0,0,0,0,1")
    with pytest.raises(ConfigurationError, match="cannot pay"):
        dev.payout(205)
    assert sim.paid_out == 0


def test_reset_during_payout_is_reported_and_reconcilable() -> None:
    dev, sim = changer()
    sim.set_fault("reset_during_payout")
    dev.payout(400)  # two 2 EUR coins; the changer resets after paying one
    events = dev.poll()
    assert [e.kind for e in events] == [CashEventKind.DEVICE_RESET,
                                        CashEventKind.PAYOUT_INCOMPLETE]
    assert (events[1].value, events[1].requested) == (200, 400)  # the tubes: one coin left
    assert dev.tube_status()[5] == 9
    assert sim.paid_out == 200


@pytest.mark.parametrize(("fault", "kind"), [("jam", CashEventKind.JAM),
                                              ("fraud", CashEventKind.FRAUD)])
def test_changer_faults(fault: str, kind: CashEventKind) -> None:
    dev, sim = changer()
    sim.set_fault(fault)
    assert [e.kind for e in dev.poll()] == [kind]


def test_bill_escrow_then_stack() -> None:
    dev, sim = bill()
    dev.enable()
    sim.insert_bill(1)
    assert [(e.kind, e.value) for e in dev.poll()] == [(CashEventKind.ESCROW, 1000)]
    dev.stack()
    events = dev.poll()
    assert [(e.kind, e.value, e.route) for e in events] == [
        (CashEventKind.CREDIT, 1000, "stacked")]
    assert sim.stacked == [1]
    assert dev.stacker() == (1, False)


def test_bill_escrow_then_return() -> None:
    dev, sim = bill()
    dev.enable()
    sim.insert_bill(3)
    dev.poll()
    dev.reject()
    assert [(e.kind, e.value) for e in dev.poll()] == [(CashEventKind.RETURNED, 5000)]
    assert sim.stacked == []


@pytest.mark.parametrize(("fault", "kind"), [
    ("jam", CashEventKind.JAM), ("fraud", CashEventKind.FRAUD),
    ("cashbox_removed", CashEventKind.CASHBOX_REMOVED)])
def test_bill_faults(fault: str, kind: CashEventKind) -> None:
    dev, sim = bill()
    sim.set_fault(fault)
    assert kind in [e.kind for e in dev.poll()]


def test_rejected_bill() -> None:
    dev, sim = bill()
    dev.enable()
    sim.set_fault("rejected")
    sim.insert_bill(0)
    assert [e.kind for e in dev.poll()] == [CashEventKind.REJECTED]


def test_bill_while_disabled_is_an_attempt_not_a_credit() -> None:
    dev, sim = bill()
    sim.insert_bill(0)
    events = dev.poll()
    assert [e.kind for e in events] == [CashEventKind.REJECTED]


def test_corrupt_reply_is_retransmitted_on_ret() -> None:
    dev, sim = changer()
    dev.enable()
    sim.insert_coin(3)
    sim.set_fault("flip_bit", 1)
    assert [(e.kind, e.value) for e in dev.poll()] == [(CashEventKind.CREDIT, 50)]


def test_silent_peripheral() -> None:
    sim = MdbChangerSimulator()
    sim.set_fault("silent")
    dev = MdbCoinChanger(MdbLink(SimTransport(sim), response_timeout=0.02))
    with pytest.raises(NoResponseError, match="sim://mdb-changer"):
        dev.start()


def test_over_a_pty() -> None:
    with SimulatorOnPty(create("mdb-changer", auto_insert="3")) as served:
        dev = open_changer_on(served.port)
        dev.start()
        dev.enable()
        events = dev.poll() or dev.poll()
        assert [(e.kind, e.value) for e in events] == [(CashEventKind.CREDIT, 50)]
        dev.close()


def open_changer_on(port: str) -> MdbCoinChanger:
    return MdbCoinChanger(MdbLink(open_transport(port, baudrate=9600), response_timeout=0.5))


def test_open_helpers() -> None:
    dev = open_changer("sim://mdb-changer")
    dev.start()
    assert dev.status()["currency"] == "EUR"
    bv = open_bill_validator("sim://mdb-bill?auto_insert=2")
    bv.start()
    bv.enable()
    assert [e.kind for e in bv.poll()] == [CashEventKind.ESCROW]
    with pytest.raises(ConfigurationError, match="9-bit"):
        open_changer("/dev/ttyUSB0")


def test_pure_parsers_on_vector_payloads() -> None:
    setup = parse_changer_setup(bytes((3, 0x19, 0x78, 5, 2, 0, 0x3F, 1, 2, 4, 10, 20, 40))
                                + bytes(10))
    # vender coin_test.go "4109": deposited to cashbox, coin type 1, 9 in tube
    (event,) = parse_changer_poll(bytes.fromhex("4109"), setup, "c", "s:1")
    assert (event.kind, event.value, event.route) == (CashEventKind.CREDIT, 10, "cashbox")
    (event,) = parse_changer_poll(bytes.fromhex("521e"), setup, "c", "s:2")
    assert (event.kind, event.value, event.route) == (CashEventKind.CREDIT, 20, "tubes")
    from vendhw.devices.mdb import parse_bill_setup

    bsetup = parse_bill_setup(bytes((1, 0x19, 0x78, 0, 100, 2, 1, 0xF4, 0, 0, 0xFF, 5, 10, 20)))
    kinds = [e.kind for e in parse_bill_poll(bytes.fromhex("0609"), bsetup, "b", "s:1")]
    assert kinds == [CashEventKind.DEVICE_RESET, CashEventKind.DISABLED]
    (escrow, _) = parse_bill_poll(bytes.fromhex("9209"), bsetup, "b", "s:2")
    assert (escrow.kind, escrow.value) == (CashEventKind.ESCROW, 2000)


def test_9bit_write_runs() -> None:
    words = [(0x30, True), (0x01, False), (0xFF, False), (0x30, False)]
    assert runs_by_mode(words) == [(True, b"\x30"), (False, b"\x01\xff\x30")]


@pytest.mark.parametrize(("url", "opener", "kind"), [
    ("sim://mdb-changer?jam=1", open_changer, CashEventKind.JAM),
    ("sim://mdb-changer?fraud=yes", open_changer, CashEventKind.FRAUD),
    ("sim://mdb-bill?cashbox_removed", open_bill_validator, CashEventKind.CASHBOX_REMOVED),
])
def test_device_faults_in_a_sim_url_survive_the_hosts_reset(url: str, opener: Any,
                                                           kind: CashEventKind) -> None:
    dev = opener(url, response_timeout=0.1)
    try:
        dev.start()  # RESET, SETUP...: the fault is still reported afterwards
        assert [e.kind for e in dev.poll()] == [kind]
        assert dev.poll() == []
    finally:
        dev.close()


def test_a_fault_switched_off_reports_nothing() -> None:
    dev, sim = changer()
    sim.set_fault("jam", "0")
    sim.set_fault("fraud", False)
    assert dev.poll() == []


def test_changer_poll_is_walked_so_a_tube_count_is_not_taken_for_just_reset() -> None:
    dev, _ = changer()
    # coin type 2 to the tubes with 11 (0x0B) now in its tube, then the real JUST RESET
    assert dev._activities(bytes([0x52, 0x0B, 0x0B])) == [b"\x52\x0b", b"\x0b"]
    assert b"\x0b" not in dev._activities(bytes([0x52, 0x0B]))
    assert dev._activities(bytes([0x93, 0x0B, 0x21])) == [b"\x93\x0b", b"\x21"]


def test_what_came_with_just_reset_is_reported_at_the_first_poll() -> None:
    sim = MdbBillSimulator()
    sim.set_fault("cashbox_removed")  # queued; the host's RESET keeps it behind JUST RESET
    dev = MdbBillValidator(MdbLink(SimTransport(sim), response_timeout=0.1))
    dev.start()
    held = dev.poll()
    assert [e.kind for e in held] == [CashEventKind.CASHBOX_REMOVED]
    assert dev.poll() == []


@pytest.mark.parametrize(("scaling", "decimals"), [(10, 0), (100, 1), (1000, 2)])
def test_values_are_in_minor_units_whatever_the_devices_decimal_places(
        scaling: int, decimals: int) -> None:
    """vender bill_test.go TestBillScaling: credits 1, 5, 10, 50, 100 are the same notes."""
    from vendhw.devices.mdb import parse_bill_setup

    reply = bytes.fromhex(f"011810{scaling:04x}{decimals:02x}00c8001fff01050a3264") + bytes(11)
    assert parse_bill_setup(reply).bill_values[:5] == (1000, 5000, 10000, 50000, 100000)


def test_more_decimal_places_than_the_currency_is_refused() -> None:
    from vendhw.errors import UnexpectedReplyError

    with pytest.raises(UnexpectedReplyError, match="decimal places"):
        parse_changer_setup(bytes((3, 0x19, 0x78, 1, 3, 0, 1, 1)) + bytes(15))


def test_coins_acked_in_a_poll_whose_payout_check_fails_are_not_lost() -> None:
    """The changer ACKed a coin in the same POLL that ended a payout; TUBE STATUS then
    fails. The coin must still reach the journal at the next poll, once."""
    dev, sim = changer()
    dev.enable()
    dev.payout(100)
    dev.poll()  # payout busy
    sim.insert_coin(3)
    seen: list[CashEvent] = []
    real_tube_status = dev.tube_status

    def failing_tube_status() -> list[int]:
        raise NoResponseError("no MDB reply")

    dev.tube_status = failing_tube_status  # type: ignore[method-assign]
    with pytest.raises(NoResponseError):
        dev.poll(seen.append)
    dev.tube_status = real_tube_status  # type: ignore[method-assign]
    events = dev.poll(seen.append)
    kinds = [(e.kind, e.value) for e in seen]
    assert kinds.count((CashEventKind.CREDIT, 50)) == 1
    assert (CashEventKind.PAYOUT_DONE, 100) in kinds
    assert {e.event_id for e in events} >= {e.event_id for e in seen}


def test_level_3_payout_by_expansion_payout_counts_coins_by_payout_status() -> None:
    dev, sim = changer(alternative_payout="1")
    assert dev.alternative_payout and sim.features_enabled == 1  # FEATURE ENABLE at start
    dev.payout(270)
    done = payout_outcome(dev)
    assert (done.kind, done.value, done.requested) == (CashEventKind.PAYOUT_DONE, 270, 270)
    assert done.detail == {"coins": {"2": 1, "3": 1, "5": 1}, "measured_by": "payout status"}
    assert sim.paid_out == 270 and sim.tubes[:6] == [20, 20, 19, 9, 10, 9]


def test_level_3_payout_in_steps_of_200_units() -> None:
    dev, sim = changer(alternative_payout="1", tubes="0,0,0,0,0,50")
    dev.payout(5000)  # 1000 units of 5 cents: five EXPANSION PAYOUTs of 200
    done = payout_outcome(dev, polls=40)
    assert (done.kind, done.value) == (CashEventKind.PAYOUT_DONE, 5000)
    assert done.detail["coins"] == {"5": 25}
    assert sim.tubes[5] == 25


def test_level_3_payout_the_changer_cuts_short_is_incomplete() -> None:
    dev, sim = changer(alternative_payout="1")
    sim.set_fault("reset_during_payout")
    dev.payout(400)
    done = payout_outcome(dev)
    assert (done.kind, done.value, done.requested) == (
        CashEventKind.PAYOUT_INCOMPLETE, sim.paid_out, 400)
    assert done.value < 400


def test_a_command_from_another_thread_never_comes_between_poll_data_and_its_ack() -> None:
    """The poller has the changer's POLL data; a payout thread sends a command now. The
    command must wait for the ACK, or the ACK is late and the changer repeats its data."""
    import threading

    sim = MdbChangerSimulator()
    writes: list[bytes] = []
    other: list[threading.Thread] = []

    class Recording(SimTransport):
        armed = False

        def _write(self, data: bytes) -> None:
            writes.append(data)
            super()._write(data)

        def _read_some(self, timeout: float) -> bytes:
            out = super()._read_some(timeout)
            if out and self.armed:
                self.armed = False
                thread = threading.Thread(target=dev.disable)
                other.append(thread)
                thread.start()
                thread.join(0.2)  # without the lock it writes now, before our ACK
            return out

    transport = Recording(sim)
    dev = MdbCoinChanger(MdbLink(transport, response_timeout=0.5))
    dev.start()
    dev.enable()
    sim.insert_coin(4)
    transport.armed = True
    writes.clear()
    assert [e.value for e in dev.poll()] == [100]
    other[0].join()
    poll_block, ack = b"\xff\x00\x0b\x0b", b"\x00"
    assert writes[:2] == [poll_block, ack]
    assert writes[2].startswith(b"\xff\x00\x0c")  # then the other thread's COIN TYPE
