"""SSP/eSSP host against the SMART Payout simulator: packets, eSSP, flows, faults, pty, CLI."""

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
from vendhw.devices.ssp import (
    EventMapper,
    SspDevice,
    SspResponseError,
    SspSession,
    money,
    open_device,
    parse_setup,
)
from vendhw.errors import ChecksumError, NoResponseError, NotSupportedError, SequenceError
from vendhw.framing.essp import EsspCipher, KeyAgreement, aes_key, is_prime, random_prime
from vendhw.framing.ssp import SspFramer, decode_events
from vendhw.machine.cash import CashAcceptor, CashJournal
from vendhw.sim.ssp import SspSimulator
from vendhw.transport import SimTransport, SimulatorOnPty

K = CashEventKind


def device(sim: SspSimulator | None = None, **options: Any) -> tuple[SspDevice, SspSimulator]:
    sim = sim or SspSimulator(reply_delay=0, speed=50)
    options.setdefault("reply_timeout", 0.05)
    options.setdefault("retries", 3)
    dev = SspDevice(SimTransport(sim), **options)
    dev.start()
    return dev, sim



# --- eSSP layer --------------------------------------------------------------------------------


def test_essp_known_answer_vector_decrypts() -> None:
    frame = bytes.fromhex("7F80117E8601F3A785EC6F4B3D0FF0FED48D16642A23")
    cipher = EsspCipher(bytes.fromhex("67452301674523015EFAE50D00000000"))
    parsed = SspFramer().parse(frame)
    assert parsed["command"] == "ENCRYPTED"
    plain = cipher.decrypt(bytes(parsed["encrypted"]))
    assert plain[:7] == bytes((2, 0, 0, 0, 0, 0x06, 0x06))  # HOST PROTOCOL 6, eCOUNT 0
    # As a host reply it would carry the count of the next command: 0 is that count here.
    assert cipher.open(bytes(parsed["encrypted"])) == bytes((0x06, 0x06))
    assert cipher.count == 0


def test_essp_seal_open_round_trip_and_count_check() -> None:
    key = aes_key(0x1122334455667788)
    host, other = EsspCipher(key), EsspCipher(key)
    sealed = host.seal(b"\x07")
    assert sealed[0] == 0x7E and (len(sealed) - 1) % 16 == 0 and host.count == 1
    assert other.open(sealed[1:]) == b"\x07"  # count 0 is what `other` expects
    other.seal(b"\x07")
    with pytest.raises(SequenceError, match="count 0, expected 1"):
        other.open(sealed[1:])  # a replayed packet is refused
    tampered = bytearray(host.seal(b"\x07"))
    tampered[5] ^= 1
    with pytest.raises(ChecksumError):
        other.open(bytes(tampered[1:]))


def test_key_agreement_gives_both_sides_one_key() -> None:
    host = KeyAgreement.new()
    assert host.generator > host.modulus and is_prime(host.generator) and is_prime(host.modulus)
    slave = KeyAgreement(host.generator, host.modulus)
    assert host.negotiated_key(slave.inter_key) == slave.negotiated_key(host.inter_key)
    assert not is_prime(host.generator * host.modulus)
    assert random_prime(16).bit_length() == 16


# --- packet layer and parsers ------------------------------------------------------------------


def test_session_toggles_flag_and_sync_sets_one() -> None:
    session = SspSession()
    framer = SspFramer()
    assert session.sync() == bytes.fromhex("7F80011165 82".replace(" ", ""))
    first = framer.parse(session.command(b"\x07"))
    second = framer.parse(session.command(b"\x07"))
    assert (first["seq"], second["seq"]) == (0, 1)


def test_parse_setup_every_format() -> None:
    # GA138 example (validator, protocol 5): GBP, 3 channels 5/10/20.
    example = bytes.fromhex("0030313030474250000001030 50A14020202400000 05".replace(" ", ""))
    info = parse_setup(example)
    assert (info.unit_type, info.firmware, info.currency, info.protocol_version) == (
        0, "0100", "GBP", 5)
    assert [c.number for c in info.channels] == [1, 2, 3]
    # Validator, protocol 7: expanded currencies and values, real value multiplier 100.
    v7 = (b"\x00" + b"0420" + b"EUR" + (0).to_bytes(3, "big") + b"\x02" + b"\x00\x00"
          + b"\x00\x00" + (100).to_bytes(3, "big") + b"\x07" + b"EURGBP"
          + (5).to_bytes(4, "little") + (10).to_bytes(4, "little"))
    info = parse_setup(v7)
    assert [(c.value, c.currency) for c in info.channels] == [(500, "EUR"), (1000, "GBP")]
    # SMART Hopper, protocol 5 then 6: 2-byte coin values in cents.
    hopper5 = b"\x03" + b"0110" + b"EUR" + b"\x05" + b"\x02" + b"\x05\x00\x64\x00"
    assert [c.value for c in parse_setup(hopper5).channels] == [5, 100]
    hopper6 = b"\x03" + b"0110" + b"EUR" + b"\x06" + b"\x01" + b"\xc8\x00" + b"GBP"
    info = parse_setup(hopper6)
    assert info.unit == "SMART Hopper" and [(c.value, c.currency) for c in info.channels] == [
        (200, "GBP")]


