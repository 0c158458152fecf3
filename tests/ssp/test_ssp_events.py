"""Poll events: unknown codes never fail a poll, GA138 events and command names, decoder CLI.

Regressions: an unknown event code made ``decode_events`` return None and ``poll()`` raise;
with POLL WITH ACK the device then repeated the same reply forever and a credit in it was
never delivered. Event data sizes are those of the GA138 v2.2 event pages ("Data size").
"""

from __future__ import annotations

import json
from typing import Any

from click.testing import CliRunner

from vendhw.cli import cli
from vendhw.devices.cash import CashEventKind
from vendhw.devices.ssp import PAYOUT_DEVICE_ERRORS, SspDevice
from vendhw.framing.ssp import COMMANDS, SspFramer, decode_events, decode_poll
from vendhw.sim.ssp import SspSimulator
from vendhw.transport import SimTransport

K = CashEventKind


def started(**options: Any) -> tuple[SspDevice, SspSimulator]:
    sim = SspSimulator(reply_delay=0, speed=50)
    dev = SspDevice(SimTransport(sim), reply_timeout=0.05, retries=2, **options)
    dev.start()
    dev.enable()
    dev.poll()
    return dev, sim


def test_unknown_event_after_a_credit_keeps_the_credit_and_acks_the_poll() -> None:
    dev, sim = started()
    sim.inject(bytes.fromhex("EE 01 99"), ack=True)  # a credit, then a code GA138 does not know
    events = dev.poll()
    kinds = [e.kind for e in events]
    assert K.CREDIT in kinds and events[kinds.index(K.CREDIT)].value == 500
    (unknown,) = [e for e in events if e.detail.get("needs_review")]
    assert unknown.kind is K.FAULT and unknown.detail["raw"] == "99"
    assert "unknown" in (unknown.reason or "")
    assert sim.acked == [] and sim.executed[-1] == 0x57  # EVENT ACK: no endless repeat
    assert not [e for e in dev.poll() if e.kind is K.CREDIT]  # delivered once


def test_unknown_event_before_a_credit_goes_to_the_operator_with_the_raw_bytes() -> None:
    dev, sim = started()
    sim.inject(bytes.fromhex("99 EE 02"), ack=True)
    events = dev.poll()
    assert not [e for e in events if e.kind is K.CREDIT]  # not guessed into a credit...
    (unknown,) = [e for e in events if e.detail.get("needs_review")]
    assert unknown.detail["raw"] == "99 ee 02"  # ...nor dropped: the operator sees it
    assert "credit" in (unknown.reason or "")
    assert unknown.detail["possible"][0]["event"] == "CREDIT NOTE"
    assert sim.acked == []


def test_decode_poll_keeps_what_parses_and_reports_the_rest() -> None:
    events = decode_poll(bytes.fromhex("E8 EF 02 42 01 02"), 6)
    assert [e["event"] for e in events] == ["DISABLED", "READ NOTE", "UNKNOWN EVENT"]
    assert events[-1]["code"] == 0x42 and events[-1]["raw"] == bytes.fromhex("42 01 02")
    truncated = decode_poll(bytes.fromhex("E8 EE"), 6)
    assert truncated[-1]["event"] == "UNKNOWN EVENT" and truncated[-1]["raw"] == b"\xee"
    assert decode_events(bytes.fromhex("E8 42"), 6) is None  # the strict form is unchanged


def test_ga138_events_with_their_data_sizes() -> None:
    data = bytes.fromhex("B7 14 8B BA 03000000 455552 C0 A0 A1 A2 A3 A4 A5 A6 A7 A8 08 A9 AA"
                         " AB AC AD AE AF 90 04")
    events = decode_events(data, 6)
    assert events is not None
    names = [(e["code"], e["event"]) for e in events]
    assert names[:4] == [(0xB7, "COIN MECH ERROR"), (0x8B, "ESCROW ACTIVE"),
                         (0xBA, "COIN REJECTED"), (0xC0, "MAINTENANCE REQUIRED")]
    assert events[0]["error"] == 0x14
    assert events[2]["values"] == [{"value": 3, "currency": "EUR"}]
    printer = {code: name for code, name in names if 0xA0 <= code <= 0xAF}
    assert len(printer) == 16 and printer[0xA8] == "TICKET PRINTING ERROR"
    assert printer[0xA7] == "TICKET IN BEZEL AT STARTUP" and printer[0xAF] == "PRINTED TO CASHBOX"
    (print_error,) = [e for e in events if e["code"] == 0xA8]
    assert print_error["error"] == 8
    assert events[-1]["event"] == "CASHBOX OUT OF SERVICE" and events[-1]["error"] == 4


