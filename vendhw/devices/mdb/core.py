"""What changer and bill cores share: the steps they yield, the poll counter that names
events, and the RESET and POLL rules (sans-I/O generator operations)."""

from __future__ import annotations

import secrets
import zlib
from dataclasses import dataclass, field
from typing import Any

from vendhw.devices.cash import CashEvent, CashEventKind
from vendhw.devices.engine import Deliver, Op, Wait
from vendhw.devices.mdb.tables import JUST_RESET_WAIT, POLL_DATA_MAX, SETUP_READS
from vendhw.errors import NoResponseError, NotSupportedError, UnexpectedReplyError
from vendhw.framing.mdb import BillCommand, ChangerCommand


@dataclass
class _PollState:
    """Event ids for POLL data: the number of POLL replies ACKed so far and a CRC of the data.
    The host keeps events the sink refused and offers them again with the same ids (the
    journal keeps one of each); new data always gets new ones."""

    session: str = field(default_factory=lambda: secrets.token_hex(4))
    delivered: int = 0
    last: bytes = b""
    """The data the previous POLL delivered (b"" when it had none)."""
    repeats: int = 0
    """Copies of ``last`` taken as repeats so far (each flagged to an operator)."""

    def prefix(self, data: bytes) -> str:
        return f"{self.session}:{self.delivered}:{zlib.crc32(data):08x}"

    def repeat(self, data: bytes) -> bool:
        """The same data right after we ACKed it: the ACK was lost on the way and the
        peripheral sends it again (MDB has no sequence number to tell)."""
        return bool(data) and data == self.last and self.delivered > 0


@dataclass
class _Payout:
    """A changer payout in progress: DISPENSE batches (or level-3 EXPANSION PAYOUT values)
    still to send, and what was sent or reported paid so far."""

    requested: int
    batches: list[tuple[int, int]]
    tubes_before: list[int]
    event_id: str
    sent: dict[int, int] = field(default_factory=dict)
    chunks: list[int] = field(default_factory=list)
    """Level 3: EXPANSION PAYOUT values (scaled units) still to send; empty for DISPENSE."""
    expansion: bool = False
    paid: dict[int, int] = field(default_factory=dict)
    """Level 3: coins of each type PAYOUT STATUS reported paid."""


@dataclass(frozen=True)
class Request:
    """One MDB command to the device (``command`` is added to its address)."""

    command: int
    data: bytes = b""
    ack: bool = True
    """ACK reply data at once (within ``ACK_TIMEOUT``, before the core hands anything to a
    sink). False only for the POLL read before RESET: RESET drops that data anyway, and an ACK
    would tell the peripheral it may forget it."""
    longest: int | None = None
    """The most data bytes a reply to this command carries (POLL: ``POLL_DATA_MAX``); a
    longer reply is the late answer to an earlier command (a SETUP, an IDENTIFICATION after
    a start on a bad line): skipped, never ACKed nor read as coins."""


@dataclass(frozen=True)
class TubeCounts:
    """The changer's tube counts, read now, in the middle of an operation (a payout's before
    and after). The runner answers with its :meth:`MdbCoinChanger.tube_status` (one TUBE
    STATUS exchange of its own), so every count goes through that one method."""


Step = Request | TubeCounts | Deliver | Wait
"""What changer and bill operations yield (:mod:`vendhw.devices.engine`)."""

JUST_RESET_PAUSE = 0.05
"""Seconds between POLLs after RESET while the 'was reset' status has not come."""
JUST_RESET_POLLS = round(JUST_RESET_WAIT / JUST_RESET_PAUSE)
"""POLLs after RESET that may go by before 'was reset' must have come (about
``JUST_RESET_WAIT`` of pauses): counted, so the core reads no clock."""


