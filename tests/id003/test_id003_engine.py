"""The ID-003 host core is sans-I/O: its operations run on scripted replies, with no line.

Every acceptor here stands on a transport that fails the test if anything reads or writes it;
``vendhw.devices.engine.replay`` answers the requests instead. The order of the steps is the
credit-safety rule itself: the credit is delivered before the ACK that lets the note go.
"""

from __future__ import annotations

from typing import Any, TypeVar

import pytest

from vendhw.devices.cash import CashEvent, CashEventKind
from vendhw.devices.engine import Deliver, Op, Wait, replay
from vendhw.devices.id003 import DEFAULT_VALUES, Id003Acceptor, Request
from vendhw.errors import DeviceFault, NoResponseError, UnexpectedReplyError
from vendhw.framing.id003 import CURRENCY_ASSIGN, POLL_INTERVAL, Command, Status
from vendhw.transport.base import Transport

K = CashEventKind
T = TypeVar("T")
STATUS = Request(Command.STATUS_REQUEST)
ACK = Request(Command.ACK, retry=False, reply=False)


class NoLine(Transport):
    """A transport that must never be used: the core does no I/O."""

    def __init__(self) -> None:
        super().__init__("none://", trace=False)

    def _read_some(self, timeout: float) -> bytes:
        raise AssertionError("the core read the line")

    def _write(self, data: bytes) -> None:
        raise AssertionError("the core wrote the line")

    def _close(self) -> None:
        pass


def core(**options: Any) -> Id003Acceptor:
    return Id003Acceptor(NoLine(), values={0x61: 500, 0x62: 1000}, **options)


def recorded(op: Op[T], steps: list[Any]) -> Op[T]:
    """``op`` unchanged, with every step it yields (requests, Deliver, Wait) kept in order."""
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


def test_escrow_stack_then_vend_valid_acked_only_after_the_credit_was_delivered() -> None:
    dev = core()
    sunk: list[CashEvent] = []
    steps: list[Any] = []

    events, sent = replay(recorded(dev.poll_op(), steps), [(Status.ESCROW, b"\x62")],
                          sink=sunk.append)
    assert [e.kind for e in events] == [K.ESCROW] and sent == [STATUS]
    assert steps == [STATUS, Deliver(events[0])]

    _none, sent = replay(dev.decide_op(Command.STACK_1), [(Status.ACK, b"")])
    assert sent == [Request(Command.STACK_1, retry=False)]

    steps.clear()
    at_delivery: list[list[Any]] = []

    def sink(event: CashEvent) -> None:
        at_delivery.append(list(steps))
        sunk.append(event)

    events, sent = replay(recorded(dev.poll_op(), steps), [(Status.VEND_VALID, b""), None],
                          sink=sink)
    (credit,) = events
    assert (credit.kind, credit.value) == (K.CREDIT, 1000)
    assert steps == [STATUS, Deliver(credit), ACK] and sent == [STATUS, ACK]
    assert at_delivery == [[STATUS, Deliver(credit)]]  # no ACK yielded before the sink took it
    assert dev.tracker.credited

    # The ACK was lost: VEND VALID comes again, is acknowledged again, and is no new credit.
    events, sent = replay(dev.poll_op(), [(Status.VEND_VALID, b""), None], sink=sunk.append)
    assert events == [] and sent == [STATUS, ACK]
    assert [e.kind for e in sunk] == [K.ESCROW, K.CREDIT]


def test_a_sink_that_fails_means_no_ack_and_the_same_credit_next_time() -> None:
    dev = core()
    replay(dev.poll_op(), [(Status.ESCROW, b"\x61")])
    refused: list[CashEvent] = []

    def disk_full(event: CashEvent) -> None:
        refused.append(event)
        raise OSError("disk full")

    steps: list[Any] = []
    with pytest.raises(OSError, match="disk full"):
        replay(recorded(dev.poll_op(), steps), [(Status.VEND_VALID, b""), None],
               sink=disk_full)
    assert steps == [STATUS, Deliver(refused[0])]  # the ACK request was never made
    assert not dev.tracker.credited

    taken: list[CashEvent] = []
    events, sent = replay(dev.poll_op(), [(Status.VEND_VALID, b""), None], sink=taken.append)
    assert sent == [STATUS, ACK]
    assert [e.event_id for e in taken] == [refused[0].event_id]  # the same credit, once
    assert events == taken and dev.tracker.credited


SETTINGS = [(Command.SET_DENOMINATIONS, b"\xff\xff"), (Command.SET_SECURITY, b"\x00\x00"),
            (Command.SET_COMMUNICATION_MODE, b"\x00"), (Command.SET_INHIBIT, b"\x01"),
            (Command.SET_OPTIONAL_FUNCTION, b"\x00\x00")]


