"""eSSP host recovery from lost and stale replies (long line-fault run, docs/reliability.md).

Regressions: after an encrypted command went unanswered (the device executed it and advanced
its count, all its replies lost) every later packet was discarded ("eSSP count N, expected
M") until a restart; an unanswered EVENT ACK let the next note reuse the acked
note's event ids (counted once: a credit lost).
"""

from __future__ import annotations

from typing import Any

from vendhw.devices.cash import CashEvent, CashEventKind
from vendhw.devices.ssp import SspDevice, SspRequest
from vendhw.errors import NoResponseError
from vendhw.framing.ssp import Command
from vendhw.sim.ssp import SspSimulator
from vendhw.transport import SimTransport


class Line:
    """Drops the next ``drop`` replies; duplicates the next reply when ``duplicate``."""

    def __init__(self) -> None:
        self.drop = 0
        self.duplicate = False

    def apply(self, replies: list[tuple[float, bytes]]) -> list[tuple[float, bytes]]:
        out = []
        for delay, data in replies:
            if self.drop:
                self.drop -= 1
                continue
            out.append((delay, data))
            if self.duplicate:
                self.duplicate = False
                out.append((delay, data))
        return out

    def set(self, name: str, value: Any) -> None:
        raise KeyError(name)


def rig() -> tuple[SspSimulator, SspDevice, Line]:
    sim = SspSimulator(reply_delay=0, speed=1000, encryption="all")
    line = Line()
    sim.line = line  # type: ignore[assignment]
    host = SspDevice(SimTransport(sim), reply_timeout=0.02, retries=2, name="ssp")
    host.start()
    assert host.encrypted
    return sim, host, line


def test_lost_replies_to_an_executed_encrypted_command_resync_the_counts() -> None:
    sim, host, line = rig()
    host.enable()
    line.drop = 3  # the command and both retransmissions: executed once, never answered
    try:
        host.disable()
    except NoResponseError:
        pass
    assert not sim.enabled  # the device did execute it (and advanced its count)
    host.enable()  # old code: "eSSP count ..., expected ..." on every command from here on
    assert host.poll() is not None
    assert host.stats["resyncs"] >= 1


def test_a_duplicated_reply_is_not_the_answer_to_the_next_command() -> None:
    _sim, host, line = rig()
    host.enable()
    line.duplicate = True
    host.poll()
    host.poll()  # the duplicate (older count, other flag) is never this poll's answer
    host.poll()


def credit_through_lost_ack(sim: SspSimulator, host: SspDevice, line: Line,
                            channel: int, *, lose_ack: bool) -> list[CashEvent]:
    """Feed a note and poll until its credit; with ``lose_ack`` every reply to the EVENT
    ACK of that poll is lost (the device got it)."""
    heard: list[CashEvent] = []
    # The runner's one I/O seam: poll() no longer goes through the public command().
    transact = host._transact

    def spy(request: SspRequest) -> bytes:
        if lose_ack and request.command == Command.EVENT_ACK and any(
                e.kind is CashEventKind.CREDIT for e in heard):
            line.drop = host.retries + 1
        return transact(request)

    host._transact = spy  # type: ignore[method-assign]
    sim.insert_note(channel)
    try:
        for _ in range(1000):
            try:
                host.poll(heard.append)
            except NoResponseError:
                assert lose_ack
                break
            if any(e.kind is CashEventKind.CREDIT for e in heard) and sim.note is None:
                break
    finally:
        host._transact = transact  # type: ignore[method-assign]
    return heard


def poll_quietly(host: SspDevice, n: int = 5) -> list[CashEvent]:
    heard: list[CashEvent] = []
    for _ in range(n):
        host.poll(heard.append)
    return heard


def test_an_unanswered_event_ack_does_not_reuse_the_ids_of_the_next_note() -> None:
    sim, host, line = rig()
    host.enable()
    first = credit_through_lost_ack(sim, host, line, 1, lose_ack=True)
    assert sim.executed.count(Command.EVENT_ACK) and line.drop == 0
    second = credit_through_lost_ack(sim, host, line, 2, lose_ack=False) + poll_quietly(host)
    ids = {e.event_id for e in first if e.kind is CashEventKind.CREDIT}
    new = [e for e in second if e.kind is CashEventKind.CREDIT]
    assert ids and new
    assert not ids & {e.event_id for e in new}  # old code: the same id, counted once
    assert not any(e.kind is CashEventKind.FAULT for e in second)


def test_an_identical_note_after_an_unanswered_event_ack_is_flagged_with_its_value() -> None:
    sim, host, line = rig()
    host.enable()
    first = credit_through_lost_ack(sim, host, line, 1, lose_ack=True)
    second = credit_through_lost_ack(sim, host, line, 1, lose_ack=False) + poll_quietly(host)
    ids = {e.event_id for e in first if e.kind is CashEventKind.CREDIT}
    faults = [e for e in second if e.kind is CashEventKind.FAULT]
    # Same channel, same events: the host cannot tell a repeat from a new note. Counted
    # once (same id) and the value goes to an operator.
    if {e.event_id for e in second if e.kind is CashEventKind.CREDIT} <= ids:
        assert faults and faults[0].value == 500 and faults[0].detail["needs_review"]


def poll_until_stacking(sim: SspSimulator, host: SspDevice, heard: list[CashEvent]) -> None:
    sim.insert_note(1)
    for _ in range(1000):
        host.poll(heard.append)
        if sim.note is not None and sim.note["state"] == "stacking":
            return
    raise AssertionError("the note never started stacking")


def test_a_reset_while_stacking_clears_the_note_into_the_cashbox_and_credits_it() -> None:
    # GA138 NOTE CLEARED TO CASHBOX (0xE2): a note in the path at power-up. The simulator
    # used to forget it (taken by no one, credited by no one).
    sim, host, _ = rig()
    host.enable()
    heard: list[CashEvent] = []
    poll_until_stacking(sim, host, heard)
    sim.set_fault("reset")
    assert sim.credited == [500]
    for _ in range(5):
        host.poll(heard.append)
    credits = [e for e in heard if e.kind is CashEventKind.CREDIT]
    assert [(e.value, e.detail["code"]) for e in credits] == [(500, 0xE2)]
    assert not [e for e in heard if e.kind is CashEventKind.FAULT]


def test_a_reset_wiping_an_unreported_credit_is_flagged_with_the_note_value() -> None:
    sim, host, _ = rig()
    host.enable()
    heard: list[CashEvent] = []
    poll_until_stacking(sim, host, heard)
    sim.advance(sim.now + 60)  # stacked and credited by the device, not yet polled
    assert sim.note is None and sim.credited == [500]
    sim.set_fault("reset")  # the unacknowledged CREDIT event goes with the device's memory
    for _ in range(5):
        host.poll(heard.append)
    assert not [e for e in heard if e.kind is CashEventKind.CREDIT]
    faults = [e for e in heard if e.kind is CashEventKind.FAULT]
    assert [(e.value, e.detail["needs_review"]) for e in faults] == [(500, True)]