def test_decode_events_protocol_versions() -> None:
    v6 = decode_events(bytes.fromhex("DC 01 F4010000 E8030000 455552".replace(" ", "")), 6)
    assert v6 == [{"event": "INCOMPLETE PAYOUT", "code": 0xDC,
                   "values": [{"value": 500, "requested": 1000, "currency": "EUR"}]}]
    v5 = decode_events(bytes.fromhex("DA 64000000".replace(" ", "")), 5)
    assert v5 is not None and v5[0]["values"][0]["value"] == 100
    error = decode_events(bytes.fromhex("B1 01 88130000 474250 01".replace(" ", "")), 6)
    assert error is not None and error[0]["error"] == 1
    assert money(500, "EUR", 6) == bytes.fromhex("F4010000455552")


def test_event_mapper_reports_state_changes_once() -> None:
    mapper = EventMapper("dev", "EUR")
    jam = [{"event": "UNSAFE NOTE JAM", "code": 0xE9}]
    assert [e.kind for e in mapper.map(jam, ["a"])] == [K.JAM]
    assert mapper.map(jam, ["b"]) == []
    assert mapper.map([], []) == []
    assert [e.kind for e in mapper.map(jam, ["c"])] == [K.JAM]  # a new jam after clearing


# --- flows against the simulator ---------------------------------------------------------------


def test_start_agrees_key_and_reads_setup() -> None:
    dev, sim = device()
    status = dev.status()
    assert status["unit"] == "SMART Payout" and status["protocol_version"] == 8
    assert status["encrypted"] is True and dev.currency == "EUR"
    assert {k: v["value"] for k, v in status["channels"].items()} == {
        "1": 500, "2": 1000, "3": 2000, "4": 5000}
    assert sim.cipher is not None and sim.inhibits == 0 and not sim.enabled
    assert 0x4C in sim.executed and sim.payout_enabled


def test_note_escrow_then_stack_credits_once_through_the_journal(tmp_path: Path) -> None:
    dev, sim = device()
    journal = CashJournal(tmp_path / "cash.db")
    acceptor = CashAcceptor([dev], journal)
    acceptor.enable()
    sim.insert_note(3)
    kinds = [e.kind for e in poll_until(acceptor.poll_once, {K.CREDIT})]
    assert kinds == [K.ESCROW, K.CREDIT]  # the power-up start() handled is not reported
    assert journal.balance() == 2000 and sim.credited == [2000]


def test_refused_sink_means_no_event_ack_and_the_same_event_id_again(tmp_path: Path) -> None:
    dev, sim = device()
    dev.enable()
    dev.poll()
    sim.insert_note(1)
    poll_until(dev.poll, {K.ESCROW})
    dev.stack()
    ids: list[str] = []

    def failing(event: CashEvent) -> None:
        if event.kind is K.CREDIT:
            ids.append(event.event_id)
            raise OSError("disk full")

    deadline = time.monotonic() + 2
    while not ids and time.monotonic() < deadline:
        try:
            dev.poll(failing)
        except OSError:
            break
    assert ids and sim.acked  # no EVENT ACK went out: the device still holds the credit
    with pytest.raises(OSError):
        dev.poll(failing)
    assert ids[0] == ids[1]
    journal = CashJournal(tmp_path / "cash.db")
    got = dev.poll(journal.record)
    assert [e.event_id for e in got if e.kind is K.CREDIT] == [ids[0]]
    assert not sim.acked and journal.balance() == 500
    assert dev.poll(journal.record) == [] and journal.balance() == 500


def test_checkpoint_resume_recognises_an_unacked_credit_after_a_restart(tmp_path: Path) -> None:
    dev, sim = device()
    dev.enable()
    dev.poll()
    sim.insert_note(2)
    poll_until(dev.poll, {K.ESCROW})
    journal = CashJournal(tmp_path / "cash.db")
    crashed: list[CashEvent] = []

    def crash_after_commit(event: CashEvent) -> None:
        journal.record(event)
        if event.kind is K.CREDIT:
            crashed.append(event)
            raise SystemExit("power cut before EVENT ACK")

    with pytest.raises(SystemExit):
        poll_until(dev.poll, {K.CREDIT}, sink=crash_after_commit)
    state = dev.checkpoint()
    again = SspDevice(SimTransport(sim), reply_timeout=0.05, retries=3, resume=state)
    again.start()
    again.enable()
    repeated = poll_until(again.poll, {K.CREDIT}, sink=journal.record)
    credit = next(e for e in repeated if e.kind is K.CREDIT)
    assert credit.event_id == crashed[0].event_id
    assert journal.balance() == 1000 and sim.credited == [1000]


