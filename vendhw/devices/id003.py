"""JCM ID-003 host: note acceptors with escrow (UBA, iVIZION, WBA, EBA...), reporting CashEvents.

Layers:

* :class:`StatusTracker` (sans-I/O, pure) turns the sequence of status replies into
  :class:`~vendhw.devices.cash.CashEvent` values: a state is reported when it starts (a jam, an
  open stacker, an escrowed note), not on every poll, and VEND VALID becomes one ``credit``
  per note however often the acceptor repeats it.
* :class:`Id003Acceptor` holds the protocol rules as sans-I/O operations
  (:mod:`vendhw.devices.engine`): ``start_op``, ``poll_op``, ``enable_op``, ``decide_op``...
  yield a :class:`Request` (one command), ``Deliver(event)`` for each cash event and
  ``Wait(seconds)`` while the acceptor initialises; they send nothing and never sleep.
  :meth:`Id003Acceptor.run` drives them with :func:`~vendhw.devices.engine.drive`; its
  ``_transact`` frames each request on a :class:`~vendhw.devices.link.FrameLink`
  (direction-aware framer: statuses reuse command codes) and resends idempotent ones.

Credit safety: the acceptor repeats VEND VALID until the host's ACK. The host calls the sink
with the ``credit`` **before** it sends ACK; if the sink raises, no ACK goes and the next poll
delivers the same event (same ``event_id``: the note's escrow number in this session) again.
A VEND VALID repeated because an ACK was lost is acknowledged again without a second credit.
After a power failure an acceptor may report POWER UP WITH BILL IN STACKER: the note reached
the cash box but its credit may never have been acknowledged; that is reported as a ``fault``
for an operator (the host cannot know whether it was already credited), never as a credit.

Facts and sources: ``protocols/id003/README.md`` (no public JCM specification; four
independent implementations agree).
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, TypeVar

from vendhw.devices.cash import CashDevice, CashEvent, CashEventKind, EventSink
from vendhw.devices.engine import Deliver, Op, Wait, drive
from vendhw.devices.link import FrameLink
from vendhw.errors import (
    ConfigurationError,
    DeviceFault,
    NoResponseError,
    UnexpectedReplyError,
)
from vendhw.framing.id003 import (
    CURRENCY_ASSIGN,
    FAILURES,
    INTER_BYTE_GAP,
    POLL_INTERVAL,
    POWER_UPS,
    REJECT_REASONS,
    REPLY_TIMEOUT,
    STATUSES,
    Command,
    Id003Framer,
    Status,
    parse_currency_assign,
)
from vendhw.transport import Transport, open_transport

log = logging.getLogger(__name__)

BAUDRATE = 9600
PARITY = "E"
"""py-id003, hackwin: 9600 baud, 8 data bits, even parity, 1 stop bit."""
RETRIES = 3
"""Resends of a command after silence or a corrupt reply (status requests and settings are
idempotent; STACK and RETURN are checked against the status before they are resent)."""
INITIALIZE_TIMEOUT = 10.0
"""Seconds to wait after RESET for INITIALIZE to end (DISABLE/INHIBIT or IDLING); counted
as :data:`POLL_INTERVAL` waits between status requests."""

T = TypeVar("T")


DEFAULT_VALUES = {0x61: 500, 0x62: 1000, 0x63: 2000, 0x64: 5000, 0x65: 10000,
                  0x66: 20000, 0x67: 50000}
"""Denomination code -> minor units, used only when the acceptor does not answer CURRENCY
ASSIGN (0x8A) with a table and no ``values=`` is given."""
COUNTRY_CURRENCIES = {0x01: "USD", 0x08: "CAD"}
"""CURRENCY ASSIGN country bytes with a public meaning (lamassu-machine
``lib/id003/id003rs232.js`` ``CODES``); other bytes keep the configured ``currency=``."""
ZERO_DECIMAL_CURRENCIES = frozenset({"JPY", "KRW", "HUF", "CLP", "ISK", "VND", "IDR"})

K = CashEventKind

FAULT_EVENTS: dict[int, CashEventKind] = {
    Status.STACKER_FULL: K.CASHBOX_FULL, Status.STACKER_OPEN: K.CASHBOX_REMOVED,
    Status.ACCEPTOR_JAM: K.JAM, Status.STACKER_JAM: K.JAM, Status.CHEATED: K.FRAUD,
    Status.FAILURE: K.FAULT, Status.COMMUNICATION_ERROR: K.FAULT,
    Status.INVALID_COMMAND: K.FAULT,
}
"""Error statuses and the event each one becomes when the acceptor enters it."""
DECIDED = frozenset((Status.STACKING, Status.VEND_VALID, Status.STACKED, Status.RETURNING,
                     Status.IDLING, Status.DISABLED))
"""Statuses after an escrow decision whose ACK was lost: the decision was carried out."""


@dataclass
class StatusTracker:
    """Status replies in, CashEvents out (no I/O). One tracker per acceptor session."""

    device: str
    values: dict[int, int]
    currency: str = ""
    session: str = field(default_factory=lambda: secrets.token_hex(4))
    last: int | None = None
    escrow_code: int = 0
    notes: int = 0
    """Escrows seen in this session: the identity of each note's credit."""
    credited: bool = False
    """The current note's credit was acknowledged (a repeated VEND VALID is not new)."""

    def _event(self, kind: CashEventKind, suffix: str, code: int, **fields: Any) -> CashEvent:
        fields.setdefault("currency", self.currency)
        return CashEvent(kind, self.device, event_id=f"id003:{self.device}/{self.session}/"
                         f"{self.notes}/{suffix}",
                         detail={"status": STATUSES.get(code, f"0x{code:02X}"),
                                 "status_code": code}, **fields)

    def update(self, code: int, data: bytes) -> list[CashEvent]:
        """The events that the status ``code`` (with ``data``) starts; call once per poll."""
        previous, self.last = self.last, code
        changed = code != previous
        out: list[CashEvent] = []
        if code == Status.ESCROW:
            denomination = data[0] if data else 0
            if changed or denomination != self.escrow_code:
                self.notes += 1
                self.escrow_code, self.credited = denomination, False
                out.append(self._event(K.ESCROW, "escrow", code, value=self.value(),
                                       channel=denomination - 0x60, route="escrow"))
        elif code == Status.VEND_VALID:
            if not self.credited:
                out.append(self._event(K.CREDIT, "credit", code, value=self.value(),
                                       channel=self.escrow_code - 0x60 if self.escrow_code
                                       else None, route="cashbox"))
        elif code == Status.REJECTING and changed:
            reason = REJECT_REASONS.get(data[0], f"reject code 0x{data[0]:02X}") if data \
                else "rejected"
            out.append(self._event(K.REJECTED, f"rejected{self.notes}", code, reason=reason))
        elif code == Status.RETURNING and changed:
            out.append(self._event(K.RETURNED, "returned", code, value=self.value(),
                                   route="customer"))
        elif code == Status.DISABLED and changed:
            out.append(self._event(K.DISABLED, f"disabled@{time.time():.3f}", code))
        elif changed and code in FAULT_EVENTS:
            kind = FAULT_EVENTS[code]
            reason = STATUSES.get(code, "").lower()
            if code == Status.FAILURE and data:
                reason = FAILURES.get(data[0], f"failure code 0x{data[0]:02X}")
            out.append(self._event(kind, f"{code:02x}@{time.time():.3f}", code, reason=reason))
        if previous == Status.STACKER_OPEN and code != Status.STACKER_OPEN:
            out.append(self._event(K.CASHBOX_REPLACED, f"replaced@{time.time():.3f}", code))
        return out

    def value(self) -> int:
        return self.values.get(self.escrow_code, 0)


