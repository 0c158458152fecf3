"""The SSP host core is sans-I/O: its operations run on scripted reply bytes, no transport.

Why: the rules (what to send, what a reply or a lost reply means, when events are
acknowledged) are checked here without a port, a simulator or a clock; ``SspDevice`` only
runs the same operations (vendhw.devices.engine).
"""

from __future__ import annotations

from typing import Any

import pytest

from vendhw.devices.cash import CashEvent, CashEventKind
from vendhw.devices.engine import Deliver, drive, replay
from vendhw.devices.ssp import SspCore, SspRequest, SspResponseError, money
from vendhw.errors import JournalError, NoResponseError
from vendhw.framing.ssp import Command

OK = b"\xf0"
CREDIT_CHANNEL_1 = OK + b"\xee\x01"
"""A POLL WITH ACK reply: CREDIT NOTE, channel 1."""
VALUES = (500, 1000, 2000)


def setup_reply(version: int = 6) -> bytes:
    """SETUP REQUEST reply of a SMART Payout (unit 6) holding EUR 5, 10, 20 (GA138)."""
    n = len(VALUES)
    out = bytearray(b"\x06" + b"0420" + b"EUR")
    out += (1).to_bytes(3, "big") + bytes((n,))
    out += bytes(v // 100 for v in VALUES) + bytes((2,)) * n
    out += (100).to_bytes(3, "big") + bytes((version,))
    out += b"EUR" * n + b"".join((v // 100).to_bytes(4, "little") for v in VALUES)
    return OK + bytes(out)


def commands(requests: list[Any]) -> list[int]:
    return [r.command for r in requests]


def started() -> SspCore:
    core = SspCore(encryption=False, name="ssp-test", resume={"session": "t0k", "acks": 0})
    replies = [OK, OK, setup_reply(), OK + (0x01A2B3C4).to_bytes(4, "big"), OK, OK]
    _, sent = replay(core.start_op(), replies)
    assert commands(sent) == [Command.SYNC, Command.HOST_PROTOCOL_VERSION,
                              Command.SETUP_REQUEST, Command.GET_SERIAL_NUMBER,
                              Command.SET_INHIBITS, Command.ENABLE_PAYOUT_DEVICE]
    assert sent[0].sync and not any(r.sync for r in sent[1:])
    assert not any(r.encrypt for r in sent)
    return core


def test_start_runs_on_scripted_replies() -> None:
    core = started()
    assert core.serial == 0x01A2B3C4 and core.currency == "EUR" and core.is_payout
    assert [c.value for c in core.setup.channels] == list(VALUES)  # type: ignore[union-attr]
    assert core.payout_enabled


def test_poll_delivers_before_it_asks_for_the_event_ack() -> None:
    core = started()
    op = core.poll_op()
    assert next(op) == SspRequest(Command.POLL_WITH_ACK)
    step = op.send(CREDIT_CHANNEL_1)
    assert isinstance(step, Deliver) and step.event.kind is CashEventKind.CREDIT
    assert step.event.value == 500 and step.event.event_id == "ssp:01A2B3C4/t0k/a0/0"
    assert op.send(None) == SspRequest(Command.EVENT_ACK)  # only once the sink took it
    with pytest.raises(StopIteration) as stop:
        op.send(OK)
    assert stop.value.value == [step.event]
    assert core.acks == 1


def test_poll_with_replay() -> None:
    core = started()
    heard: list[CashEvent] = []
    events, sent = replay(core.poll_op(), [CREDIT_CHANNEL_1, OK], sink=heard.append)
    assert commands(sent) == [Command.POLL_WITH_ACK, Command.EVENT_ACK]
    assert events == heard and [(e.kind, e.value) for e in heard] == [(CashEventKind.CREDIT,
                                                                       500)]
    events, sent = replay(core.poll_op(), [OK])  # nothing new: nothing to acknowledge
    assert events == [] and commands(sent) == [Command.POLL_WITH_ACK]


def test_a_sink_failure_sends_no_event_ack_and_the_repeat_keeps_its_id() -> None:
    core = started()
    sent: list[SspRequest] = []
    refused: list[CashEvent] = []

    def transact(request: SspRequest) -> bytes:
        sent.append(request)
        return CREDIT_CHANNEL_1 if request.command == Command.POLL_WITH_ACK else OK

    def full_disk(event: CashEvent) -> None:
        refused.append(event)
        raise JournalError("disk full")

    with pytest.raises(JournalError):
        drive(core.poll_op(), transact, sink=full_disk)
    assert commands(sent) == [Command.POLL_WITH_ACK]  # no EVENT ACK after the refusal
    assert core.acks == 0
    heard: list[CashEvent] = []
    _, again = replay(core.poll_op(), [CREDIT_CHANNEL_1, OK], sink=heard.append)
    assert commands(again) == [Command.POLL_WITH_ACK, Command.EVENT_ACK]
    assert [e.event_id for e in heard] == [e.event_id for e in refused]


def test_payout_queues_its_start_for_the_next_poll() -> None:
    core = started()
    _, sent = replay(core.payout_op(1500), [OK])
    assert sent == [SspRequest(Command.PAYOUT_AMOUNT, money(1500, "EUR", 6) + b"\x58")]
    heard: list[CashEvent] = []
    replay(core.poll_op(), [OK], sink=heard.append)
    assert [(e.kind, e.requested) for e in heard] == [(CashEventKind.PAYOUT_STARTED, 1500)]


def test_a_refused_or_unanswered_payout_is_not_resent_and_starts_nothing() -> None:
    core = started()
    with pytest.raises(SspResponseError) as refused:
        replay(core.payout_op(1500), [b"\xf5\x01"])
    assert refused.value.reason == "not enough value in device"
    # A lost reply is the caller's to judge (the device may be paying): the operation does
    # not send the command again; one request, and no PAYOUT STARTED queued.
    sent: list[SspRequest] = []

    def silent(request: SspRequest) -> bytes:
        sent.append(request)
        raise NoResponseError("lost")

    with pytest.raises(NoResponseError):
        drive(core.payout_op(1500), silent)
    assert commands(sent) == [Command.PAYOUT_AMOUNT]
    _, polled = replay(core.poll_op(), [OK], sink=lambda e: pytest.fail(f"queued {e}"))
    assert commands(polled) == [Command.POLL_WITH_ACK]


def test_an_unanswered_encrypted_command_makes_the_next_one_resync() -> None:
    core = started()
    core.encrypted = True  # as after a key agreement; sealing is the runner's job
    with pytest.raises(NoResponseError):
        replay(core.command_op(Command.ENABLE), [NoResponseError("lost")])
    key = OK + (12345).to_bytes(8, "little")
    _, sent = replay(core.command_op(Command.ENABLE), [OK, OK, OK, key, OK])
    assert commands(sent) == [Command.SYNC, Command.SET_GENERATOR, Command.SET_MODULUS,
                              Command.REQUEST_KEY_EXCHANGE, Command.ENABLE]
    assert [r.encrypt for r in sent] == [False, False, False, False, True]