def test_reject_by_host_and_rejected_note_with_reason() -> None:
    dev, sim = device()
    dev.enable()
    dev.poll()
    sim.insert_note(4)
    poll_until(dev.poll, {K.ESCROW})
    dev.reject()
    events = poll_until(dev.poll, {K.REJECTED})
    assert events[-1].reason == "rejected by host"
    sim.set_fault("rejected", 0x0B)
    sim.insert_note(1)
    events = poll_until(dev.poll, {K.REJECTED})
    assert [e.reason for e in events if e.kind is K.REJECTED] == ["note too long"]
    assert sim.credited == []


def test_escrow_timeout_returns_the_note() -> None:
    dev, sim = device()
    dev.enable()
    dev.poll()
    sim.insert_note(2)
    poll_until(dev.poll, {K.ESCROW})
    sim.last_command_at -= 6  # the host went quiet for longer than GA973's 5 s
    sim.advance(time.monotonic())
    events = poll_until(dev.poll, {K.REJECTED})
    assert events[-1].reason == "escrow time-out"


def test_hold_keeps_the_note_in_escrow() -> None:
    dev, sim = device()
    dev.enable()
    dev.poll()
    sim.insert_note(1)
    poll_until(dev.poll, {K.ESCROW})
    for _ in range(3):
        dev.hold()
    assert sim.note is not None and sim.note["state"] == "escrow"
    poll_until(dev.poll, {K.CREDIT})


def test_jam_fraud_and_cashbox_faults() -> None:
    dev, sim = device()
    dev.enable()
    dev.poll()
    sim.set_fault("jam")
    first = dev.poll()
    assert [e.kind for e in first] == [K.JAM] and dev.poll() == []
    sim.set_fault("jam", False)
    sim.set_fault("cashbox_removed")
    assert [e.kind for e in dev.poll()] == [K.CASHBOX_REMOVED]
    assert dev.poll() == []
    sim.set_fault("cashbox_removed", False)
    sim.set_fault("fraud")
    kinds = {e.kind for e in dev.poll()}
    assert kinds == {K.FRAUD, K.CASHBOX_REPLACED}


def test_payout_pays_notes_and_reports_done() -> None:
    dev, sim = device(SspSimulator(reply_delay=0, speed=50, levels="1000:2,500:3"))
    dev.enable()
    dev.poll()
    assert dev.can_pay(1500) and not dev.can_pay(1200)
    dev.payout(2500)
    events = poll_until(dev.poll, {K.PAYOUT_DONE})
    assert events[0].kind is K.PAYOUT_STARTED and events[0].requested == 2500
    assert events[-1].value == 2500 and sorted(sim.paid_out) == [500, 1000, 1000]
    levels = {lv["value"]: lv["level"] for lv in dev.levels()}
    assert levels[1000] == 0 and levels[500] == 2


def test_payout_refusals_name_the_reason() -> None:
    dev, _ = device(SspSimulator(reply_delay=0, levels="500:1"))
    with pytest.raises(SspResponseError, match="not enough value in device"):
        dev.payout(5000)
    with pytest.raises(SspResponseError, match="cannot pay exact amount") as info:
        dev.payout(300)
    assert info.value.code == 0xF5 and info.value.reason == "cannot pay exact amount"


def test_payout_commands_need_the_key() -> None:
    dev, sim = device(encryption=False)
    assert not dev.encrypted
    with pytest.raises(SspResponseError, match="KEY NOT SET"):
        dev.payout(500)
    assert 0x33 not in sim.executed


def test_payout_interrupted_by_reset_is_reported_and_the_host_recovers() -> None:
    sim = SspSimulator(reply_delay=0, speed=50, levels="1000:5", reset_during_payout=2)
    dev, _ = device(sim)
    dev.enable()
    dev.poll()
    dev.payout(4000)
    events = poll_until(dev.poll, {K.PAYOUT_INCOMPLETE})
    incomplete = events[-1]
    assert (incomplete.value, incomplete.requested) == (2000, 4000)
    assert K.DEVICE_RESET in [e.kind for e in events]
    assert dev.stats["resyncs"] == 1 and dev.stats["key_exchanges"] == 2
    assert sim.enabled and sim.inhibits == 0b1111  # enable state restored after the reset
    assert sim.paid_out == [1000, 1000]
    dev.payout(1000)  # the new key works for the next payout
    assert poll_until(dev.poll, {K.PAYOUT_DONE})[-1].value == 1000