def test_coin_mech_error_and_printer_errors_reach_the_sink() -> None:
    dev, sim = started()
    sim.inject(bytes.fromhex("B7 14 A4"))
    faults = [e for e in dev.poll() if e.kind is K.FAULT]
    assert [f.detail["code"] for f in faults] == [0xB7, 0xA4]
    assert "20" in (faults[0].reason or "")  # the error byte is named in the reason


def test_command_names_follow_ga138_v2_2() -> None:
    assert COMMANDS[0x65] == "GET TEBS BARCODE" and COMMANDS[0x66] == "GET TEBS LOG"
    assert COMMANDS[0x67] == "CASHBOX UNLOCK ENABLE" and COMMANDS[0x68] == "CASHBOX LOCK ENABLE"
    assert COMMANDS[0x72] == "ENABLE TITO EVENTS"
    assert [COMMANDS[c] for c in range(0x76, 0x7B)] == [
        "CANCEL ESCROW TRANSACTION", "COMMIT ESCROW TRANSACTION", "READ ESCROW VALUE",
        "GET ESCROW SIZE", "SET ESCROW SIZE"]
    assert COMMANDS[0x39] == "PAYOUT AMOUNT BY DENOMINATION" and COMMANDS[0x3A] == "COIN ESCROW"
    assert COMMANDS[0x4E] == "SET CASHBOX PAYOUT LIMIT" and COMMANDS[0x5A] == "COIN MECH OPTIONS"


def test_enable_payout_device_errors_one_to_five() -> None:
    assert PAYOUT_DEVICE_ERRORS[4] == "empty only (note float only)"
    assert PAYOUT_DEVICE_ERRORS[5] == "device error"
    assert PAYOUT_DEVICE_ERRORS[3].startswith("busy")


def test_decode_cli_protocol_version_changes_the_event_shapes() -> None:
    framer = SspFramer()
    old_dispensing = framer.build(data=bytes.fromhex("F0 DA 64 00 00 00"), seq=1).hex()
    runner = CliRunner()
    result = runner.invoke(cli, ["decode", "ssp", "--protocol-version", "5", "--json",
                                 old_dispensing])
    assert result.exit_code == 0, result.output
    (event,) = json.loads(result.stdout)["events"]
    assert event["event"] == "DISPENSING" and event["values"][0]["value"] == 100
    result = runner.invoke(cli, ["decode", "ssp", old_dispensing])  # v6: a count of 0x64 blocks
    assert result.exit_code == 0 and "DISPENSING" not in result.stdout
    printer = framer.build(data=bytes.fromhex("F0 B7 14 A8 08"), seq=1).hex()
    result = runner.invoke(cli, ["decode", "ssp", printer])
    assert "COIN MECH ERROR" in result.stdout and "TICKET PRINTING ERROR" in result.stdout
    result = runner.invoke(cli, ["decode", "ssp", "--protocol-version", "x", printer])
    assert result.exit_code == 2 and "Traceback" not in result.output
    result = runner.invoke(cli, ["decode", "cctalk", "--protocol-version", "6", "02 00 01 FE FF"])
    assert result.exit_code == 2 and "only applies to ssp" in result.output


def test_codes_are_declared_once_and_every_table_uses_known_events() -> None:
    from vendhw.devices import ssp as host
    from vendhw.framing.ssp import ACKED_EVENTS, EVENTS, Command, Event

    tables = set(host._HANDLERS) | set(host.FAULT_EVENTS) | set(host.SIMPLE_EVENTS)
    assert tables <= set(EVENTS) and ACKED_EVENTS <= set(EVENTS)
    assert set(EVENTS) == set(Event) and set(COMMANDS) == set(Command)
    assert host.POLL_WITH_ACK is Command.POLL_WITH_ACK and host.OK == 0xF0
    # Each mapped event lands in exactly one table.
    assert not set(host._HANDLERS) & set(host.FAULT_EVENTS)
    assert not set(host.SIMPLE_EVENTS) & (set(host._HANDLERS) | set(host.FAULT_EVENTS))


