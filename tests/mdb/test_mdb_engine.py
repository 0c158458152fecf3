"""The MDB changer and bill cores are sans-I/O: their operations run on scripted replies
(:func:`vendhw.devices.engine.replay`, no transport, no link), and the thin runner ACKs POLL
data before any event reaches the sink."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import replace
from types import SimpleNamespace, TracebackType
from typing import Any

import pytest

from vendhw.devices.cash import CashEvent, CashEventKind
from vendhw.devices.engine import Deliver, Wait, replay
from vendhw.devices.mdb import (
    JUST_RESET_POLLS,
    BillCore,
    ChangerCore,
    MdbCoinChanger,
    Request,
    TubeCounts,
    parse_changer_setup,
)
from vendhw.devices.mdb.tables import POLL_DATA_MAX
from vendhw.errors import NoResponseError
from vendhw.framing.mdb import BillCommand, ChangerCommand

# level 2, EUR (0x1978), scaling 5, 2 decimals, routing 0x003F; credits 1 2 4 10 20 40 for
# coin types 0..5, type 6 unused, type 7 a vend token (credit 0xFF)
CHANGER_SETUP = bytes((2, 0x19, 0x78, 5, 2, 0, 0x3F, 1, 2, 4, 10, 20, 40, 0, 0xFF)) + bytes(8)
TUBES = [20, 20, 20, 10, 10, 10] + [0] * 10
POLL = Request(ChangerCommand.POLL, longest=POLL_DATA_MAX)
BILL_POLL = Request(BillCommand.POLL, longest=POLL_DATA_MAX)


def started_changer() -> ChangerCore:
    core = ChangerCore()
    _, sent = replay(core.start_op(), [None, b"\x0b", CHANGER_SETUP, TUBES, None])
    assert sent == [Request(ChangerCommand.RESET), POLL, Request(ChangerCommand.SETUP),
                    TubeCounts(), Request(ChangerCommand.COIN_TYPE, b"\x00\x00\x00\x3f")]
    assert core.tubes == TUBES and core.currency == "EUR"
    return core


def test_a_coin_credit_is_delivered_only_after_its_poll_data_came_back() -> None:
    core = started_changer()
    op = core.poll_op()
    assert next(op) == POLL and POLL.ack  # the runner ACKs this reply at once
    step = op.send(b"\x52\x0b")  # coin type 2 to the tubes, 11 now in that tube
    assert isinstance(step, Deliver)
    assert (step.event.kind, step.event.value, step.event.channel, step.event.route) == (
        CashEventKind.CREDIT, 20, 2, "tubes")
    with pytest.raises(StopIteration) as stop:
        op.send(None)
    assert stop.value.value == [step.event]


def test_replayed_poll_credits_a_coin_and_a_token_is_worth_nothing() -> None:
    core = started_changer()
    seen: list[CashEvent] = []
    events, sent = replay(core.poll_op(), [b"\x52\x0b"], sink=seen.append)
    assert sent == [POLL] and seen == events
    assert [(e.kind, e.value) for e in events] == [(CashEventKind.CREDIT, 20)]
    token, sent = replay(core.poll_op(), [b"\x57\x05"], sink=seen.append)  # type 7: a token
    assert sent == [POLL]
    assert [(e.kind, e.value, e.channel) for e in token] == [(CashEventKind.TOKEN, 0, 7)]
    assert token[0].event_id != events[0].event_id


def test_events_the_sink_refused_come_first_with_the_same_ids() -> None:
    core = started_changer()

    def full(event: CashEvent) -> None:
        raise OSError("journal disk full")

    with pytest.raises(OSError):
        replay(core.poll_op(), [b"\x43\x05"], sink=full)
    seen: list[CashEvent] = []
    events, sent = replay(core.poll_op(), [None], sink=seen.append)  # nothing new
    assert sent == [POLL]
    assert [(e.kind, e.value) for e in seen] == [(CashEventKind.CREDIT, 50)]
    assert events == seen and core.checkpoint()["delivered"] == 1


def test_a_repeat_after_a_lost_ack_keeps_its_ids() -> None:
    core = started_changer()
    first, _ = replay(core.poll_op(), [b"\x44\x05"])
    again, _ = replay(core.poll_op(), [b"\x44\x05"])
    assert again[0].event_id == first[0].event_id
    assert again[1].kind is CashEventKind.FAULT and again[1].detail["needs_review"]


def test_just_reset_is_found_activity_by_activity_and_polls_are_counted() -> None:
    core = ChangerCore()
    # a coin whose tube count is 0x0B is not JUST RESET; the 0x0B after it is
    steps: list[Any] = []
    op = core.reset_op()
    steps.append(next(op))
    steps.append(op.send(None))  # RESET: ACK
    steps.append(op.send(b"\x52\x0b"))  # no JUST RESET yet: a pause, then POLL again
    steps.append(op.send(None))
    with pytest.raises(StopIteration):
        op.send(b"\x0b\x07")  # JUST RESET with a tube jam
    assert steps[0] == Request(ChangerCommand.RESET) and steps[1] == POLL
    assert isinstance(steps[2], Wait) and steps[3] == POLL
    core.setup = parse_changer_setup(CHANGER_SETUP)
    held, sent = replay(core.poll_op(), [None])  # what came with JUST RESET, at the first poll
    assert sent == [POLL] and [e.kind for e in held] == [CashEventKind.JAM]

    silent = ChangerCore()
    with pytest.raises(NoResponseError, match="was reset"):
        replay(silent.reset_op(), [None] * (1 + JUST_RESET_POLLS))


# level 1, EUR, scaling 100, 2 decimals, stacker 500, security 0, escrow FF; 5 10 20 50
BILL_SETUP = bytes((1, 0x19, 0x78, 0, 100, 2, 0x01, 0xF4, 0, 0, 0xFF, 5, 10, 20, 50)) + bytes(12)


def test_restore_reads_the_held_poll_before_reset_and_delivers_it_before_the_reset() -> None:
    """Data the validator still holds after a restart (never ACKed) is valued with a SETUP
    and handed to the sink before the RESET that drops it: a start cut short after the
    RESET (an adapter pulled again) has lost nothing."""
    core = BillCore()
    core.restore({"session": "abcd", "delivered": 7})
    steps: list[Any] = []
    _, sent = replay(recorded(core.reset_op(), steps), [b"\x81", BILL_SETUP, None, b"\x06"])
    # Nothing ACKed before the data is delivered: a peripheral may take any ACK for its own.
    assert sent == [replace(BILL_POLL, ack=False), Request(BillCommand.SETUP, ack=False),
                    Request(BillCommand.RESET), BILL_POLL]
    delivered = [s.event for s in steps if isinstance(s, Deliver)]
    assert [(e.kind, e.value) for e in delivered] == [(CashEventKind.CREDIT, 1000)]
    assert steps.index(Deliver(delivered[0])) < steps.index(Request(BillCommand.RESET))
    assert core.checkpoint()["last"] == ""  # RESET answered: nothing left to repeat


def test_a_start_cut_after_the_held_data_was_delivered_names_it_again_as_a_repeat() -> None:
    """The RESET went unanswered: the validator may still hold the data, and the next start
    reads it again. Same ids (the journal keeps one), flagged like any repeat; never a
    second credit."""
    core = BillCore()
    core.restore({"session": "abcd", "delivered": 7})
    first: list[CashEvent] = []
    with pytest.raises(NoResponseError):
        replay(core.reset_op(), [b"\x81", BILL_SETUP, NoResponseError("pulled")],
               sink=first.append)
    again = BillCore()
    again.restore(core.checkpoint())
    seen: list[CashEvent] = []
    replay(again.reset_op(), [b"\x81", BILL_SETUP, None, b"\x06"], sink=seen.append)
    assert seen[0].event_id == first[0].event_id
    assert seen[1].kind is CashEventKind.FAULT and seen[1].value == 1000


def test_restore_with_nothing_held_goes_straight_to_reset() -> None:
    core = BillCore()
    core.restore({"session": "abcd", "delivered": 7})
    _, sent = replay(core.reset_op(), [None, None, b"\x06"])
    assert sent == [replace(BILL_POLL, ack=False), Request(BillCommand.RESET), BILL_POLL]


def recorded(op: Any, steps: list[Any]) -> Any:
    """``op`` unchanged, with every step it yields kept in order."""
    try:
        step = next(op)
        while True:
            steps.append(step)
            try:
                reply = yield step
            except GeneratorExit:
                op.close()
                raise
            except BaseException as exc:
                step = op.throw(exc)
                continue
            step = op.send(reply)
    except StopIteration as stop:
        return stop.value


class DepthLock(AbstractContextManager["DepthLock"]):
    """A bus lock that tells whether it is held (re-entrant, one thread)."""

    depth = 0

    def __enter__(self) -> DepthLock:
        self.depth += 1
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.depth -= 1


class ScriptedLink:
    """An MDB link with scripted replies (no transport): logs commands, ACKs and the lock."""

    def __init__(self, replies: list[bytes | None], log: list[str]) -> None:
        self.transport = SimpleNamespace(url="scripted://mdb")
        self.replies = list(replies)
        self.log = log
        self.lock = DepthLock()

    def transact(self, address: int, command: int, data: bytes = b"", *,
                 longest: int | None = None) -> bytes | None:
        self.log.append(f"cmd {command}")
        return self.replies.pop(0)

    def ack(self) -> None:
        self.log.append(f"ACK held={self.lock.depth > 0}")

    def release(self) -> None:
        pass


def test_the_runner_acks_poll_data_inside_the_bus_hold_before_the_sink_sees_it() -> None:
    log: list[str] = []
    tube_reply = bytes(2) + bytes(TUBES)
    link = ScriptedLink([None, b"\x0b", CHANGER_SETUP, tube_reply, None, b"\x52\x0b"], log)
    dev = MdbCoinChanger(link)  # type: ignore[arg-type]
    dev.start()
    log.clear()

    def sink(event: CashEvent) -> None:
        log.append(f"sink {event.kind.value} held={link.lock.depth > 0}")

    dev.poll(sink)
    assert log == [f"cmd {ChangerCommand.POLL}", "ACK held=True", "sink credit held=False"]


def _restarted_changer(checkpoint: dict[str, Any],
                       held: bytes) -> tuple[ChangerCore, list[CashEvent]]:
    """A new host process: restored from the journal's checkpoint; the peripheral still
    holds ``held`` (it never heard our ACK), read before RESET and delivered before it."""
    core = ChangerCore()
    core.restore(checkpoint)
    seen: list[CashEvent] = []
    _, sent = replay(core.start_op(), [held, CHANGER_SETUP, None, b"\x0b", CHANGER_SETUP,
                                       TUBES, None], sink=seen.append)
    assert sent[:3] == [replace(POLL, ack=False),  # the SETUP is the one it gave before
                        Request(ChangerCommand.SETUP, ack=False), Request(ChangerCommand.RESET)]
    return core, seen


def test_a_copy_repeated_across_a_restart_is_not_credited_again() -> None:
    """The coin was journaled, our ACK was lost, the controller restarted before the next
    POLL: the peripheral's copy is the same coin, flagged for review, never a new credit."""
    core = started_changer()
    first, _ = replay(core.poll_op(), [b"\x44\x05"])
    restarted, again = _restarted_changer(core.checkpoint(), b"\x44\x05")
    assert again[0].event_id == first[0].event_id  # the journal keeps one
    assert again[1].kind is CashEventKind.FAULT and again[1].detail["needs_review"]
    nothing, sent = replay(restarted.poll_op(), [b"\x44\x05"])  # RESET came in between: new
    assert sent == [POLL] and nothing[0].event_id != first[0].event_id and len(nothing) == 1