class _CashCore:
    """What the VMC knows of one changer or bill validator, and the protocol rules shared by
    both as generator operations (sans-I/O: the runner does every exchange)."""

    address: int
    commands: type[ChangerCommand] | type[BillCommand]
    """RESET, SETUP and POLL of this device type (the same codes for changers and bills)."""
    was_reset: int
    """The POLL status byte that says the device was reset."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.currency = ""
        self.port = ""
        """Where the device is (a port or URL), for messages only."""
        self._poll_state = _PollState()
        self._after_reset = b""
        """Activities that came with JUST RESET (a jam, a status): reported at the first poll."""
        self._undelivered: list[CashEvent] = []
        """Events ACKed to the peripheral that the sink has not taken yet (it raised)."""
        self._resumed = False
        self._setup_crc = ""
        """CRC-32 of the SETUP reply this device gave (kept in the checkpoint), "" unknown."""

    def checkpoint(self) -> dict[str, Any]:
        """The poll counter that names events, and the data the last POLL delivered (so a
        copy the peripheral repeats after a restart is still known as a repeat), and a CRC
        of the device's SETUP (so a damaged one is asked again); the cash journal stores it
        with the events."""
        state = self._poll_state
        return {"session": state.session, "delivered": state.delivered,
                "last": state.last.hex(), "repeats": state.repeats, "setup": self._setup_crc}

    def restore(self, data: dict[str, Any]) -> None:
        """Continue from a :meth:`checkpoint`, before :meth:`reset_op`: data the peripheral
        still repeats is read before RESET and delivered, with its old ids, before the RESET
        that drops it. (Checkpoints written before ``last`` was kept restore without it.)"""
        self._poll_state = _PollState(str(data["session"]), int(data["delivered"]),
                                      bytes.fromhex(str(data.get("last", ""))),
                                      int(data.get("repeats", 0)))
        self._setup_crc = str(data.get("setup", ""))
        self._resumed = True

    def activities(self, data: bytes) -> list[bytes]:
        """POLL data split into its activities (one byte each unless a subclass says)."""
        return [data[i:i + 1] for i in range(len(data))]

    def parse_poll(self, data: bytes, prefix: str) -> list[CashEvent]:
        raise NotSupportedError(self.name)

    def _poll_request(self, *, ack: bool = True) -> Request:
        return Request(self.commands.POLL, ack=ack, longest=POLL_DATA_MAX)

    def read_setup_op(self, *, ack: bool = True) -> Op[None]:
        """SETUP: the device's level, currency and values (what :meth:`parse_poll` needs);
        ``ack=False`` leaves the replies unacknowledged (see :meth:`reset_op`)."""
        raise NotSupportedError(self.name)
        yield  # pragma: no cover  (a generator)

    def _setup_reply_op(self, *, ack: bool = True) -> Op[bytes]:
        """The SETUP reply. One that differs from the SETUP this device gave before (kept in
        the checkpoint) is asked again until two in a row agree (``SETUP_READS`` at most):
        a reply that lost a zero byte still sums right and reads as another scaling."""
        reply = yield from self._one_setup_op(ack)
        if self._setup_crc and f"{zlib.crc32(reply):08x}" != self._setup_crc:
            for _ in range(SETUP_READS - 1):
                again = yield from self._one_setup_op(ack)
                if again == reply:
                    break
                reply = again
            else:
                raise UnexpectedReplyError(f"{self.name}: {SETUP_READS} SETUP replies, no two "
                                           "in a row alike (a bad line?)")
        self._setup_crc = f"{zlib.crc32(reply):08x}"
        return reply

    def _one_setup_op(self, ack: bool) -> Op[bytes]:
        reply = yield Request(self.commands.SETUP, ack=ack)
        if reply is None:
            raise UnexpectedReplyError(f"{self.name}: SETUP answered ACK instead of data")
        return bytes(reply)

    def reset_op(self) -> Op[None]:
        """RESET, then POLL until 'was reset' comes (found activity by activity); what came
        with it is kept for the first poll.

        After a restore, the data the peripheral still holds (never ACKed: the host went
        away) is read first without an ACK, valued with a SETUP read for it, and delivered
        with its old ids *before* the RESET that drops it: a start cut short after the RESET
        has lost nothing. That SETUP is not ACKed either: a peripheral may take any ACK for
        the one its POLL data waits for, and forget the data before it was delivered. Until
        the RESET is answered the peripheral may still hold it, so it stays the last
        delivered data: read again by the next start, it is the same events (flagged, as any
        repeat)."""
        if self._resumed:
            self._resumed = False
            held = (yield self._poll_request(ack=False)) or b""
            if held:
                yield from self.read_setup_op(ack=False)
                events = self._name_poll_data(held)
                self._poll_state.last = held
                yield from self._deliver_op(events)
        yield Request(self.commands.RESET)
        self._poll_state.last = b""  # the peripheral dropped it: the next POLL cannot repeat it
        reset = bytes((self.was_reset,))
        for attempt in range(JUST_RESET_POLLS):
            if attempt:
                yield Wait(JUST_RESET_PAUSE)
            data = yield self._poll_request()
            activities = self.activities(data or b"")
            if reset in activities:
                self._after_reset = b"".join(a for a in activities if a != reset)
                return
        raise NoResponseError("peripheral did not report 'was reset' after RESET",
                              port=self.port, timeout=JUST_RESET_WAIT)

    def _deliver_op(self, events: list[CashEvent]) -> Op[None]:
        """Each event to the sink; a sink that raises leaves them all in ``_undelivered``."""
        for event in events:
            yield Deliver(event)

    def poll_op(self) -> Op[list[CashEvent]]:
        """POLL once; the runner ACKs the data at once (within ``ACK_TIMEOUT``), then the
        events go to the sink.

        Events the sink refused go to it again first, same ids, before anything new is
        polled. Data equal to what the previous POLL delivered is taken as a repeat after a
        lost ACK: counted once, and an operator is told (two identical coins in two
        consecutive polls would read the same).
        """
        undelivered = self._undelivered
        if undelivered:
            yield from self._deliver_op(undelivered)  # fails again while the sink still fails
            self._undelivered = []
        state = self._poll_state
        instead = yield from self._poll_instead_op()
        if instead is not None:
            self._undelivered = instead
            yield from self._deliver_op(instead)
            self._undelivered = []
            return undelivered + instead
        reply = yield self._poll_request()  # ACKed by the runner as soon as it is read
        data = self._after_reset + (reply or b"")  # held ones first, in the order they came
        self._after_reset = b""
        events = self._name_poll_data(data) if data else []
        state.last = data  # b"" after an empty poll: a repeat can only come at the next POLL
        self._undelivered = events  # ACKed: from here on only this host has them
        events = events + (yield from self._after_poll_op(data, events))  # may fail: kept
        if not events:
            return undelivered
        self._undelivered = events
        yield from self._deliver_op(events)
        self._undelivered = []
        return undelivered + events

    def _name_poll_data(self, data: bytes) -> list[CashEvent]:
        """The events of POLL data, named: new data gets new ids; data equal to what the
        previous POLL delivered is taken as a repeat after a lost ACK."""
        state = self._poll_state
        if not state.repeat(data):
            events = self.parse_poll(data, state.prefix(data))
            state.delivered += 1
            state.repeats = 0
            return events
        # Named as last time, so the journal keeps one; delivered is not advanced, so a
        # third copy is named the same again.
        prefix = f"{state.session}:{state.delivered - 1}:{zlib.crc32(data):08x}"
        events = self.parse_poll(data, prefix)
        credit = sum(e.value for e in events if e.kind is CashEventKind.CREDIT)
        state.repeats += 1
        if credit:
            # One fault per copy: each may be a new coin (a third identical coin after a
            # flagged one is flagged again, not swallowed as the same event id).
            events.append(CashEvent(
                CashEventKind.FAULT, self.name, credit, events[0].currency,
                reason="the previous POLL data came again (our ACK was lost): counted "
                       "once; if the customer really inserted the same again, credit it "
                       "by hand", event_id=f"{prefix}/repeat{state.repeats}",
                detail={"needs_review": True}))
        return events

    def _after_poll_op(self, data: bytes, events: list[CashEvent]) -> Op[list[CashEvent]]:
        """Events the host derives after a POLL (a changer's finished payout)."""
        return []
        yield  # pragma: no cover  (a generator)

    def _poll_instead_op(self) -> Op[list[CashEvent] | None]:
        """Another exchange that takes this poll's place (a level-3 payout), or None."""
        return None
        yield  # pragma: no cover  (a generator)
