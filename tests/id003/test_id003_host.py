"""ID-003 host against its simulator: bring-up, escrow, credit before ACK, faults, pty, CLI."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from cashpoll import poll_until
from click.testing import CliRunner

from vendhw.cli import cli
from vendhw.devices.cash import CashEvent, CashEventKind
from vendhw.devices.id003 import Id003Acceptor, StatusTracker, open_device
from vendhw.errors import ConfigurationError, NoResponseError
from vendhw.machine.cash import CashAcceptor, CashJournal
from vendhw.sim.id003 import Id003Simulator
from vendhw.transport import SimTransport, SimulatorOnPty

K = CashEventKind


def acceptor(sim: Id003Simulator | None = None, **options: Any
             ) -> tuple[Id003Acceptor, Id003Simulator]:
    sim = sim or Id003Simulator(reply_delay=0, speed=30)
    options.setdefault("reply_timeout", 0.05)
    dev = Id003Acceptor(SimTransport(sim), **options)
    dev.start()
    return dev, sim



def test_tracker_reports_state_changes_once_and_one_credit_per_note() -> None:
    tracker = StatusTracker("dev", {0x61: 500}, "EUR", session="s")
    assert [e.kind for e in tracker.update(0x13, b"\x61")] == [K.ESCROW]
    assert tracker.update(0x13, b"\x61") == []
    credit = tracker.update(0x15, b"")
    assert [(e.kind, e.value, e.event_id) for e in credit] == [
        (K.CREDIT, 500, "id003:dev/s/1/credit")]
    assert tracker.update(0x15, b"")[0].event_id == credit[0].event_id  # not yet ACKed
    tracker.credited = True
    assert tracker.update(0x15, b"") == []  # a repeat after a lost ACK
    assert [e.kind for e in tracker.update(0x44, b"")] == [K.CASHBOX_REMOVED]
    assert tracker.update(0x44, b"") == []
    assert [e.kind for e in tracker.update(0x11, b"")] == [K.CASHBOX_REPLACED]
    (rejected,) = tracker.update(0x17, b"\x72")
    assert rejected.reason == "magnetic pattern error"
    (failure,) = tracker.update(0x49, b"\xa6")
    assert failure.kind is K.FAULT and failure.reason == "transport motor failure"


def test_start_resets_initialises_and_leaves_it_inhibited() -> None:
    dev, sim = acceptor()
    assert sim.received[:3] == [0x88, 0x8A, 0x40]  # version, CURRENCY ASSIGN, RESET
    assert sim.settings[0xC3] == b"\x01" and not sim.enabled
    status = dev.status()
    assert status["status"] == "DISABLE/INHIBIT" and status["version"].startswith("vendhw-sim")
    dev.enable()
    assert sim.enabled and dev.status()["status"] == "ENABLE/IDLING"


def test_note_escrowed_then_stacked_is_credited_once(tmp_path: Path) -> None:
    dev, sim = acceptor()
    journal = CashJournal(tmp_path / "cash.db")
    cash = CashAcceptor([dev], journal)
    cash.enable()
    sim.insert_note(3)
    seen = poll_until(cash.poll_once, {K.CREDIT}, seconds=3)
    assert [e.kind for e in seen] == [K.ESCROW, K.CREDIT]
    assert journal.balance() == 2000 and sim.stacked == [0x63]
    deadline = time.monotonic() + 2
    while sim.state != 0x11 and time.monotonic() < deadline:
        cash.poll_once()
        time.sleep(0.005)
    assert journal.balance() == 2000 and sim.state == 0x11  # STACKED, then idle


def test_no_ack_until_the_sink_took_the_credit(tmp_path: Path) -> None:
    dev, sim = acceptor()
    dev.enable()
    sim.insert_note(1)
    poll_until(dev.poll, {K.ESCROW})
    dev.stack()
    ids: list[str] = []

    def failing(event: CashEvent) -> None:
        if event.kind is K.CREDIT:
            ids.append(event.event_id)
            raise OSError("disk full")

    deadline = time.monotonic() + 2
    while len(ids) < 2 and time.monotonic() < deadline:
        try:
            dev.poll(failing)
        except OSError:
            pass
    assert len(ids) == 2 and ids[0] == ids[1]
    assert sim.state == 0x15 and 0x50 not in sim.received  # still VEND VALID, no ACK sent
    journal = CashJournal(tmp_path / "cash.db")
    credits = poll_until(dev.poll, {K.CREDIT}, sink=journal.record)
    assert [e.event_id for e in credits if e.kind is K.CREDIT] == [ids[0]]
    assert 0x50 in sim.received and journal.balance() == 500


def test_lost_ack_means_vend_valid_again_but_no_second_credit() -> None:
    dev, sim = acceptor()
    dev.enable()
    sim.insert_note(2)
    poll_until(dev.poll, {K.ESCROW})
    dev.stack()
    original = sim.handle

    def lose_first_ack(code: int, data: bytes) -> Any:
        if code == 0x50 and sim.received.count(0x50) == 1:
            return None  # the ACK never arrived
        return original(code, data)

    sim.handle = lose_first_ack  # type: ignore[method-assign]
    credits = []
    for _ in range(60):
        credits += [e for e in dev.poll() if e.kind is K.CREDIT]
        time.sleep(0.005)
    assert len(credits) == 1 and sim.received.count(0x50) >= 2 and sim.stacked == [0x62]


def test_return_hold_and_rejection_reason() -> None:
    dev, sim = acceptor()
    dev.enable()
    sim.insert_note(4)
    poll_until(dev.poll, {K.ESCROW})
    dev.hold()
    assert sim.state == 0x19
    dev.reject()
    assert [e.kind for e in poll_until(dev.poll, {K.RETURNED})][-1] is K.RETURNED
    sim.set_fault("rejected", "0x7d")
    deadline = time.monotonic() + 2
    while sim.state != 0x11 and time.monotonic() < deadline:
        dev.poll()
    sim.insert_note(1)
    rejected = poll_until(dev.poll, {K.REJECTED})
    assert rejected[-1].reason == "length error" and sim.stacked == []


def test_stacking_twice_is_impossible_when_the_ack_was_lost() -> None:
    dev, sim = acceptor()
    dev.enable()
    sim.insert_note(1)
    poll_until(dev.poll, {K.ESCROW})
    original = sim.handle

    def lose_stack_ack(code: int, data: bytes) -> Any:
        answer = original(code, data)
        return None if code == 0x41 else answer  # executed, but the ACK is lost

    sim.handle = lose_stack_ack  # type: ignore[method-assign]
    dev.stack()  # the status says STACKING: no second STACK-1
    sim.handle = original  # type: ignore[method-assign]
    assert sim.received.count(0x41) == 1
    assert [e.value for e in poll_until(dev.poll, {K.CREDIT}) if e.kind is K.CREDIT] == [500]


def test_jam_cheat_stacker_and_failure_are_reported_once() -> None:
    dev, sim = acceptor()
    dev.enable()
    dev.poll()
    sim.set_fault("jam")
    assert [e.kind for e in dev.poll()] == [K.JAM] and dev.poll() == []
    sim.set_fault("jam", False)
    sim.set_fault("stacker_open")
    assert [e.kind for e in dev.poll()] == [K.CASHBOX_REMOVED]
    sim.set_fault("stacker_open", False)
    assert [e.kind for e in dev.poll()] == [K.CASHBOX_REPLACED]
    sim.set_fault("cheated")
    assert [e.kind for e in dev.poll()] == [K.FRAUD]
    sim.set_fault("cheated", False)
    sim.set_fault("failure", "0xa5")
    (fault,) = dev.poll()
    assert fault.kind is K.FAULT and fault.reason == "transport motor speed failure"


def test_power_up_in_operation_reinitialises_and_flags_a_bill_in_the_stacker() -> None:
    dev, sim = acceptor()
    dev.enable()
    dev.poll()
    sim.bill_in_stacker = True
    sim.set_fault("reset")
    events = dev.poll()
    assert [e.kind for e in events] == [K.DEVICE_RESET, K.FAULT]
    assert "credited is unknown" in (events[1].reason or "")
    assert sim.enabled and dev.stats["resets"] == 2


def test_silent_acceptor_and_garbage_on_the_line() -> None:
    sim = Id003Simulator(reply_delay=0)
    sim.set_fault("silent")
    dev = Id003Acceptor(SimTransport(sim), reply_timeout=0.01, retries=1)
    with pytest.raises(NoResponseError, match=r"0x88 after 2 attempts.*sim://id003"):
        dev.start()
    dev, sim = acceptor()
    sim.set_fault("garbage", "fc 09 00 11 22")
    assert dev.status()["status"] == "DISABLE/INHIBIT"
    sim.set_fault("flip_bit", 1)
    assert dev.status()["status"] == "DISABLE/INHIBIT" and dev.stats["retries"] >= 1


def test_values_option_and_bad_values() -> None:
    dev = open_device("sim://id003?speed=30", values="0x61:100,0x62:200", currency="USD",
                      reply_timeout="0.05")
    assert dev.values == {0x61: 100, 0x62: 200} and dev.currency == "USD"
    dev.close()
    with pytest.raises(ConfigurationError):
        open_device("sim://id003", values=",")


def test_pty_flow_escrow_stack_and_return() -> None:
    sim = Id003Simulator(speed=20)
    with SimulatorOnPty(sim) as served:
        dev = open_device(served.port, reply_timeout="0.3")
        try:
            dev.start()
            dev.enable()
            sim.insert_note(2)
            poll_until(dev.poll, {K.ESCROW}, seconds=5)
            dev.stack()
            assert [e.value for e in poll_until(dev.poll, {K.CREDIT}, seconds=5)
                    if e.kind is K.CREDIT] == [1000]
            deadline = time.monotonic() + 3
            while sim.state != 0x11 and time.monotonic() < deadline:
                dev.poll()
            sim.insert_note(1)
            poll_until(dev.poll, {K.ESCROW}, seconds=5)
            dev.reject()
            poll_until(dev.poll, {K.RETURNED}, seconds=5)
            assert sim.stacked == [0x62]
        finally:
            dev.close()


def test_cli_status_and_accept() -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["cash", "status", "--port", "sim://id003?speed=30",
                                 "--protocol", "id003", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.splitlines()[0])["status"] == "DISABLE/INHIBIT"
    result = runner.invoke(cli, ["cash", "accept", "--port",
                                 "sim://id003?speed=30&auto_insert=1,3&insert_interval=0.05",
                                 "--seconds", "1.5", "--interval", "0.01", "--json"])
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    credits = [(e["kind"], e["value"]) for e in events if e["kind"] == "credit"]
    assert credits == [("credit", 500), ("credit", 2000)]


# --- CURRENCY ASSIGN (0x8A) and reject reason 0x7F ---------------------------------------------


def test_denominations_come_from_the_currency_assign_table() -> None:
    sim = Id003Simulator(reply_delay=0, speed=30, country="0x01",
                         denominations="1,0,5,10,20,50,100,0")
    dev, _ = acceptor(sim)
    assert dev.values == {0x61: 100, 0x63: 500, 0x64: 1000, 0x65: 2000, 0x66: 5000,
                          0x67: 10000}
    assert dev.currency == "USD" and dev.status()["values_source"] == "currency assign"
    dev.enable()
    assert sim.settings[0xC0] == bytes((0b1000_0010, 0xFF))  # 0x62, 0x68 stay inhibited
    sim.insert_note(3)
    escrow = next(e for e in poll_until(dev.poll, {K.ESCROW}, seconds=3) if e.kind is K.ESCROW)
    assert (escrow.value, escrow.currency) == (500, "USD")
    dev.stack()
    credit = next(e for e in poll_until(dev.poll, {K.CREDIT}, seconds=3) if e.kind is K.CREDIT)
    assert (credit.value, credit.currency) == (500, "USD") and sim.stacked == [0x63]


def test_values_option_overrides_the_table_and_skips_the_request() -> None:
    dev, sim = acceptor(values={0x61: 123}, currency="GBP")
    assert dev.values == {0x61: 123} and dev.currency == "GBP"
    assert 0x8A not in sim.received and dev.status()["values_source"] == "values="


def test_unknown_country_byte_keeps_the_configured_currency() -> None:
    dev, _ = acceptor(currency="EUR")  # the simulator's default table: country byte 0
    assert dev.currency == "EUR" and dev.values[0x67] == 50000


class _NoCurrencyAssign(Id003Simulator):
    def handle(self, code: int, data: bytes) -> tuple[int, bytes] | None:
        return (0x4B, b"") if code == 0x8A else super().handle(code, data)


def test_an_acceptor_without_currency_assign_keeps_the_defaults() -> None:
    dev, _ = acceptor(_NoCurrencyAssign(reply_delay=0, speed=30))
    assert dev.values[0x61] == 500 and dev.status()["values_source"] == "default"


def test_reject_reason_0x7f_is_named() -> None:
    dev, sim = acceptor()
    dev.enable()
    sim.set_fault("rejected", 0x7F)
    sim.insert_note(1)
    events = poll_until(dev.poll, {K.REJECTED}, seconds=3)
    rejected = next(e for e in events if e.kind is K.REJECTED)
    assert rejected.reason == "true bill error"


class _SilentToCurrencyAssign(Id003Simulator):
    def handle(self, code: int, data: bytes) -> tuple[int, bytes] | None:
        return None if code == 0x8A else super().handle(code, data)


def test_an_acceptor_silent_to_currency_assign_still_starts_with_the_defaults() -> None:
    dev, sim = acceptor(_SilentToCurrencyAssign(reply_delay=0, speed=30))
    assert dev.values[0x67] == 50000 and dev.status()["values_source"] == "default"
    assert 0x40 in sim.received  # RESET followed


@pytest.mark.parametrize("options", [{"denominations": "257"}, {"country": "300"},
                                     {"denominations": "-5"}])
def test_simulator_rejects_a_table_it_cannot_send(options: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError):
        Id003Simulator(**options)