def test_a_coin_credit_whose_currency_is_not_a_currency_goes_to_the_operator() -> None:
    """Regression: the Node library's COIN CREDIT layout (a count, then blocks) read the way
    GA138 says gave a credit of 258 in currency '\\x00US'. Now it is a fault for review."""
    from vendhw.devices.ssp import EventMapper

    (event,) = decode_poll(bytes.fromhex("DF 02010000 005553"), 6)
    assert event["event"] == "COIN CREDIT"
    (made,) = EventMapper("hopper", currency="EUR").map([event], ["id-1"])
    assert made.kind is K.FAULT and made.detail["needs_review"] is True
    (good,) = EventMapper("hopper", currency="EUR").map(
        decode_poll(bytes.fromhex("DF F4010000 474250"), 6), ["id-2"])
    assert (good.kind, good.value, good.currency) == (K.CREDIT, 500, "GBP")


def _mapper_with_a_note_stacking() -> Any:
    from vendhw.devices.ssp import Channel, EventMapper

    mapper = EventMapper("ssp", currency="EUR",
                         channels={3: Channel(3, 2000, "EUR")})
    mapper.map(decode_poll(bytes.fromhex("EF 03"), 6), ["a"])  # read: channel 3 in escrow
    mapper.map(decode_poll(bytes.fromhex("CC"), 6), ["b"])  # stacking: past the return point
    return mapper


def test_a_reset_then_a_new_notes_rejection_still_flags_the_note_that_was_stacking() -> None:
    """Regression (found by the line-fault run, seeds 7 and 33): the device reset with a note
    stacking, its credit event lost with the device's memory; the first poll after the
    reset held SLAVE RESET and then a *new* note's rejection, and the rejection was read as
    the fate of the stacked note, so 20.00 went nowhere, not even to an operator."""
    mapper = _mapper_with_a_note_stacking()
    made = mapper.map(decode_poll(bytes.fromhex("F1 ED EC"), 6), ["r/0", "r/1", "r/2"])
    flagged = [m for m in made if m.kind is K.FAULT]
    assert [(m.value, m.channel, m.detail["needs_review"]) for m in flagged] == [(2000, 3, True)]


def test_a_note_the_device_reports_after_its_reset_is_not_flagged_as_well() -> None:
    """GA138 0xE2: the reset put the stacking note in the cashbox and says so: a credit, once."""
    mapper = _mapper_with_a_note_stacking()
    made = mapper.map(decode_poll(bytes.fromhex("F1 E2 03"), 6), ["r/0", "r/1"])
    assert [(m.kind, m.value) for m in made if m.value] == [(K.CREDIT, 2000)]
    assert mapper.map(decode_poll(bytes.fromhex("F1"), 6), ["r2/0"])[0].kind is not K.FAULT


def test_a_credit_beside_the_next_notes_read_keeps_the_new_note_tracked() -> None:
    """Regression (line-fault run, seed 15): one poll brought the next note's READ NOTE and
    the previous note's CREDIT; the credit cleared the new note's escrow channel, so when the
    device reset with that note stacking nobody was told: 20.00 lost without a flag."""
    mapper = _mapper_with_a_note_stacking()
    made = mapper.map(decode_poll(bytes.fromhex("EF 03 EE 03 DB"), 6), ["n/0", "n/1", "n/2"])
    assert [(m.kind, m.value) for m in made if m.value] == [(K.ESCROW, 2000), (K.CREDIT, 2000)]
    mapper.map(decode_poll(bytes.fromhex("CC"), 6), ["s"])  # the new note is stacking
    made = mapper.map(decode_poll(bytes.fromhex("F1"), 6), ["r/0"])
    assert [(m.kind, m.value) for m in made if m.kind is K.FAULT] == [(K.FAULT, 2000)]