def test_start_yields_wait_steps_while_the_acceptor_initialises() -> None:
    dev = core()
    steps: list[Any] = []
    replies: list[Any] = [(Command.VERSION_REQUEST, b"i(EUR)100-SS"), (Status.ACK, b""),
                          (Status.INITIALIZE, b""), (Status.INITIALIZE, b""),
                          (Status.INITIALIZE, b""), (Status.DISABLED, b""), *SETTINGS]
    _none, sent = replay(recorded(dev.start_op(), steps), replies)
    assert [type(s).__name__ for s in steps] == (
        ["Request"] * 3 + ["Wait", "Request"] * 3 + ["Request"] * 5)
    assert [s for s in steps if isinstance(s, Wait)] == [Wait(POLL_INTERVAL)] * 3
    assert [r.code for r in sent] == [Command.VERSION_REQUEST, Command.RESET,
                                      *[Command.STATUS_REQUEST] * 4, *[c for c, _ in SETTINGS]]
    assert dev.version == "i(EUR)100-SS" and not dev.enabled and dev.stats["resets"] == 1


def test_the_initialize_deadline_counts_waits_not_a_clock() -> None:
    dev = core(initialize_timeout=0.25)
    replies: list[Any] = [(Command.VERSION_REQUEST, b""), (Status.ACK, b""),
                          *[(Status.INITIALIZE, b"")] * 10]
    steps: list[Any] = []
    with pytest.raises(DeviceFault, match=r"still INITIALIZE 0\.25 s after RESET"):
        replay(recorded(dev.start_op(), steps), replies)
    assert sum(isinstance(s, Wait) for s in steps) == 3  # 3 x 0.1 s >= 0.25 s


def test_a_lost_stack_ack_is_settled_by_the_status_never_by_a_second_stack() -> None:
    dev = core()
    _none, sent = replay(dev.decide_op(Command.STACK_1),
                         [NoResponseError("ACK lost"), (Status.STACKING, b"")])
    assert sent == [Request(Command.STACK_1, retry=False), STATUS]
    _none, sent = replay(dev.decide_op(Command.RETURN),
                         [NoResponseError("lost"), (Status.ESCROW, b"\x61"), (Status.ACK, b"")])
    assert sent == [Request(Command.RETURN, retry=False), STATUS, Request(Command.RETURN)]


def test_power_up_with_a_bill_in_the_stacker_is_a_fault_before_initialising_again() -> None:
    dev = core()
    replay(dev.enable_op(), [(Command.SET_DENOMINATIONS, b"\xfc\xff"),
                             (Command.SET_INHIBIT, b"\x00")])
    steps: list[Any] = []
    replies: list[Any] = [(Status.POWER_UP_BILL_STACKER, b""),
                          (Command.VERSION_REQUEST, b""), (Status.ACK, b""),
                          (Status.DISABLED, b""), *SETTINGS,
                          (Command.SET_DENOMINATIONS, b"\xfc\xff"),
                          (Command.SET_INHIBIT, b"\x00")]
    events, sent = replay(recorded(dev.poll_op(), steps), replies)
    assert [e.kind for e in events] == [K.DEVICE_RESET, K.FAULT]
    assert steps[1:3] == [Deliver(events[0]), Deliver(events[1])]  # before any command
    assert K.CREDIT not in [e.kind for e in events] and dev.enabled
    assert sent[-2:] == [Request(Command.SET_DENOMINATIONS, b"\xfc\xff"),
                         Request(Command.SET_INHIBIT, b"\x00")]


def _pending_credit() -> tuple[Id003Acceptor, CashEvent]:
    """A host that delivered a VEND VALID and died before the journal wrote: the acceptor
    repeats it, unacknowledged."""
    before = core()
    replay(before.poll_op(), [(Status.ESCROW, b"\x62")])
    first: list[CashEvent] = []

    def crash(event: CashEvent) -> None:
        first.append(event)
        raise OSError("the machine stopped before the journal wrote")

    with pytest.raises(OSError):
        replay(before.poll_op(), [(Status.VEND_VALID, b"")], sink=crash)
    dev = core()
    dev.restore(before.checkpoint())
    return dev, first[0]


RESET = Request(Command.RESET)


def test_a_credit_pending_at_a_restart_is_delivered_with_its_old_id_before_the_reset() -> None:
    """RESET ends the VEND VALID (the note goes to the cash box): the credit goes to the sink
    first, so a start cut short after the RESET (an adapter pulled again) loses nothing."""
    dev, first = _pending_credit()
    steps: list[Any] = []
    seen: list[CashEvent] = []
    replay(recorded(dev.start_op(), steps),
           [(Status.VEND_VALID, b""), (Command.VERSION_REQUEST, b""), (Status.ACK, b""),
            (Status.DISABLED, b""), *SETTINGS], sink=seen.append)
    assert [e.event_id for e in seen] == [first.event_id] and seen[0].value == 1000
    assert steps.index(Deliver(seen[0])) < steps.index(RESET)
    assert dev.tracker.credited and dev.checkpoint()["credited"]
    events, sent = replay(dev.poll_op(), [(Status.DISABLED, b"")])
    assert sent == [STATUS]  # nothing held back for the first poll
    assert K.CREDIT not in [e.kind for e in events]