def test_new_data_held_across_a_restart_is_credited_once_with_its_own_ids() -> None:
    core = started_changer()
    first, _ = replay(core.poll_op(), [b"\x44\x05"])
    replay(core.poll_op(), [None])  # an empty poll: nothing held to repeat
    _, held = _restarted_changer(core.checkpoint(), b"\x44\x05")
    assert [e.kind for e in held] == [CashEventKind.CREDIT]
    assert held[0].event_id != first[0].event_id


def test_without_a_sink_the_held_data_waits_for_the_first_poll() -> None:
    """``start()`` with no journal to give it to: the first poll delivers it first."""
    log: list[str] = []
    tube_reply = bytes(2) + bytes(TUBES)
    link = ScriptedLink([b"\x44\x05", CHANGER_SETUP, None, b"\x0b", CHANGER_SETUP,
                         tube_reply, None], log)
    dev = MdbCoinChanger(link)  # type: ignore[arg-type]
    dev.restore({"session": "abcd", "delivered": 3})
    dev.start()
    log.clear()
    link.replies.append(None)  # the poll's own POLL: nothing new
    seen: list[CashEvent] = []
    events = dev.poll(seen.append)
    assert log == [f"cmd {ChangerCommand.POLL}"] and events == seen
    assert [(e.kind, e.value) for e in seen] == [(CashEventKind.CREDIT, 100)]  # type 4


def test_a_checkpoint_from_before_last_was_kept_still_restores() -> None:
    core = ChangerCore()
    core.restore({"session": "abcd", "delivered": 7})
    assert core.checkpoint() == {"session": "abcd", "delivered": 7, "last": "", "repeats": 0,
                                 "setup": ""}