def test_route_float_and_empty() -> None:
    dev, sim = device(SspSimulator(reply_delay=0, levels="500:4,1000:2"))
    dev.set_route(500, to_payout=False)
    assert dev.get_route(500) == "cashbox" and dev.get_route(1000) == "payout"
    dev.float_amount(2000, 500)
    assert sum(v * n for v, n in sim.levels.items()) == 2000
    events = dev.poll()
    assert [e.kind for e in events if e.kind is K.PAYOUT_DONE] == [K.PAYOUT_DONE]
    dev.empty()
    assert all(n == 0 for n in sim.levels.values())
    assert [e.reason for e in dev.poll() if e.kind is K.PAYOUT_DONE] == [
        "emptied to the cashbox"]


def test_lost_reply_is_retried_with_the_same_flag_and_executed_once() -> None:
    dev, sim = device(SspSimulator(reply_delay=0, levels="1000:3"))
    before = sim.executed.count(0x33)
    sim.set_fault("drop_byte", 1)  # the reply to the payout is damaged on the line
    dev.payout(1000)
    assert dev.stats["retries"] == 1
    assert sim.executed.count(0x33) == before + 1 and sim.job is not None
    assert sim.job["requested"] == 1000


def test_garbage_before_a_reply_is_skipped() -> None:
    dev, sim = device()
    sim.set_fault("garbage", "7f 00 12 ff 7e")
    assert dev.status()["serial"] == sim.serial
    assert dev.link.garbage  # skipped and logged, not fatal


def test_silent_device_raises_no_response_naming_the_port() -> None:
    sim = SspSimulator(reply_delay=0)
    sim.set_fault("silent")
    dev = SspDevice(SimTransport(sim), reply_timeout=0.01, retries=2)
    with pytest.raises(NoResponseError, match=r"0x11 after 3 attempts.*sim://ssp"):
        dev.start()


def test_plain_validator_without_payout_refuses_payout() -> None:
    dev, _ = device()
    assert dev.setup is not None
    dev.setup.unit_type = 0x00
    with pytest.raises(NotSupportedError):
        dev.payout(500)


def test_pty_flow_note_credit_and_payout() -> None:
    sim = SspSimulator(speed=20, levels="500:2")
    with SimulatorOnPty(sim) as served:
        dev = open_device(served.port, reply_timeout="0.5", retries="5")
        try:
            dev.start()
            dev.enable()
            dev.poll()
            sim.insert_note(2)
            events = poll_until(dev.poll, {K.CREDIT}, seconds=5)
            assert [e.kind for e in events if e.kind in (K.ESCROW, K.CREDIT)] == [
                K.ESCROW, K.CREDIT]
            dev.payout(1500)
            done = poll_until(dev.poll, {K.PAYOUT_DONE}, seconds=5)
            assert done[-1].value == 1500
        finally:
            dev.close()


def test_cli_status_and_payout_json() -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["cash", "status", "--port", "sim://ssp?levels=1000:2",
                                 "--protocol", "ssp", "-o", "reply_timeout=0.2", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout.splitlines()[0])
    assert info["unit"] == "SMART Payout" and info["levels"][1]["level"] == 2
    result = runner.invoke(cli, ["cash", "payout", "1000", "--port",
                                 "sim://ssp?levels=1000:2&speed=50", "--protocol", "ssp",
                                 "--interval", "0.01", "--json"])
    assert result.exit_code == 0, result.output
    kinds = [json.loads(line)["kind"] for line in result.stdout.splitlines()]
    assert kinds[0] == "payout_started" and kinds[-1] == "payout_done"


def test_plain_poll_fallback_keeps_refused_events_for_the_next_poll(tmp_path: Path) -> None:
    sim = SspSimulator(reply_delay=0, speed=50)
    original = sim.execute

    def no_poll_with_ack(command: int, params: bytes) -> bytes:
        return bytes((0xF2,)) if command == 0x56 else original(command, params)

    sim.execute = no_poll_with_ack  # type: ignore[method-assign]
    dev, _ = device(sim)
    dev.enable()
    dev.poll()
    assert not dev.poll_with_ack
    sim.insert_note(2)
    poll_until(dev.poll, {K.ESCROW})
    refused: list[str] = []

    def failing(event: CashEvent) -> None:
        if event.kind is K.CREDIT:
            refused.append(event.event_id)
            raise OSError("disk full")

    deadline = time.monotonic() + 2
    while not refused and time.monotonic() < deadline:
        try:
            dev.poll(failing)
        except OSError:
            break
    journal = CashJournal(tmp_path / "cash.db")
    delivered = dev.poll(journal.record)  # the kept credit comes first, same id
    assert [e.event_id for e in delivered if e.kind is K.CREDIT] == refused
    assert journal.balance() == 1000 and sim.credited == [1000]