def test_a_start_cut_off_after_the_reset_has_delivered_the_pending_credit() -> None:
    dev, first = _pending_credit()
    seen: list[CashEvent] = []
    with pytest.raises(NoResponseError):
        replay(dev.start_op(), [(Status.VEND_VALID, b""), (Command.VERSION_REQUEST, b""),
                                (Status.ACK, b""), NoResponseError("pulled")], sink=seen.append)
    assert [e.event_id for e in seen] == [first.event_id]
    # The next start finds the acceptor past the RESET: nothing pending, nothing to add.
    again = core()
    again.restore(dev.checkpoint())
    more: list[CashEvent] = []
    replay(again.start_op(), [(Status.INITIALIZE, b""), (Command.VERSION_REQUEST, b""),
                              (Status.ACK, b""), (Status.DISABLED, b""), *SETTINGS],
           sink=more.append)
    assert more == []


def test_a_start_cut_off_before_the_reset_reads_the_same_credit_again() -> None:
    """The RESET never left: the acceptor still says VEND VALID; the credit it delivered is
    not delivered twice (same note, already taken)."""
    dev, first = _pending_credit()
    seen: list[CashEvent] = []
    with pytest.raises(NoResponseError):
        replay(dev.start_op(), [(Status.VEND_VALID, b""), (Command.VERSION_REQUEST, b""),
                                NoResponseError("pulled")], sink=seen.append)
    again = core()
    again.restore(dev.checkpoint())
    replay(again.start_op(), [(Status.VEND_VALID, b""), (Command.VERSION_REQUEST, b""),
                              (Status.ACK, b""), (Status.DISABLED, b""), *SETTINGS],
           sink=seen.append)
    assert [e.event_id for e in seen] == [first.event_id]


def test_the_pending_credit_is_valued_with_the_acceptors_own_table() -> None:
    """Read before RESET, valued after CURRENCY ASSIGN: the acceptor's table (0x62 worth 2
    main units here), not the defaults it had before it asked."""
    before = Id003Acceptor(NoLine())
    table = bytes((0x61, 0x00, 1, 0, 0x62, 0x00, 2, 0))  # 0x61 = 100, 0x62 = 200
    replay(before.poll_op(), [(Status.ESCROW, b"\x62")])
    dev = Id003Acceptor(NoLine())
    dev.restore(before.checkpoint())
    seen: list[CashEvent] = []
    replay(dev.start_op(), [(Status.VEND_VALID, b""), (Command.VERSION_REQUEST, b""),
                            (CURRENCY_ASSIGN, table), (Status.ACK, b""),
                            (Status.DISABLED, b""), *SETTINGS], sink=seen.append)
    assert [(e.kind, e.value) for e in seen] == [(K.CREDIT, dev.values[0x62])]
    assert dev.values[0x62] != DEFAULT_VALUES[0x62]


def test_a_note_still_stacking_at_a_resumed_start_is_read_before_the_reset() -> None:
    """An adapter plugged back (or a restart) while the note the host stacked is still on
    its way: RESET now would drop its VEND VALID while the note ends in the cash box, so
    the start waits for VEND VALID and delivers the credit with its old id."""
    before = core()
    replay(before.poll_op(), [(Status.ESCROW, b"\x61")])
    dev = core()
    dev.restore(before.checkpoint())
    steps: list[Any] = []
    replay(recorded(dev.start_op(), steps),
           [(Status.STACKING, b""), (Status.STACKING, b""), (Status.VEND_VALID, b""),
            (Command.VERSION_REQUEST, b""), (Status.ACK, b""), (Status.DISABLED, b""),
            *SETTINGS])
    assert sum(isinstance(s, Wait) for s in steps) >= 2  # waited, never slept
    events = [s.event for s in steps if isinstance(s, Deliver)]
    assert [e.kind for e in events] == [K.CREDIT] and events[0].event_id.endswith("/1/credit")
    assert steps.index(Deliver(events[0])) < steps.index(RESET)


def test_a_late_reply_read_for_currency_assign_fails_the_start_not_the_values() -> None:
    """A start on a bad line: the acceptor's table answered late, the host reads a late
    VERSION echo in its place. Kept, that valued every note with the defaults (an acceptor
    of another currency credited at EUR values); only INVALID COMMAND means "no table"."""
    dev = Id003Acceptor(NoLine())
    with pytest.raises(UnexpectedReplyError, match="CURRENCY ASSIGN answered"):
        replay(dev.start_op(), [(Command.VERSION_REQUEST, b"v"),
                                (Command.VERSION_REQUEST, b"v")])
    dev = Id003Acceptor(NoLine())
    replay(dev.start_op(), [(Command.VERSION_REQUEST, b"v"), (Status.INVALID_COMMAND, b""),
                            (Status.ACK, b""), (Status.DISABLED, b""), *SETTINGS])
    assert dev.values == DEFAULT_VALUES
