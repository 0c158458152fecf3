"""ccTalk hosts against their simulators: coin acceptor, bill validator, hopper, line faults."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from vendhw.devices.cash import CashEvent, CashEventKind
from vendhw.devices.cctalk import (
    CcTalkBillValidator,
    CcTalkBus,
    CcTalkCoinAcceptor,
    CcTalkHopper,
    Deliver,
    Op,
    Request,
    hopper_flags,
    open_bill_validator,
    open_coin_acceptor,
    open_device,
    open_hopper,
)
from vendhw.errors import (
    ConfigurationError,
    NakError,
    NoResponseError,
    ProtocolError,
    VendhwError,
)
from vendhw.framing.cctalk import CcTalkFramer, Header
from vendhw.machine.cash import CashAcceptor, CashJournal
from vendhw.sim.cctalk import CcTalkBillSimulator, CcTalkCoinSimulator, CcTalkHopperSimulator
from vendhw.transport import SimTransport, SimulatorOnPty

K = CashEventKind
T = TypeVar("T")


def bus(sim: Any, **options: Any) -> CcTalkBus:
    options.setdefault("reply_timeout", 0.05)
    return CcTalkBus(SimTransport(sim), **options)


def coin(**options: Any) -> tuple[CcTalkCoinAcceptor, CcTalkCoinSimulator]:
    sim = CcTalkCoinSimulator(reply_delay=0, **options)
    dev = CcTalkCoinAcceptor(bus(sim, checksum=options.get("checksum", "simple")))
    dev.start()
    return dev, sim


def note(**options: Any) -> tuple[CcTalkBillValidator, CcTalkBillSimulator]:
    sim = CcTalkBillSimulator(reply_delay=0, **options)
    dev = CcTalkBillValidator(bus(sim))
    dev.start()
    return dev, sim


def hopper(**options: Any) -> tuple[CcTalkHopper, CcTalkHopperSimulator]:
    options.setdefault("coin_time", 0.002)
    sim = CcTalkHopperSimulator(reply_delay=0, **options)
    dev = CcTalkHopper(bus(sim))
    dev.start()
    return dev, sim


def until(dev: Any, kinds: tuple[CashEventKind, ...], limit: int = 2000) -> list[CashEvent]:
    """Poll until an event of ``kinds`` arrives (bounded by count, not by time)."""
    seen: list[CashEvent] = []
    pause = threading.Event()
    for _ in range(limit):
        seen += dev.poll()
        if any(e.kind in kinds for e in seen):
            return seen
        pause.wait(0.002)  # a poll interval, so the device's own time can pass
    raise AssertionError(f"no {kinds} in {seen}")


def drive(op: Op[T], sim: Any, intercept: Callable[[Request, bytes], bytes | Exception]
          ) -> T:
    """Run a sans-I/O operation against a simulator directly, no transport at all.

    ``intercept(request, reply)`` may replace a reply with another or with an exception.
    """
    framer = CcTalkFramer()
    now = 0.0
    try:
        step = next(op)
        while True:
            if isinstance(step, Deliver):
                step = op.send(None)
                continue
            now += 0.01
            packet = framer.build(direction="host", dest=step.address, src=1,
                                  header=step.header, data=step.data)
            replies = sim.receive(packet, now)
            reply = framer.parse(replies[-1][1], "device") if replies else None
            if reply is None:
                outcome: bytes | Exception = NoResponseError("silent")
            elif reply["header"] == 5:
                outcome = NakError("NAK")
            else:
                outcome = bytes(reply["data"])
            outcome = intercept(step, outcome) if not isinstance(outcome, Exception) else outcome
            step = op.throw(outcome) if isinstance(outcome, Exception) else op.send(outcome)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


# --- coin acceptor ------------------------------------------------------------------------------


def test_start_identifies_and_leaves_the_acceptor_inhibited() -> None:
    dev, sim = coin()
    assert dev.identity.category == "Coin Acceptor"
    assert dev.identity.serial == sim.serial
    assert dev.values == {1: 5, 2: 10, 3: 20, 4: 50, 5: 100, 6: 200}
    assert dev.currency == "EUR"
    assert not sim.master_enabled and sim.mask == 0
    sim.insert_coin(6)
    events = dev.poll()
    assert [(e.kind, e.reason) for e in events] == [(K.REJECTED, "inhibited coin")]


def test_coins_are_credited_once_each() -> None:
    dev, sim = coin()
    dev.enable()
    assert sim.master_enabled and sim.mask == 0b111111
    for channel in (6, 1, 4):
        sim.insert_coin(channel)
    seen: list[CashEvent] = []
    events = dev.poll(seen.append)
    assert [(e.kind, e.value, e.channel) for e in events] == [
        (K.CREDIT, 200, 6), (K.CREDIT, 5, 1), (K.CREDIT, 50, 4)]
    assert seen == events and len({e.event_id for e in events}) == 3
    assert dev.poll() == []
    dev.disable()
    assert not sim.master_enabled


def test_channel_selection_and_value_override() -> None:
    sim = CcTalkCoinSimulator(reply_delay=0)
    dev = CcTalkCoinAcceptor(bus(sim), channels=[5, 6], coin_values={6: 199})
    dev.start()
    dev.enable()
    assert sim.mask == 0b110000
    sim.insert_coin(6)
    sim.insert_coin(1)
    events = dev.poll()
    assert [(e.kind, e.value) for e in events] == [(K.CREDIT, 199), (K.REJECTED, 0)]


def test_jam_fraud_and_reject_events() -> None:
    dev, sim = coin()
    dev.enable()
    sim.set_fault("jam")
    sim.set_fault("fraud")
    sim.set_fault("reject")
    sim.insert_coin(3)
    assert [e.kind for e in dev.poll()] == [K.JAM, K.FRAUD, K.REJECTED]


def test_crc16_variant_end_to_end() -> None:
    dev, sim = coin(checksum="crc16")
    dev.enable()
    sim.insert_coin(5)
    assert [e.value for e in dev.poll()] == [100]


def test_local_echo_is_removed() -> None:
    sim = CcTalkCoinSimulator(reply_delay=0, echo=True)
    dev = CcTalkCoinAcceptor(bus(sim, echo=True))
    dev.start()
    dev.enable()
    sim.insert_coin(2)
    assert [e.value for e in dev.poll()] == [10]


def test_garbage_and_corrupt_replies_are_survived() -> None:
    dev, sim = coin()
    dev.enable()
    sim.insert_coin(2)
    sim.set_fault("garbage", "01 FF 00 05 AA 55")
    sim.set_fault("flip_bit", 1)  # the first reply is corrupt: the host asks again
    assert [e.value for e in dev.poll()] == [10]
    assert dev.bus.link.deframer.stats.checksum_errors + len(dev.bus.link.garbage) > 0


def test_silence_names_the_port_and_address() -> None:
    sim = CcTalkCoinSimulator(reply_delay=0)
    sim.set_fault("silent")
    dev = CcTalkCoinAcceptor(bus(sim))
    with pytest.raises(NoResponseError, match=r"address 2 did not answer SIMPLE POLL.*"
                                              r"sim://cctalk-coin"):
        dev.start()


def test_wrong_address_is_not_answered() -> None:
    sim = CcTalkCoinSimulator(reply_delay=0)
    dev = CcTalkCoinAcceptor(bus(sim), address=7)
    with pytest.raises(NoResponseError):
        dev.start()
    assert sim.received == []
    with pytest.raises(ConfigurationError):
        CcTalkCoinAcceptor(bus(sim), address=1)


def test_reset_device_restores_power_up_defaults() -> None:
    dev, sim = coin()
    dev.enable()
    sim.insert_coin(1)
    dev.poll()
    dev.reset_device()
    assert sim.buffer.counter == 0 and not sim.master_enabled
    assert [e.kind for e in dev.poll()] == [K.DEVICE_RESET]
    assert sim.master_enabled  # enabled again, as the host wanted


def test_asyncio_runner_drives_the_same_core() -> None:
    dev, sim = coin()
    dev.enable()
    sim.insert_coin(6)
    seen: list[CashEvent] = []
    events = asyncio.run(dev.bus.arun(dev.poll_op(), seen.append))
    assert [e.value for e in events] == [200] and seen == events


def test_auto_insert_option_feeds_coins_once_enabled() -> None:
    dev = open_coin_acceptor("sim://cctalk-coin?auto_insert=1,6&insert_interval=0&reply_delay=0")
    dev.start()
    assert dev.poll() == []  # inhibited: nothing is fed yet
    dev.enable()
    events = until(dev, (K.CREDIT,))
    events += dev.poll()
    assert [e.value for e in events if e.kind is K.CREDIT] == [5, 200]
    dev.close()


# --- bill validator ---------------------------------------------------------------------------


def test_note_escrowed_then_stacked() -> None:
    dev, sim = note()
    assert dev.values == {1: 500, 2: 1000, 3: 2000, 4: 5000} and sim.mode == 0b11
    dev.enable()
    sim.insert_bill(3)
    (escrow,) = dev.poll()
    assert (escrow.kind, escrow.value, escrow.channel) == (K.ESCROW, 2000, 3)
    dev.stack()
    (credit,) = dev.poll()
    assert (credit.kind, credit.value, credit.route) == (K.CREDIT, 2000, "cashbox")
    assert sim.stacked == [3]


def test_note_escrowed_then_returned() -> None:
    dev, sim = note()
    dev.enable()
    sim.insert_bill(4)
    assert [e.kind for e in dev.poll()] == [K.ESCROW]
    dev.reject()
    assert [e.kind for e in dev.poll()] == [K.RETURNED]
    assert sim.returned == [4] and sim.stacked == []


def test_route_with_empty_escrow_is_a_device_fault() -> None:
    dev, _ = note()
    with pytest.raises(VendhwError, match="escrow is empty"):
        dev.stack()


def test_lost_route_ack_is_not_an_error_and_not_routed_twice() -> None:
    dev, sim = note()
    dev.enable()
    sim.insert_bill(1)
    dev.poll()
    dropped = []

    def lose_first_route_ack(request: Request, reply: bytes) -> bytes | Exception:
        if request.header == Header.ROUTE_BILL and not dropped:
            dropped.append(reply)
            return NoResponseError("reply lost")
        return reply

    drive(dev.route_op(1), sim, lose_first_route_ack)
    assert sim.stacked == [1] and dropped == [b""]
    assert [(e.kind, e.value) for e in dev.poll()] == [(K.CREDIT, 500)]


def test_bill_faults() -> None:
    dev, sim = note()
    dev.enable()
    for fault in ("jam", "fraud", "cashbox_removed", "cashbox_replaced"):
        sim.set_fault(fault)
    assert [e.kind for e in dev.poll()] == [K.JAM, K.FRAUD, K.CASHBOX_REMOVED,
                                            K.CASHBOX_REPLACED]
    sim.set_fault("reject")
    sim.insert_bill(2)
    assert [(e.kind, e.reason) for e in dev.poll()] == [
        (K.REJECTED, "invalid bill (validation fail)")]


def test_without_escrow_notes_are_stacked_at_once() -> None:
    sim = CcTalkBillSimulator(reply_delay=0)
    dev = CcTalkBillValidator(bus(sim), escrow=False)
    dev.start()
    dev.enable()
    sim.insert_bill(2)
    assert [(e.kind, e.value) for e in dev.poll()] == [(K.CREDIT, 1000)]


# --- hopper ----------------------------------------------------------------------------------


def test_payout_runs_to_done() -> None:
    dev, sim = hopper()
    assert (dev.coin_value, dev.currency) == (100, "EUR")
    assert not sim.enabled
    dev.payout(700)
    events = until(dev, (K.PAYOUT_DONE,))
    assert events[0].kind is K.PAYOUT_STARTED and events[0].requested == 700
    done = events[-1]
    assert (done.value, done.requested, done.detail["coins_paid"]) == (700, 700, 7)
    assert sim.inventory == 93 and len({e.event_id for e in events}) == len(events)


def test_payout_progress_is_reported_while_paying() -> None:
    dev, _ = hopper(coin_time=0.02)
    dev.payout(1000)
    events = until(dev, (K.PAYOUT_DONE,))
    progress = [e.value for e in events if e.kind is K.PAYOUT_PROGRESS]
    assert progress and progress == sorted(progress) and progress[-1] < 1000


def test_empty_hopper_ends_incomplete() -> None:
    dev, _ = hopper(coins=3)
    dev.payout(500)
    last = until(dev, (K.PAYOUT_INCOMPLETE, K.PAYOUT_DONE))[-1]
    assert last.kind is K.PAYOUT_INCOMPLETE and last.value == 300
    assert last.detail["coins_unpaid"] == 2 and "payout timeout" in (last.reason or "")


def test_jam_ends_incomplete_and_emergency_stop() -> None:
    dev, sim = hopper()
    sim.set_fault("jam", 2)
    dev.payout(500)
    last = until(dev, (K.PAYOUT_INCOMPLETE, K.PAYOUT_DONE))[-1]
    assert last.kind is K.PAYOUT_INCOMPLETE and last.value == 200
    assert "maximum current" in (last.reason or "")
    slow, slow_sim = hopper(coin_time=10.0)
    slow.payout(300)
    assert slow.emergency_stop() == 3
    last = until(slow, (K.PAYOUT_INCOMPLETE, K.PAYOUT_DONE))[-1]
    assert last.kind is K.PAYOUT_INCOMPLETE and last.value == 0
    assert not slow_sim.enabled


def test_reset_during_payout_is_reconciled_from_the_dispense_counter() -> None:
    dev, sim = hopper()
    sim.set_fault("reset_during_payout", 4)
    dev.payout(900)
    events = until(dev, (K.PAYOUT_INCOMPLETE, K.PAYOUT_DONE))
    assert [e.kind for e in events][-2:] == [K.DEVICE_RESET, K.PAYOUT_INCOMPLETE]
    last = events[-1]
    assert (last.value, last.requested) == (400, 900) and sim.paid_out == [1] * 4
    assert "power down during payout" in last.detail["flags"]
    dev.payout(200)  # the hopper works again after the reset, without double paying
    assert until(dev, (K.PAYOUT_DONE,))[-1].value == 200
    assert len(sim.paid_out) == 6


def test_lost_dispense_reply_is_not_resent() -> None:
    dev, sim = hopper()

    def lose_dispense_reply(request: Request, reply: bytes) -> bytes | Exception:
        return NoResponseError("lost") if request.header == Header.DISPENSE_HOPPER_COINS else reply

    payout = drive(dev.payout_op(300), sim, lose_dispense_reply)
    assert sim.received.count(Header.DISPENSE_HOPPER_COINS) == 1
    assert payout.counter == sim.counter == 1


def test_unanswered_dispense_is_sent_once_more_then_refused() -> None:
    dev, sim = hopper()
    calls = []

    def swallow_dispense(request: Request, reply: bytes) -> bytes | Exception:
        if request.header == Header.DISPENSE_HOPPER_COINS:
            calls.append(1)
            sim.counter, sim.remaining, sim.enabled = 0, 0, True  # it never arrived
            return NoResponseError("lost")
        return reply

    with pytest.raises(ProtocolError, match="not confirmed"):
        drive(dev.payout_op(300), sim, swallow_dispense)
    assert len(calls) == 2


def test_payout_refuses_bad_amounts_before_any_coin_moves() -> None:
    dev, sim = hopper()
    with pytest.raises(ConfigurationError, match="multiple"):
        dev.payout(150)
    with pytest.raises(ConfigurationError, match="at most 255"):
        dev.payout(100 * 256)
    with pytest.raises(ValueError):
        dev.payout(0)
    dev.payout(100)
    with pytest.raises(ProtocolError, match="in progress"):
        dev.payout(100)
    assert sim.received.count(Header.DISPENSE_HOPPER_COINS) == 1


def test_wrong_serial_security_is_refused_by_the_hopper() -> None:
    sim = CcTalkHopperSimulator(reply_delay=0, coin_time=0.002)
    dev = CcTalkHopper(bus(sim), security="none")
    dev.start()
    with pytest.raises(NakError):
        dev.payout(100)
    plain = CcTalkHopperSimulator(reply_delay=0, coin_time=0.002, security="none")
    ok = CcTalkHopper(bus(plain), security="none")
    ok.start()
    ok.payout(100)
    assert until(ok, (K.PAYOUT_DONE,))[-1].value == 100


# --- openers, pty, the machine -------------------------------------------------------------------


def test_open_device_by_kind_and_url() -> None:
    dev = open_device("sim://cctalk-hopper?reply_delay=0", coin_value=50)
    assert isinstance(dev, CcTalkHopper) and dev.coin_value == 50
    dev.close()
    with pytest.raises(ConfigurationError):
        open_device("/dev/ttyUSB9")
    with pytest.raises(ConfigurationError):
        open_coin_acceptor("sim://cctalk-coin", checksum="crc8")


def test_flows_over_a_real_pty() -> None:
    with SimulatorOnPty(CcTalkCoinSimulator(echo=True)) as served:
        dev = open_coin_acceptor(served.port)
        try:
            dev.start()
            dev.enable()
            assert isinstance(served.simulator, CcTalkCoinSimulator)
            served.simulator.insert_coin(6)
            served.simulator.insert_coin(3)
            assert [e.value for e in until(dev, (K.CREDIT,))] == [200, 20]
            assert dev.bus.transport.baudrate == 9600
        finally:
            dev.close()
    with SimulatorOnPty(CcTalkHopperSimulator(coin_time=0.005, reset_during_payout=2)) as hp:
        dev2 = open_hopper(hp.port)
        try:
            dev2.start()
            dev2.payout(500)
            last = until(dev2, (K.PAYOUT_INCOMPLETE, K.PAYOUT_DONE))[-1]
            assert (last.kind, last.value) == (K.PAYOUT_INCOMPLETE, 200)
            dev2.payout(300)
            assert until(dev2, (K.PAYOUT_DONE,))[-1].value == 300
        finally:
            dev2.close()
    with SimulatorOnPty(CcTalkBillSimulator()) as bv:
        dev3 = open_bill_validator(bv.port)
        try:
            dev3.start()
            dev3.enable()
            assert isinstance(bv.simulator, CcTalkBillSimulator)
            bv.simulator.insert_bill(2)
            assert [e.kind for e in until(dev3, (K.ESCROW,))] == [K.ESCROW]
            dev3.stack()
            assert [e.value for e in until(dev3, (K.CREDIT,))] == [1000]
        finally:
            dev3.close()


def test_cash_acceptor_journals_ccTalk_credit_exactly_once(tmp_path: Path) -> None:
    coins, coin_sim = coin()
    notes, note_sim = note()
    journal = CashJournal(tmp_path / "cash.db")
    machine = CashAcceptor([coins, notes], journal)
    machine.enable()
    coin_sim.insert_coin(6)
    note_sim.insert_bill(1)
    machine.poll_once()  # coin credited, note escrowed then stacked by the policy
    machine.poll_once()  # the stacked note's credit
    machine.poll_once()
    assert journal.balance() == 700


# TEST HOPPER (163) register 2, Part 2 v4.7 §3.90 (Kosta-Git/cc-talk-docs
# docs/cctalk-part-2-v4-7.pdf; Kosta-Git/cc-talk-rs cc_talk_core/src/common/hopper_flags.rs;
# 4gsim/dotnet-cctalk CcTalk/Hopper/CcTalkHopperFlag.cs 1024..8192): bits 2-6 are not the
# "checksum A-D" of older issues.
@pytest.mark.parametrize(("bit", "name"), [
    (2, "use other hopper for change"), (3, "opto fraud: finger / slider mis-match"),
    (4, "motor reverse limit reached"), (5, "inductive coil fault"),
    (6, "NV memory checksum error"),
])
def test_test_hopper_register_2_bits_follow_spec_4_7(bit: int, name: str) -> None:
    assert hopper_flags(bytes((0, 1 << bit, 0))) == [name]


def test_payout_stopped_by_the_reverse_limit_gives_that_reason() -> None:
    dev, sim = hopper()
    sim.set_fault("reverse_limit", 2)
    dev.payout(500)
    last = until(dev, (K.PAYOUT_INCOMPLETE, K.PAYOUT_DONE))[-1]
    assert last.kind is K.PAYOUT_INCOMPLETE and last.value == 200
    assert last.detail["flags"] == ["motor reversed during last payout to clear a jam",
                                    "motor reverse limit reached"]
    assert "motor reverse limit reached" in (last.reason or "")
    assert "checksum" not in (last.reason or "")