@dataclass(frozen=True)
class Request:
    """One ID-003 command for the runner to send; ``(status or echo code, data)`` comes back.

    Silence after every allowed attempt is thrown back into the operation as
    :class:`~vendhw.errors.NoResponseError`, so the core decides what a lost reply means (an
    escrow decision is checked against the status, never resent blindly).
    """

    code: int
    data: bytes = b""
    retry: bool = True
    """Resend after silence or a corrupt reply (status requests and settings are idempotent;
    STACK, RETURN and HOLD are not)."""
    reply: bool = True
    """False: send only, nothing comes back (the ACK that answers VEND VALID)."""


class Id003Acceptor(CashDevice):
    """A JCM ID-003 note acceptor on one port."""

    def __init__(self, transport: Transport, *, values: dict[int, int] | None = None,
                 currency: str = "EUR", reply_timeout: float = REPLY_TIMEOUT,
                 retries: int = RETRIES, initialize_timeout: float = INITIALIZE_TIMEOUT,
                 name: str = "") -> None:
        self.transport = transport
        self.link = FrameLink(transport, Id003Framer(), incoming="device", gap=INTER_BYTE_GAP)
        self.name = name or f"id003@{transport.url}"
        self.values_override = values is not None
        """``values=`` was given: it wins over the acceptor's CURRENCY ASSIGN table."""
        self.values = dict(values or DEFAULT_VALUES)
        self.values_source = "values=" if values is not None else "default"
        self.currency = currency
        self.reply_timeout = reply_timeout
        self.retries = retries
        self.initialize_timeout = initialize_timeout
        self.tracker = StatusTracker(self.name, self.values, currency)
        self.version = ""
        self.enabled = False
        self.stats = {"retries": 0, "resets": 0}
        self._resumed = False
        self._held: list[CashEvent] = []
        """A credit read before RESET at a resumed start without a sink (RESET drops VEND
        VALID), delivered at the first poll."""

    # -- the runner (all of the I/O) -------------------------------------------------------------

    def run(self, op: Op[T], sink: EventSink | None = None) -> T:
        """Drive one operation to its end with blocking I/O; events go to ``sink``."""
        return drive(op, self._transact, sink=sink)

    def _transact(self, request: Request) -> tuple[int, bytes] | None:
        """Send one command; resend it after silence (up to ``retries``) if it allows that."""
        packet = self.link.framer.build(direction="host", code=request.code, data=request.data)
        if not request.reply:
            self.link.send(packet)
            return None
        attempts = self.retries + 1 if request.retry else 1
        for attempt in range(attempts):
            if attempt:
                self.stats["retries"] += 1
            self.link.send(packet)
            try:
                frame = self.link.receive(self.reply_timeout)
            except NoResponseError:
                continue
            return frame["code"], bytes(frame["data"])
        raise NoResponseError(f"no ID-003 reply to command 0x{request.code:02X} after "
                              f"{attempts} attempts", port=self.transport.url,
                              baudrate=self.transport.baudrate, timeout=self.reply_timeout)

    # -- packets (operations) --------------------------------------------------------------------

    def command_op(self, code: int, data: bytes = b"", *,
                   retry: bool = True) -> Op[tuple[int, bytes]]:
        """One command; its ``(status or echo code, data)``."""
        reply: tuple[int, bytes] = yield Request(code, bytes(data), retry)
        return reply

    def status_request_op(self) -> Op[tuple[int, bytes]]:
        return (yield from self.command_op(Command.STATUS_REQUEST))

    def _setting_op(self, code: int, data: bytes) -> Op[None]:
        reply, echoed = yield from self.command_op(code, data)
        if (reply, echoed) != (code, data):
            raise UnexpectedReplyError(
                f"{self.name}: setting 0x{code:02X} {data.hex(' ')} was answered "
                f"0x{reply:02X} {echoed.hex(' ')} instead of its echo")

    def _expect_ack_op(self, code: int) -> Op[None]:
        reply, _data = yield from self.command_op(code)
        if reply != Status.ACK:
            raise DeviceFault(f"{self.name}: command 0x{code:02X} answered "
                              f"{STATUSES.get(reply, hex(reply))}, not ACK", code=reply)

    def request(self, code: int, data: bytes = b"", *, retry: bool = True) -> tuple[int, bytes]:
        """Send one command and return the acceptor's ``(status or echo code, data)``."""
        return self.run(self.command_op(code, data, retry=retry))

    def status_request(self) -> tuple[int, bytes]:
        return self.run(self.status_request_op())

    # -- bring-up ----------------------------------------------------------------------------

    def start_op(self) -> Op[None]:
        """RESET, wait for INITIALIZE to end, send the settings (still inhibited).

        After :meth:`restore`, a VEND VALID still pending from before the restart (its ACK
        never left) is read first and delivered, with the id it had, *before* the RESET that
        ends it (the note goes to the cash box): a start cut short after the RESET has
        lost nothing, the credit is in the sink already."""
        pending: tuple[int, bytes] | None = None
        if self._resumed:
            self._resumed = False
            code, data = yield from self.status_request_op()
            waits = 0  # counted, not clocked: scripted replies take no time
            while code == Status.STACKING and waits * POLL_INTERVAL < self.initialize_timeout:
                # A note stacked before the restart (or the unplug) is on its way to the cash
                # box: let it reach VEND VALID and be read, or the RESET below would drop its
                # credit while the note ends in the box.
                yield Wait(POLL_INTERVAL)
                waits += 1
                code, data = yield from self.status_request_op()
            if code == Status.VEND_VALID:
                pending = (code, data)
        yield from self._initialize_op(pending)

    def start(self, sink: EventSink | None = None) -> None:
        """RESET, wait for INITIALIZE to end, send the settings (still inhibited).

        After :meth:`restore`, a VEND VALID still pending from before the restart (its ACK
        never left) goes to ``sink`` before the RESET; without a sink it is kept for the
        first poll (in memory only)."""
        self.run(self.start_op(), sink if sink is not None else self._held.append)  # see poll

    def checkpoint(self) -> dict[str, Any]:
        """The tracker state that names each note's credit; the cash journal stores it."""
        t = self.tracker
        return {"session": t.session, "notes": t.notes, "escrow_code": t.escrow_code,
                "credited": t.credited}

    def restore(self, data: dict[str, Any]) -> None:
        """Continue from a :meth:`checkpoint` after a restart, before :meth:`start`."""
        t = self.tracker
        t.session, t.notes = str(data["session"]), int(data["notes"])
        t.escrow_code, t.credited = int(data["escrow_code"]), bool(data["credited"])
        self._resumed = True

    def _initialize_op(self, pending: tuple[int, bytes] | None = None) -> Op[None]:
        """VERSION, the denominations, RESET, wait for INITIALIZE to end, the settings.

        ``pending``: a VEND VALID read at a resumed start. Its credit is valued with the
        table just read and delivered before the RESET, which sends the note to the cash
        box and ends the VEND VALID: from the RESET on, the acceptor no longer has it."""
        reply, version = yield from self.command_op(Command.VERSION_REQUEST)
        if reply == Command.VERSION_REQUEST:
            self.version = version[:64].decode("ascii", "replace").strip()
        if not self.values_override:
            yield from self._read_currency_assign_op()
        if pending is not None:
            for event in self.tracker.update(*pending):
                if event.kind is K.CREDIT:
                    yield Deliver(event)
            self.tracker.credited = True  # taken: a VEND VALID read again is not new
        yield from self._expect_ack_op(Command.RESET)
        self.stats["resets"] += 1
        waits = 0  # the deadline counts waits, not a clock: scripted replies take no time
        while True:
            code, _data = yield from self.status_request_op()
            if code in (Status.DISABLED, Status.IDLING):
                break
            if waits * POLL_INTERVAL >= self.initialize_timeout:
                raise DeviceFault(f"{self.name}: still {STATUSES.get(code, hex(code))} "
                                  f"{self.initialize_timeout:g} s after RESET", code=code)
            yield Wait(POLL_INTERVAL)  # the acceptor's own initialisation time
            waits += 1
        yield from self._setting_op(Command.SET_DENOMINATIONS, self._mask(enable=False))
        yield from self._setting_op(Command.SET_SECURITY, b"\x00\x00")
        yield from self._setting_op(Command.SET_COMMUNICATION_MODE, b"\x00")  # polling
        yield from self._setting_op(Command.SET_INHIBIT, b"\x01")
        yield from self._setting_op(Command.SET_OPTIONAL_FUNCTION, b"\x00\x00")
        self.enabled = False
        self.tracker.last = None

    def _read_currency_assign_op(self) -> Op[None]:
        """The denominations from the acceptor's CURRENCY ASSIGN (0x8A) table; an acceptor
        that does not know the command (INVALID COMMAND) keeps the defaults. Any other
        answer is the late reply to an earlier command (a start on a bad line): the start
        fails rather than value every note with the defaults."""
        try:
            reply, data = yield from self.command_op(CURRENCY_ASSIGN)
        except NoResponseError:
            log.warning("%s: no answer to CURRENCY ASSIGN; using the default values",
                        self.name)
            return
        if reply not in (CURRENCY_ASSIGN, Status.INVALID_COMMAND):
            raise UnexpectedReplyError(
                f"{self.name}: CURRENCY ASSIGN answered {STATUSES.get(reply, hex(reply))}, "
                "not its table (a late reply?)")
        entries = parse_currency_assign(data) if reply == CURRENCY_ASSIGN else []
        if not entries:
            return
        countries = {COUNTRY_CURRENCIES.get(e.country) for e in entries}
        if len(countries) == 1 and None not in countries:
            currency = countries.pop() or self.currency
            if currency != self.currency:
                log.info("%s: CURRENCY ASSIGN says %s (configured %s)", self.name, currency,
                         self.currency)
            self.currency = self.tracker.currency = currency
        scale = 1 if self.currency in ZERO_DECIMAL_CURRENCIES else 100
        self.values.clear()  # in place: the tracker holds the same dict
        self.values.update({e.escrow_code: e.value * scale for e in entries})
        self.values_source = "currency assign"

    def _mask(self, *, enable: bool) -> bytes:
        mask = 0xFFFF
        if enable:
            for code in self.values:
                if 0x61 <= code <= 0x70:
                    mask &= ~(1 << (code - 0x61))  # a 0 bit enables (py-id003 SET_DENOM)
        return mask.to_bytes(2, "little")

    def enable_op(self) -> Op[None]:
        yield from self._setting_op(Command.SET_DENOMINATIONS, self._mask(enable=True))
        yield from self._setting_op(Command.SET_INHIBIT, b"\x00")
        self.enabled = True

    def disable_op(self) -> Op[None]:
        yield from self._setting_op(Command.SET_INHIBIT, b"\x01")
        self.enabled = False

    def enable(self) -> None:
        self.run(self.enable_op())

    def disable(self) -> None:
        self.run(self.disable_op())

    # -- polling -----------------------------------------------------------------------------

    def poll_op(self) -> Op[list[CashEvent]]:
        """STATUS REQUEST; events delivered; ACK after VEND VALID; recovery after power-up."""
        if self._held:
            held = self._held
            for event in held:
                yield Deliver(event)
            self._held = []
            self.tracker.credited = True
            return held
        code, data = yield from self.status_request_op()
        if code in POWER_UPS:
            return (yield from self._power_up_op(code))
        events = self.tracker.update(code, data)
        for event in events:
            yield Deliver(event)
        if code == Status.VEND_VALID:
            # The credit is in the sink (or was, for a repeat): now the acceptor may go on.
            yield Request(Command.ACK, retry=False, reply=False)
            self.tracker.credited = True
        return events

    def poll(self, sink: EventSink | None = None) -> list[CashEvent]:
        """STATUS REQUEST; events to the sink; ACK after VEND VALID; recovery after power-up."""
        return self.run(self.poll_op(), sink)

    def _power_up_op(self, code: int) -> Op[list[CashEvent]]:
        tracker = self.tracker
        events = [tracker._event(K.DEVICE_RESET, f"reset@{time.time():.3f}", code,
                                 reason=STATUSES[code].lower())]
        if code == Status.POWER_UP_BILL_STACKER:
            events.append(tracker._event(
                K.FAULT, f"stacker@{time.time():.3f}", code, value=tracker.value(),
                reason="a note reached the stacker during a power failure; whether it was "
                       "credited is unknown (check the journal and the cash box)"))
        elif code == Status.POWER_UP_BILL_ACCEPTOR:
            events.append(tracker._event(K.RETURNED, f"head@{time.time():.3f}", code,
                                         reason="a note in the acceptor at power-up is "
                                                "returned by the reset"))
        for event in events:
            yield Deliver(event)
        was_enabled = self.enabled
        yield from self._initialize_op()
        if was_enabled:
            yield from self.enable_op()
        return events

    def decide_op(self, code: int) -> Op[None]:
        """An escrow decision (STACK-1, RETURN, HOLD), sent once; after a lost ACK the status
        says whether it was carried out, so STACK is never sent twice for one note."""
        try:
            reply, _data = yield from self.command_op(code, retry=False)
        except NoResponseError:
            reply = -1
        if reply == Status.ACK:
            return
        # No ACK: the command may have been lost, or executed with its ACK lost.
        status, _data = yield from self.status_request_op()
        if status in (Status.ESCROW, Status.HOLDING):
            yield from self._expect_ack_op(code)
        elif status not in DECIDED:
            raise DeviceFault(f"{self.name}: command 0x{code:02X} refused in status "
                              f"{STATUSES.get(status, hex(status))}", code=status)

    def stack(self) -> None:
        """STACK-1 for the note in escrow (the credit follows with VEND VALID)."""
        self.run(self.decide_op(Command.STACK_1))

    def reject(self) -> None:
        """RETURN the note in escrow."""
        self.run(self.decide_op(Command.RETURN))

    def hold(self) -> None:
        """HOLD the note in escrow (the acceptor's escrow timer starts again)."""
        self.run(self.decide_op(Command.HOLD))

    def status_op(self) -> Op[dict[str, Any]]:
        code, _data = yield from self.status_request_op()
        return {"device": self.name, "currency": self.currency, "version": self.version,
                "status": STATUSES.get(code, f"0x{code:02X}"), "status_code": code,
                "enabled": self.enabled,
                "values": {f"0x{k:02X}": v for k, v in sorted(self.values.items())},
                "values_source": self.values_source,
                **self.stats}

    def status(self) -> dict[str, Any]:
        return self.run(self.status_op())

    def close(self) -> None:
        self.link.close()


def _values(text: str | dict[int, int] | None) -> dict[int, int] | None:
    if text is None or isinstance(text, dict):
        return text
    out = {}
    for pair in str(text).split(","):
        if pair.strip():
            code, value = pair.split(":")
            out[int(code, 0)] = int(value)
    if not out:
        raise ConfigurationError("values= needs pairs like 0x61:500,0x62:1000")
    return out


def open_device(url: str, *, values: str | dict[int, int] | None = None,
                currency: str = "EUR", reply_timeout: float | str = REPLY_TIMEOUT,
                retries: int | str = RETRIES, **options: Any) -> Id003Acceptor:
    """Open an ID-003 acceptor on ``url`` (9600 8E1); options may be strings (CLI, URL)."""
    transport = open_transport(url, baudrate=BAUDRATE, parity=PARITY, **options)
    return Id003Acceptor(transport, values=_values(values), currency=currency,
                         reply_timeout=float(reply_timeout), retries=int(retries))


__all__ = ["DEFAULT_VALUES", "Id003Acceptor", "StatusTracker", "open_device"]
