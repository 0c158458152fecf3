"""What every ccTalk peripheral shares: identification, reset, the bus, and the buffered
event reading of coin acceptors and bill validators (master inhibit, inhibit mask, event
counter).
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections import deque
from dataclasses import dataclass
from typing import Any, TypeVar

from vendhw.devices.cash import CashDevice, CashEvent, EventSink
from vendhw.devices.cctalk.bus import CcTalkBus, Request
from vendhw.devices.cctalk.counter import (
    CounterState,
    buffer_fields,
    counter_advance,
    read_buffer,
)
from vendhw.devices.cctalk.tables import (
    BUFFER_EVENTS,
    BUFFER_REPLY_LENGTH,
    COIN_ACCEPTOR_ADDRESS,
    INHIBIT_CHECK_POLLS,
    RESET_TIMEOUT,
    K,
    ascii_text,
    parse_reply,
)
from vendhw.devices.engine import Deliver, Op
from vendhw.errors import ConfigurationError, FramingError, NakError, NoResponseError
from vendhw.framing.cctalk import (
    COMMS_REVISION_REPLY,
    HEADERS,
    MASTER_INHIBIT_STATUS_REPLY,
    SERIAL_NUMBER_REPLY,
    Header,
)

log = logging.getLogger("vendhw.devices.cctalk")  # one logger for the package, as before

T = TypeVar("T")


_ascii = ascii_text  # the former name, still imported from here


# --- shared device core -----------------------------------------------------------------------


class Unanswered(NoResponseError):
    """An identification read went unanswered after every resend (the device may not
    implement it, or the line lost it: the host cannot tell which)."""



@dataclass
class Identity:
    """What a device says about itself (headers 246, 245, 244, 242, 241, 4)."""

    manufacturer: str = ""
    category: str = ""
    product: str = ""
    serial: int | None = None
    serial_bytes: bytes = b""
    software: str = ""
    comms_revision: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"manufacturer": self.manufacturer, "category": self.category,
                "product": self.product, "serial": self.serial, "software": self.software,
                "comms_revision": self.comms_revision}


class CcTalkDevice(CashDevice):
    """What every ccTalk peripheral shares: address, identification, the bus, the op style."""

    default_address: int = COIN_ACCEPTOR_ADDRESS
    expected_category: tuple[str, ...] = ()
    """Equipment category ids (header 245) this class expects; another one is logged."""

    def __init__(self, bus: CcTalkBus, *, address: int | None = None, name: str = "") -> None:
        self.bus = bus
        self.address = self.default_address if address is None else int(address)
        if not 1 < self.address < 256:
            raise ConfigurationError(f"ccTalk address must be 2..255, got {self.address}")
        transport = bus.transport
        # The port by its identity when it has one (usb-serial://VID:PID?serial=...: the query
        # is what tells two adapters of one VID:PID apart); otherwise the URL without its
        # options (a simulator's faults, a pyserial handler's settings), as always.
        where = getattr(transport, "identity", None) or transport.url.split("?")[0]
        self.name = name or f"cctalk-{self.address}@{where}"
        former = f"cctalk-{self.address}@{transport.url.split('?')[0]}"
        self.former_names = () if name or former == self.name else (former,)
        """The name this device had before identities were kept in it (the journal's
        checkpoint may still be stored under it)."""
        self.identity = Identity()
        self._pending: deque[CashEvent] = deque()

    # -- core helpers (generators) ---------------------------------------------------------------

    def _req(self, header: int, data: bytes = b"", **kw: Any) -> Request:
        return Request(self.address, header, bytes(data), **kw)

    def _ask_op(self, header: int, data: bytes = b"") -> Op[bytes | None]:
        """A read some devices do not implement: its reply, or None after a NAK. Silence
        after every resend raises :class:`Unanswered` once the line is back in step.

        ccTalk replies do not name their command: a reply that comes after the host gave up
        on it is taken for the next command's (a coin id for the next channel's, a product
        code for the serial number). So the read is resent as itself (a late answer to it is
        the same answer), and after a read that stayed silent a SIMPLE POLL, answered by an
        ACK without data, goes first: a late reply with data is skipped, never read as the
        answer to what comes next. (A device silent to that poll fails the operation.)"""
        try:
            reply: bytes = yield self._req(header, data)
        except NakError:
            return None
        except (NoResponseError, FramingError) as exc:
            failure = exc
        else:
            return reply
        yield self._req(Header.SIMPLE_POLL, reply_length=0)
        raise Unanswered(f"ccTalk address {self.address} did not answer "
                         f"{HEADERS.get(header, header)}: {failure}")

    def _optional(self, header: int, data: bytes = b"") -> Op[bytes | None]:
        """A read some devices do not implement: NAK or silence gives None (see
        :meth:`_ask_op`)."""
        try:
            return (yield from self._ask_op(header, data))
        except Unanswered:
            return None

    def identify_op(self) -> Op[Identity]:
        """Simple poll (it must answer), then the identification headers it implements."""
        yield self._req(Header.SIMPLE_POLL)
        ident = Identity()
        for header, attr in ((Header.REQUEST_MANUFACTURER_ID, "manufacturer"),
                             (Header.REQUEST_EQUIPMENT_CATEGORY_ID, "category"),
                             (Header.REQUEST_PRODUCT_CODE, "product"),
                             (Header.REQUEST_SOFTWARE_REVISION, "software")):
            reply = yield from self._optional(header)
            if reply is not None:
                setattr(ident, attr, _ascii(reply))
        serial = yield from self._optional(Header.REQUEST_SERIAL_NUMBER)
        if serial:
            # A reply shorter than 3 bytes is kept as read, as before: it names the device
            # in event ids but cannot serve as a hopper's dispense check.
            short = len(serial) < SERIAL_NUMBER_REPLY.fixed_size
            ident.serial_bytes = serial if short else \
                parse_reply(SERIAL_NUMBER_REPLY, serial)["serial"]
            ident.serial = int.from_bytes(ident.serial_bytes, "little")
        comms = yield from self._optional(Header.REQUEST_COMMS_REVISION)
        if comms and len(comms) >= COMMS_REVISION_REPLY.fixed_size:
            rev = parse_reply(COMMS_REVISION_REPLY, comms)
            ident.comms_revision = f"{rev['major']}.{rev['minor']} (release {rev['release']})"
        if self.expected_category and ident.category and ident.category.lower() not in \
                (c.lower() for c in self.expected_category):
            log.warning("%s: address %d is a %r, not a %s", self.name, self.address,
                        ident.category, " or ".join(self.expected_category))
        self.identity = ident
        return ident

    def reset_op(self) -> Op[None]:
        """RESET DEVICE, then wait (on reply deadlines, not sleeps) until it polls again."""
        yield self._req(Header.RESET_DEVICE, retries=0)
        attempts = max(1, int(RESET_TIMEOUT / max(self.bus.reply_timeout, 0.01)))
        yield self._req(Header.SIMPLE_POLL, retries=attempts)

    @property
    def ident_key(self) -> str:
        """Stable identity for event ids: serial number when known, else the bus address."""
        serial = self.identity.serial
        return f"cctalk:{self.address}:{serial if serial is not None else 'noserial'}"

    def run(self, op: Op[T], sink: EventSink | None = None) -> T:
        return self.bus.run(op, sink)

    def reset_device(self) -> None:
        """Send RESET DEVICE (the device comes back with its power-up defaults)."""
        self.run(self.reset_op())

    def close(self) -> None:
        self.bus.close()


def _drain(pending: deque[CashEvent]) -> Op[list[CashEvent]]:
    """Deliver events queued outside a poll (a payout's start), one committed at a time."""
    out: list[CashEvent] = []
    while pending:
        event = pending[0]
        yield Deliver(event)
        pending.popleft()
        out.append(event)
    return out


class _BufferedAcceptor(CcTalkDevice):
    """Coin acceptors and bill validators: master inhibit, inhibit mask, event buffer."""

    read_header: int = Header.READ_BUFFERED_CREDIT_OR_ERROR_CODES

    def __init__(self, bus: CcTalkBus, *, address: int | None = None, name: str = "",
                 resume: dict[str, Any] | None = None) -> None:
        super().__init__(bus, address=address, name=name)
        self.counter = CounterState.resume(resume) if resume else CounterState()
        self._resumed = resume is not None
        self.values: dict[int, int] = {}
        """Channel -> value in minor units (channels without a known value are absent)."""
        self.ids: dict[int, str] = {}
        self.enabled = False
        self._polls = 0
        self.channels: set[int] | None = None
        """Channels to enable; None = every channel with a known value."""
        self.unread: set[int] = set()
        """Channels whose id went unanswered at start (a bad line, or a device silent to
        it): never enabled without a value, and a credit found on one is for an operator."""

    # -- operations --------------------------------------------------------------------------

    def baseline_op(self) -> Op[None]:
        """First buffer reading: set the counter baseline (or check the resumed one)."""
        # Only a reply of the declared 11 bytes, as in poll_op: a late answer to an earlier
        # command (a coin id) taken for it would set a wrong baseline, and the next poll
        # would credit events from before this session.
        data: bytes = yield self._req(self.read_header, reply_length=BUFFER_REPLY_LENGTH)
        counter, _ = buffer_fields(data)
        read_as = super().ident_key
        if not self.counter.ident:
            self.counter.ident = read_as
        elif self.counter.ident != read_as:
            log.warning("%s: reads as %s now, its events as %s before: named as before",
                        self.name, read_as, self.counter.ident)
        if self.counter.last is None:
            if counter:
                log.info("%s: %d events predate this session (counter %d); pass resume= "
                         "with a checkpoint to recover them", self.name,
                         min(counter, BUFFER_EVENTS), counter)
            self.counter.last = counter
        elif counter == 0 and self.counter.last != 0:
            # device reset while the host was away
            self.counter = CounterState(last=0, ident=self.counter.ident)

    @property
    def ident_key(self) -> str:
        """The identity this session's events are named with (see :class:`CounterState`)."""
        return self.counter.ident or super().ident_key

    def mask_op(self, enable: bool) -> Op[None]:
        channels = self.channels if self.channels is not None else set(self.values)
        channels = channels - (self.unread - set(self.values))  # no value: not taken
        mask = 0
        if enable:
            for channel in channels:
                if 1 <= channel <= 16:
                    mask |= 1 << (channel - 1)
        yield self._req(Header.MODIFY_INHIBIT_STATUS, mask.to_bytes(2, "little"))
        yield self._req(Header.MODIFY_MASTER_INHIBIT_STATUS, bytes((1 if enable else 0,)))
        self.enabled = enable

    def master_inhibit_op(self) -> Op[bool]:
        """True when the device's master inhibit is active (accepting nothing)."""
        data: bytes = yield self._req(Header.REQUEST_MASTER_INHIBIT_STATUS,
                                      reply_length=MASTER_INHIBIT_STATUS_REPLY.fixed_size)
        if not data:
            return True  # an ACK without the status byte reads as inhibited, as before
        return not parse_reply(MASTER_INHIBIT_STATUS_REPLY, data)["status"] & 1

    def poll_op(self) -> Op[list[CashEvent]]:
        """Read the event buffer; deliver each new event, committing it right after."""
        out: list[CashEvent] = yield from _drain(self._pending)
        data: bytes = yield self._req(self.read_header, reply_length=BUFFER_REPLY_LENGTH)
        state = self.counter
        read = read_buffer(state, data)
        if read.suspicious and not read.reset:
            # A counter far from the committed one is a burst of lost events or a reset...
            # or a late reply to an earlier read taken for this one (an older counter reads
            # as a wrap past the buffer, whose five events were credited already). A stale
            # reply does not come twice: read again and believe the second reading.
            data = yield self._req(self.read_header, reply_length=BUFFER_REPLY_LENGTH)
            read = read_buffer(state, data)
        reset = read.reset
        if read.suspicious and self.enabled:
            # A jump past the buffer is a burst of lost events, unless the device reset and
            # counted again from 1. A reset device is master-inhibited: ask it.
            if (yield from self.master_inhibit_op()):
                reset = True
        if reset:
            event = CashEvent(K.DEVICE_RESET, self.name, reason="event counter restarted "
                              "(power-up or reset); events since the last poll are unknown",
                              event_id=f"{self.ident_key}/{state.session}/reset",
                              detail={"counter": read.counter, "last": state.last})
            yield Deliver(event)
            out.append(event)
            state = self.counter = CounterState(last=0, ident=state.ident)
            if self.enabled:
                yield from self.mask_op(True)  # a reset device is inhibited again
            if read.counter == 0:
                return out
            read = read_buffer(state, data)
        if read.lost:
            first = state.ordinal + 1
            # What the lost events were is gone; each was at most one item of the highest
            # enabled value, so an operator is told that much (an upper bound, never credited).
            at_most = read.lost * self._highest_value()
            event = CashEvent(
                K.FAULT, self.name, at_most, self.currency,
                reason=f"{read.lost} event(s) lost: the counter moved from {state.last} to "
                       f"{read.counter}, past the {BUFFER_EVENTS}-event buffer (poll faster); "
                       f"at most {at_most} minor units not credited, check the cash box",
                event_id=f"{self.ident_key}/{state.session}/{first}-lost",
                detail={"lost": read.lost, "counter": read.counter, "last": state.last,
                        "needs_review": True, "value_is_upper_bound": True})
            yield Deliver(event)
            out.append(event)
            state.last = counter_advance(state.last or 0, read.lost)
            state.ordinal += read.lost
        refused = False
        for a, b in read.results:
            ordinal = state.ordinal + 1
            found = self._event(a, b, f"{self.ident_key}/{state.session}/{ordinal}")
            if found is not None:
                yield Deliver(found)
                out.append(found)
            state.last = counter_advance(state.last or 0, 1)
            state.ordinal = ordinal
            refused = refused or self._inhibited(a, b)
        self._polls += 1
        if self.enabled and not reset and (refused or self._polls % INHIBIT_CHECK_POLLS == 0):
            # A reset with no event since the last one leaves the counter at 0, invisible;
            # but the device is master-inhibited again, refusing money the host enabled.
            if (yield from self.master_inhibit_op()):
                event = CashEvent(K.DEVICE_RESET, self.name, reason="master inhibit active "
                                  "again although enabled: the device restarted",
                                  event_id=f"{self.ident_key}/{state.session}/reset-inhibit"
                                           f"{state.ordinal}")
                yield Deliver(event)
                out.append(event)
                self.counter = CounterState(last=state.last, ident=state.ident)
                yield from self.mask_op(True)
        return out

    def _unread(self, channel: int, why: Unanswered) -> None:
        self.unread.add(channel)
        log.warning("%s: channel %d has no value: %s (a credit on it goes to an operator)",
                    self.name, channel, why)

    def _unvalued(self, channel: int, event_id: str, detail: dict[str, Any]) -> CashEvent:
        """Money taken on a channel whose id went unanswered at start (it was enabled before
        this start, and the event waited in the buffer): its value is unknown, so it is
        not credited; an operator is told, with the highest value the device knows."""
        at_most = max(self.values.values(), default=0)
        return CashEvent(
            K.FAULT, self.name, at_most, self.currency, channel,
            reason=f"money taken on channel {channel}, whose id went unanswered at start: "
                   f"value unknown (the highest known is {at_most} minor units); not "
                   "credited, check the cash box", event_id=event_id,
            detail={**detail, "channel": channel, "needs_review": True,
                    "value_unknown": True})

    def _highest_value(self) -> int:
        """The highest value the device may take now (enabled channels with a value)."""
        channels = self.channels if self.channels is not None else set(self.values)
        return max((self.values.get(c, 0) for c in channels), default=0)

    @abstractmethod
    def _event(self, a: int, b: int, event_id: str) -> CashEvent | None:
        """The CashEvent for one buffered (result A, result B) pair, or None to skip it."""

    def _inhibited(self, a: int, b: int) -> bool:
        """The event says the device refused money because of an inhibit."""
        return False

    # -- CashDevice --------------------------------------------------------------------------

    def enable(self) -> None:
        self.run(self.mask_op(True))

    def disable(self) -> None:
        self.run(self.mask_op(False))

    def poll(self, sink: EventSink | None = None) -> list[CashEvent]:
        return self.run(self.poll_op(), sink)

    def checkpoint(self) -> dict[str, Any]:
        """The committed counter state; store it with the journal, pass it back as resume=."""
        return self.counter.checkpoint()

    def restore(self, data: dict[str, Any]) -> None:
        """Continue from a :meth:`checkpoint` (like ``resume=``), before :meth:`start`;
        :class:`~vendhw.machine.cash.CashAcceptor` does this from its journal."""
        self.counter = CounterState.resume(data)
        self._resumed = True

    def status(self) -> dict[str, Any]:
        inhibited = self.run(self.master_inhibit_op())
        return {"device": self.name, "address": self.address, **self.identity.to_dict(),
                "currency": self.currency, "values": {str(k): v for k, v in
                                                      sorted(self.values.items())},
                "ids": {str(k): v for k, v in sorted(self.ids.items())},
                "master_inhibit": inhibited, "counter": self.counter.checkpoint()}
