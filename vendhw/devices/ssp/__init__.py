"""ITL SSP / eSSP host: note validators (NV9, NV200...), SMART Payout, NV11, SMART Hopper.

Layers:

* :class:`SspSession` (sans-I/O) is the packet layer: it toggles the sequence flag for each
  new command and keeps the packet for a retransmission **with the same flag** (the slave then
  resends its last reply instead of executing the command again: a retried payout is not paid
  twice), wraps commands in eSSP once a key is agreed, and opens replies (eCOUNT checked).
* :func:`parse_setup` reads SETUP REQUEST in every format GA138 defines (validators and
  payouts before/after protocol 6, SMART Hopper before/after 6); :class:`EventMapper` (pure)
  turns decoded poll events into :class:`~vendhw.devices.cash.CashEvent` values, reporting
  state changes once (a note in escrow, a removed cashbox, a jam repeat on every poll).
* :class:`SspCore` (sans-I/O) holds the host's rules as operations (``start_op``,
  ``poll_op``, ``payout_op``...): generators that yield :class:`SspRequest` steps, get the
  opened reply bytes back, and yield :class:`~vendhw.devices.engine.Deliver` for every cash
  event; a lost reply is thrown in, and the operation decides what it means.
* :class:`SspDevice` is the runner: :meth:`SspDevice.run` drives an operation with
  :func:`vendhw.devices.engine.drive`, and its ``_transact`` sends packets through a
  :class:`~vendhw.devices.link.FrameLink`, waits ``REPLY_TIMEOUT`` and retransmits (same
  packet, same flag) up to ``RETRIES`` times; its public methods, the
  :class:`~vendhw.devices.cash.CashDevice` surface, each run one operation.

Credit safety: polls use POLL WITH ACK (0x56) when the device knows it, so a credit repeats
until EVENT ACK (0x57), which is sent only after the sink took every event of the poll. The
``event_id`` of an acknowledged event is ``<device>/<session>/<acks so far>/<index>``; the
same event repeated after a refused sink gets the same id. Store :meth:`SspDevice.checkpoint`
with your journal and pass it back as ``resume=`` after a restart, so an event journaled just
before a crash (and repeated because its ACK never left) is recognised. Devices without POLL
WITH ACK get plain POLL, and events the sink refused are kept and delivered first next time.

After SLAVE RESET (or KEY NOT SET on an encrypted command: the device lost its key) the host
synchronises again, agrees a new key and restores the inhibits and enable state by itself.
A reply must carry its command's sequence flag (SYNC excepted) and, under eSSP, the expected
count; anything else is an older reply and the packet is resent unchanged. An encrypted
command left unanswered after every retry may have been executed (the counts may disagree):
the next command first sends SYNC and agrees a new key (GA138 "Encryption", GA973).

Facts and sources: ``protocols/ssp/README.md`` (ITL GA138, GA973).
"""

from __future__ import annotations

import logging
import re
import secrets
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from vendhw.devices.cash import CashDevice, CashEvent, CashEventKind, EventSink
from vendhw.devices.engine import Deliver, Op, drive
from vendhw.devices.link import FrameLink
from vendhw.errors import (
    ConfigurationError,
    DeviceFault,
    NakError,
    NoResponseError,
    NotSupportedError,
    ProtocolError,
    SequenceError,
    UnexpectedReplyError,
    VendhwError,
)
from vendhw.framing.base import Frame
from vendhw.framing.essp import DEFAULT_FIXED_KEY, STEX, EsspCipher, KeyAgreement
from vendhw.framing.ssp import (
    ACKED_EVENTS,
    INTER_BYTE_GAP,
    REPLY_TIMEOUT,
    RESPONSES,
    RETRIES,
    UNKNOWN_EVENT,
    Command,
    Event,
    Response,
    SspFramer,
    decode_poll,
)
from vendhw.options import option_flag, option_ints
from vendhw.transport import Transport, open_transport

log = logging.getLogger(__name__)
T = TypeVar("T")

# --- line and timing (GA138 "Physical layer", GA973) -------------------------------------------

BAUDRATE = 9600
STOPBITS = 2
"""GA138: 9600 baud, 8 data bits, no parity, two stop bits."""
POLL_INTERVAL = 0.2
"""GA973 §7.4: poll every 200-1000 ms."""
ESCROW_TIMEOUT = 5.0
"""GA973 §6: a note in escrow is returned after 5 s without a command; HOLD restarts it."""
INACTIVITY_TIMEOUT = 10.0
"""GA973: the device disables itself after 10 s without a command (SMART Hopper 5 s)."""
MAX_PROTOCOL_VERSION = 8
"""The newest protocol version this host speaks; it offers it first and steps down on FAIL."""
MIN_PROTOCOL_VERSION = 4

# --- commands (GA138) --------------------------------------------------------------------------

# The codes are declared once, in vendhw.framing.ssp; these names are kept for callers.
C = Command
(RESET, SET_INHIBITS, SETUP_REQUEST, HOST_PROTOCOL_VERSION, POLL, REJECT, DISABLE, ENABLE,
 GET_SERIAL_NUMBER, SYNC, LAST_REJECT_CODE, HOLD, GET_ALL_LEVELS, PAYOUT_AMOUNT,
 GET_DENOMINATION_LEVEL, HALT_PAYOUT, SET_DENOMINATION_ROUTE, GET_DENOMINATION_ROUTE,
 FLOAT_AMOUNT, GET_MINIMUM_PAYOUT, EMPTY_ALL, SET_GENERATOR, SET_MODULUS,
 REQUEST_KEY_EXCHANGE, SMART_EMPTY, POLL_WITH_ACK, EVENT_ACK, DISABLE_PAYOUT_DEVICE,
 ENABLE_PAYOUT_DEVICE, SET_COIN_MECH_INHIBITS) = (
    C.RESET, C.SET_INHIBITS, C.SETUP_REQUEST, C.HOST_PROTOCOL_VERSION, C.POLL, C.REJECT,
    C.DISABLE, C.ENABLE, C.GET_SERIAL_NUMBER, C.SYNC, C.LAST_REJECT_CODE, C.HOLD,
    C.GET_ALL_LEVELS, C.PAYOUT_AMOUNT, C.GET_DENOMINATION_LEVEL, C.HALT_PAYOUT,
    C.SET_DENOMINATION_ROUTE, C.GET_DENOMINATION_ROUTE, C.FLOAT_AMOUNT, C.GET_MINIMUM_PAYOUT,
    C.EMPTY_ALL, C.SET_GENERATOR, C.SET_MODULUS, C.REQUEST_KEY_EXCHANGE, C.SMART_EMPTY,
    C.POLL_WITH_ACK, C.EVENT_ACK, C.DISABLE_PAYOUT_DEVICE, C.ENABLE_PAYOUT_DEVICE,
    C.SET_COIN_MECH_INHIBITS)

R = Response
OK, COMMAND_NOT_KNOWN, WRONG_PARAMETERS, PARAMETER_OUT_OF_RANGE = (
    R.OK, R.COMMAND_NOT_KNOWN, R.WRONG_NUMBER_OF_PARAMETERS, R.PARAMETER_OUT_OF_RANGE)
CANNOT_PROCESS, SOFTWARE_ERROR, FAIL, KEY_NOT_SET = (
    R.COMMAND_CANNOT_BE_PROCESSED, R.SOFTWARE_ERROR, R.FAIL, R.KEY_NOT_SET)
COMMIT, TEST_ONLY = 0x58, 0x19
"""GA138 PAYOUT AMOUNT / FLOAT AMOUNT option byte (protocol >= 6)."""
ROUTE_PAYOUT, ROUTE_CASHBOX = 0, 1
"""GA138 SET DENOMINATION ROUTE."""

UNIT_TYPES = {0x00: "note validator", 0x03: "SMART Hopper", 0x06: "SMART Payout",
              0x07: "NV11 note float", 0x0D: "TEBS"}
PAYOUT_UNITS = frozenset((0x03, 0x06, 0x07))
NO_ESCROW_UNITS = frozenset((0x03,))

PAYOUT_ERRORS = {1: "not enough value in device", 2: "cannot pay exact amount",
                 3: "device busy", 4: "device disabled"}
"""GA138 PAYOUT AMOUNT / FLOAT AMOUNT: the byte after COMMAND CANNOT BE PROCESSED."""
PAYOUT_DEVICE_ERRORS = {1: "no device connected", 2: "invalid currency detected",
                        3: "busy", 4: "empty only (note float only)", 5: "device error"}
"""GA138 ENABLE PAYOUT DEVICE (0x5C): the byte after COMMAND CANNOT BE PROCESSED."""
ROUTE_ERRORS = {1: "no payout connected", 2: "invalid currency detected",
                3: "payout device failure"}
"""GA138 SET DENOMINATION ROUTE (0x3B): the byte after COMMAND CANNOT BE PROCESSED."""
COIN_MECH_ERRORS = {
    1: "reject coin", 2: "inhibited coin", 3: "multiple window", 4: "wake-up timeout",
    5: "validation timeout", 6: "credit sensor timeout", 7: "sorter opto timeout",
    8: "2nd close coin error", 9: "accept gate not ready", 10: "credit sensor not ready",
    11: "sorter not ready", 12: "reject coin not cleared", 13: "validation sensor not ready",
    14: "credit sensor blocked", 15: "sorter opto blocked", 16: "credit sequence error",
    17: "coin going backwards", 18: "coin too fast (over credit sensor)",
    19: "coin too slow (over credit sensor)", 20: "C.O.S. mechanism activated",
    21: "DCE opto timeout", 22: "DCE opto not seen", 23: "credit sensor reached too early",
    24: "reject coin (repeated sequential trip)", 25: "reject slug",
    26: "reject sensor blocked", 27: "games overload", 28: "max. coin meter pulses exceeded",
    29: "accept gate open not closed", 30: "accept gate closed not open",
    31: "manifold opto timeout", 32: "manifold opto blocked",
    **{code: f"inhibited coin (type {code - 127})" for code in range(128, 160)},
    253: "data block request", 254: "coin return mechanism activated",
    255: "unspecified alarm code",
}
"""GA138 event 0xB7 COIN MECH ERROR, its data byte (the ccTalk error codes)."""
TICKET_PRINTING_ERRORS = {0: "no paper", 1: "load fail", 2: "no head",
                          3: "diverter did not open", 4: "diverter did not close",
                          5: "burst fail", 6: "cut fail", 7: "reverse validate fail", 8: "jam",
                          9: "NV200 fail", 10: "NV200 timeout", 17: "NV200 cashbox error",
                          19: "SMART Ticket timeout"}
"""GA138 event 0xA8 TICKET PRINTING ERROR, its data byte."""
CASHBOX_SERVICE_ERRORS = {1: "no device connected", 2: "unable to read barcode",
                          3: "cashbox out of position", 4: "cashbox removed",
                          5: "cashbox unlocked", 6: "currency mismatch", 7: "firmware error",
                          8: "TEBS comms error"}
"""GA138 event 0x90 CASHBOX OUT OF SERVICE, its data byte."""
ERROR_BYTES = {Event.COIN_MECH_ERROR: COIN_MECH_ERRORS,
               Event.TICKET_PRINTING_ERROR: TICKET_PRINTING_ERRORS,
               Event.CASHBOX_OUT_OF_SERVICE: CASHBOX_SERVICE_ERRORS}
ERROR_DURING_PAYOUT = {0: "note not correctly detected as it was routed",
                       1: "note jammed in transport", 2: "cashbox error",
                       3: "payout stalled", 4: "payout cancelled: poll timeout"}
"""GA138 event 0xB1, its final byte."""
REJECT_REASONS = {
    0x00: "note accepted", 0x01: "length fail", 0x02: "average fail", 0x03: "coastline fail",
    0x04: "graph fail", 0x05: "buried fail", 0x06: "channel inhibited",
    0x07: "second note detected", 0x08: "rejected by host", 0x09: "cross channel detected",
    0x0A: "rear sensor error", 0x0B: "note too long", 0x0C: "disabled by host",
    0x0D: "slow mechanism", 0x0E: "strimming attempt", 0x0F: "fraud channel",
    0x10: "no notes detected", 0x11: "peak detect fail", 0x12: "twisted note",
    0x13: "escrow time-out", 0x14: "bar code scan fail", 0x15: "no cam activate",
    0x16: "slot fail 1", 0x17: "slot fail 2", 0x18: "lens oversample",
    0x19: "width detection fail", 0x1A: "short note detected", 0x1B: "payout note",
    0x1C: "double note detected", 0x1D: "unable to stack",
}
"""GA138 "Reject Codes" (LAST REJECT CODE 0x17)."""


class SspResponseError(NakError):
    """The device answered with a generic response other than OK."""

    def __init__(self, command: int, code: int, data: bytes = b"",
                 errors: dict[int, str] | None = None) -> None:
        self.command = command
        self.code = code
        self.data = data
        self.reason = (errors or {}).get(data[0]) if data else None
        name = RESPONSES.get(code, f"response 0x{code:02X}")
        text = f"SSP command 0x{command:02X}: {name}"
        if data:
            text += f" (error {data[0]}{': ' + self.reason if self.reason else ''})"
        super().__init__(text)


# --- packet layer (sans-I/O) -------------------------------------------------------------------


class SspSession:
    """Sequence flag and eSSP state of one link; builds packets and opens replies."""

    def __init__(self, address: int = 0) -> None:
        if not 0 <= address <= 0x7D:
            raise ConfigurationError(f"SSP slave ID must be 0..0x7D, got {address}")
        self.address = address
        self.framer = SspFramer()
        self.seq = 0
        """The flag of the last packet built (SYNC always goes with 1)."""
        self.cipher: EsspCipher | None = None

    def sync(self) -> bytes:
        """SYNC with flag 1: the slave then expects flag 0 for the next command (GA138)."""
        self.seq = 1
        return self.framer.build(data=bytes((SYNC,)), seq=1, address=self.address)

    def command(self, data: bytes, *, encrypt: bool = False) -> bytes:
        """A new command: the flag toggles, and the packet is sealed when ``encrypt``."""
        self.seq ^= 1
        if encrypt:
            if self.cipher is None:
                raise ConfigurationError("eSSP command before a key was agreed")
            data = self.cipher.seal(data)
        return self.framer.build(data=data, seq=self.seq, address=self.address)

    def open(self, frame: Frame) -> tuple[int, bytes]:
        """``(generic response, data)`` of a reply frame, decrypted when it is eSSP."""
        if frame["address"] != self.address:
            raise UnexpectedReplyError(f"reply from slave {frame['address']}, expected "
                                       f"{self.address}")
        raw = frame.raw
        if frame["code"] == STEX:
            if self.cipher is None:
                raise ProtocolError("an encrypted reply, but no key was agreed")
            data = self.cipher.open(bytes(frame["encrypted"]))
        else:
            data = bytes((frame["code"],)) + bytes(frame.get("data", b""))
        if not data:
            raise UnexpectedReplyError(f"empty SSP reply {raw.hex(' ')}")
        return data[0], data[1:]


# --- setup request (all formats of GA138) ------------------------------------------------------


@dataclass
class Channel:
    number: int
    value: int
    """Minor units (cents)."""
    currency: str


@dataclass
class SetupInfo:
    """What SETUP REQUEST says about the device and its dataset."""

    unit_type: int
    firmware: str
    currency: str
    protocol_version: int
    channels: list[Channel] = field(default_factory=list)

    @property
    def unit(self) -> str:
        return UNIT_TYPES.get(self.unit_type, f"unit type 0x{self.unit_type:02X}")

    def to_dict(self) -> dict[str, Any]:
        return {"unit_type": self.unit_type, "unit": self.unit, "firmware": self.firmware,
                "currency": self.currency, "protocol_version": self.protocol_version,
                "channels": {str(c.number): {"value": c.value, "currency": c.currency}
                             for c in self.channels}}


def _ascii(data: bytes) -> str:
    return data.decode("ascii", "replace").strip("\0 ")


def parse_setup(data: bytes) -> SetupInfo:
    """Parse the data of a SETUP REQUEST reply (after OK) in any GA138 format.

    Validators, SMART Payout and NV11 (unit types 0, 6, 7): unit, firmware (4 ASCII), country
    (3), value multiplier (3, BE), n, n channel values, n security bytes, real value
    multiplier (3, BE), protocol version; from protocol 6 also n currencies (3 each) and n
    4-byte LE values. A channel is worth value x real value multiplier cents (before 6 the
    short value times both multipliers). SMART Hopper (3): unit, firmware, country, protocol
    version, n, n 2-byte LE coin values (cents); from 6 also n currencies.
    """
    try:
        unit = data[0]
        firmware = _ascii(data[1:5])
        country = _ascii(data[5:8])
        if unit == 0x03:
            version = data[8]
            n = data[9]
            values = [int.from_bytes(data[10 + 2 * i:12 + 2 * i], "little") for i in range(n)]
            pos = 10 + 2 * n
            if len(values) != n or pos > len(data):
                raise IndexError
            currencies = [country] * n
            if version >= 6 and len(data) >= pos + 3 * n:
                currencies = [_ascii(data[pos + 3 * i:pos + 3 * i + 3]) for i in range(n)]
            channels = [Channel(i + 1, v, c)
                        for i, (v, c) in enumerate(zip(values, currencies, strict=True))]
            return SetupInfo(unit, firmware, country, version, channels)
        multiplier = int.from_bytes(data[8:11], "big")
        n = data[11]
        short = list(data[12:12 + n])
        pos = 12 + 2 * n
        real = int.from_bytes(data[pos:pos + 3], "big") or 1
        version = data[pos + 3]
        pos += 4
        channels = []
        if version >= 6 and len(data) >= pos + 7 * n:
            for i in range(n):
                currency = _ascii(data[pos + 3 * i:pos + 3 * i + 3])
                base = pos + 3 * n + 4 * i
                value = int.from_bytes(data[base:base + 4], "little")
                channels.append(Channel(i + 1, value * real, currency))
        else:
            if len(short) != n:
                raise IndexError
            channels = [Channel(i + 1, v * (multiplier or 1) * real, country)
                        for i, v in enumerate(short)]
        return SetupInfo(unit, firmware, country, version, channels)
    except IndexError:
        raise UnexpectedReplyError(f"SETUP REQUEST reply too short: {data.hex(' ')}") from None


def money(value: int, currency: str, version: int) -> bytes:
    """A money parameter: 4-byte LE value, plus the currency from protocol 6."""
    out = value.to_bytes(4, "little")
    if version >= 6:
        out += currency.encode("ascii")[:3].ljust(3, b" ")
    return out


# --- poll events to cash events (pure) ---------------------------------------------------------

K = CashEventKind
FAULT_EVENTS = frozenset((
    Event.NOTE_PATH_OPEN, Event.PAYOUT_OUT_OF_SERVICE, Event.CASHBOX_OUT_OF_SERVICE,
    Event.CALIBRATION_FAILED, Event.COIN_MECH_ERROR, Event.MAINTENANCE_REQUIRED,
    Event.PRINTER_HEAD_REMOVED, Event.TICKET_PATH_OPEN, Event.TICKET_JAM,
    Event.TICKET_PRINTING_ERROR, Event.NO_PAPER))
"""Events reported as faults: note path open, payout or cashbox out of service, calibration
failed, coin mech error, maintenance required, printer head removed, ticket path open, ticket
jam, ticket printing error, no paper."""
CREDIT_EVENTS = frozenset((Event.CREDIT_NOTE, Event.NOTE_CLEARED_TO_CASHBOX, Event.COIN_CREDIT,
                           Event.VALUE_ADDED))
"""Events that credit money."""
SIMPLE_EVENTS: dict[int, tuple[CashEventKind, str | None]] = {
    Event.STACKER_FULL: (K.CASHBOX_FULL, "stacker full"),
    Event.COIN_REJECTED: (K.REJECTED, "coin rejected"),
}
"""Events that map to one cash event with a fixed reason, whatever their data."""
PAYOUT_STOP_REASONS = {
    Event.JAMMED: "jammed during payout", Event.HALTED: "payout halted",
    Event.TIMEOUT: "payout timed out",
    Event.INCOMPLETE_PAYOUT: "payout interrupted (power-down or reset)",
    Event.INCOMPLETE_FLOAT: "float interrupted (power-down or reset)",
}


_CURRENCY = re.compile("[A-Z]{3}")
"""An ISO 4217 code as SSP sends it from protocol 6 (3 ASCII capitals)."""


@dataclass(frozen=True)
class _Money:
    """The money of one event: the sum of its values, their currency, what was asked for."""

    paid: int
    currency: str
    requested: int | None


NOTE_SETTLED = frozenset((Event.CREDIT_NOTE, Event.NOTE_CLEARED_TO_CASHBOX, Event.NOTE_REJECTED,
                          Event.NOTE_CLEARED_FROM_FRONT))
"""Events that say where a note in the path went."""
NOTE_CLEARED_AT_RESET = frozenset((Event.NOTE_CLEARED_TO_CASHBOX, Event.NOTE_CLEARED_FROM_FRONT))
"""The power-up events that report a note left in the path by a reset (GA138 0xE1, 0xE2)."""


@dataclass
class EventMapper:
    """Turns decoded poll events into CashEvents; state events are reported on change."""

    device: str
    currency: str = ""
    channels: dict[int, Channel] = field(default_factory=dict)
    escrow_channel: int = 0
    cashbox_removed: bool = False
    disabled: bool | None = None
    jammed: bool = False
    last_progress: int | None = None
    in_path: int = 0
    """Channel of a note that left escrow towards the stacker, its credit not yet seen."""

    def _channel(self, number: int) -> tuple[int, str]:
        channel = self.channels.get(number)
        return (channel.value, channel.currency) if channel else (0, self.currency)

    def map(self, events: Iterable[dict[str, Any]], ids: Iterable[str],
            reject_reason: str | None = None) -> list[CashEvent]:
        out: list[CashEvent] = []
        codes: set[int] = set()
        after_reset: set[int] = set()
        reset_id = ""
        read_channel = 0
        for event, event_id in zip(events, ids, strict=True):
            code = event["code"]
            if code == Event.READ_NOTE and event.get("channel"):
                read_channel = event["channel"]
            if code == Event.SLAVE_RESET:
                reset_id = event_id
                if codes & NOTE_SETTLED:
                    self.in_path = 0  # settled before the device reset
                after_reset.clear()
            elif reset_id:
                after_reset.add(code)
            codes.add(code)
            made = self._one(event, event_id, reject_reason)
            if made is not None:
                out.append(made)
        if read_channel:
            # One note path: a note read with its channel is the newest note, whatever order
            # the events came in, so a credit beside it is the previous note's (the device
            # holds a note in escrow until the next poll, so it cannot also be its credit).
            self.escrow_channel = read_channel
        if reset_id:
            # After a reset only the power-up events (GA138 0xE1/0xE2) speak of the note that
            # was in the path; a rejection or credit after SLAVE RESET is a new note's.
            if after_reset & NOTE_CLEARED_AT_RESET:
                self.in_path = 0
            at_risk = self.at_risk(f"{reset_id}/in-path")
            if at_risk is not None:
                out.insert(0, at_risk)
        elif codes & NOTE_SETTLED:
            self.in_path = 0  # the device said where the note went
        elif self.escrow_channel and Event.READ_NOTE not in codes:
            self.in_path = self.escrow_channel  # accepted from escrow: stacking
        if self.jammed and not codes & {Event.UNSAFE_NOTE_JAM, Event.SAFE_NOTE_JAM, Event.JAMMED}:
            self.jammed = False
        if self.escrow_channel and Event.READ_NOTE not in codes:
            # The note left escrow; stacking, credit or rejection events say how.
            self.escrow_channel = 0
        return out

    def at_risk(self, event_id: str) -> CashEvent | None:
        """After a device reset: the note that was stacking, its credit not yet reported, as
        a fault with its value (where it went is not knowable here), once."""
        channel, self.in_path = self.in_path, 0
        if not channel:
            return None
        value, cur = self._channel(channel)
        return CashEvent(K.FAULT, self.device, event_id=event_id, value=value, currency=cur,
                         channel=channel, reason="device reset with a note stacking (credit "
                         "not reported); check the cashbox", detail={"needs_review": True})

    def _make(self, kind: CashEventKind, event_id: str, event: dict[str, Any],
              **fields: Any) -> CashEvent:
        fields.setdefault("currency", self.currency)
        detail = {"ssp_event": event["event"], "code": event["code"]}
        return CashEvent(kind, self.device, event_id=event_id, detail=detail, **fields)

    def _one(self, event: dict[str, Any], eid: str, reject_reason: str | None
             ) -> CashEvent | None:
        if event["event"] == UNKNOWN_EVENT:
            return self._unknown(event, eid)
        code = event["code"]
        if code in SIMPLE_EVENTS:
            kind, reason = SIMPLE_EVENTS[code]
            return self._make(kind, eid, event, reason=reason)
        if code in FAULT_EVENTS:
            return self._make(K.FAULT, eid, event, reason=_fault_reason(event))
        handler = _HANDLERS.get(code)
        if handler is None:
            return None  # in-between states (reading, rejecting, stacking...): nothing to report
        values = event.get("values") or []
        money = _Money(sum(v["value"] for v in values),
                       values[0]["currency"] if values and values[0]["currency"]
                       else self.currency,
                       sum(v.get("requested", 0) for v in values) or None)
        return handler(self, event, eid, money, reject_reason)

    # One handler per event that needs state or data; the table below maps codes to them.

    def _reset(self, event: dict[str, Any], eid: str, money: _Money, _: str | None
               ) -> CashEvent | None:
        self.escrow_channel, self.disabled, self.last_progress = 0, None, None
        return self._make(K.DEVICE_RESET, eid, event, reason="slave reset (power-up)")

    def _read(self, event: dict[str, Any], eid: str, money: _Money, _: str | None
              ) -> CashEvent | None:
        channel = event.get("channel")
        if channel and channel != self.escrow_channel:
            self.escrow_channel = channel
            value, cur = self._channel(channel)
            return self._make(K.ESCROW, eid, event, value=value, currency=cur,
                              channel=channel, route="escrow")
        return None

    def _note_credit(self, event: dict[str, Any], eid: str, money: _Money, _: str | None
                     ) -> CashEvent | None:
        channel = event.get("channel")
        value, cur = self._channel(channel or 0)
        if event["code"] == Event.CREDIT_NOTE:
            self.escrow_channel = 0
            return self._make(K.CREDIT, eid, event, value=value, currency=cur,
                              channel=channel, route="validator")
        return self._make(K.CREDIT, eid, event, value=value, currency=cur, channel=channel,
                          route="cashbox", reason="note found in the path at power-up and "
                          "stacked")

    def _value_credit(self, event: dict[str, Any], eid: str, money: _Money, _: str | None
                      ) -> CashEvent | None:
        currencies = [v["currency"] for v in event.get("values") or [] if v["currency"]]
        if not all(_CURRENCY.fullmatch(c) for c in currencies) or len(set(currencies)) > 1:
            # Not a currency code: the bytes are not what GA138 says (other firmware, or a
            # misread reply). A credit is never guessed: the operator decides.
            return CashEvent(K.FAULT, self.device, event_id=eid, currency=self.currency,
                             reason=f"{event['event'].lower()} with unreadable money "
                             f"{event.get('values')}; operator review",
                             detail={"ssp_event": event["event"], "code": event["code"],
                                     "needs_review": True, "values": event.get("values")})
        route = "hopper" if event["code"] == Event.COIN_CREDIT else "system"
        return self._make(K.CREDIT, eid, event, value=money.paid, currency=money.currency,
                          route=route)

    def _rejected(self, event: dict[str, Any], eid: str, money: _Money,
                  reject_reason: str | None) -> CashEvent | None:
        return self._make(K.REJECTED, eid, event, reason=reject_reason or "rejected")

    def _cleared_from_front(self, event: dict[str, Any], eid: str, money: _Money,
                            _: str | None) -> CashEvent | None:
        channel = event.get("channel")
        value, cur = self._channel(channel or 0)
        return self._make(K.RETURNED, eid, event, value=value, currency=cur,
                          channel=channel or None,
                          reason="note cleared from the front at power-up")

    def _note_jam(self, event: dict[str, Any], eid: str, money: _Money, _: str | None
                  ) -> CashEvent | None:
        if self.jammed:
            return None
        self.jammed = True
        return self._make(K.JAM, eid, event, reason=event["event"].lower())

    def _fraud(self, event: dict[str, Any], eid: str, money: _Money, _: str | None
               ) -> CashEvent | None:
        return self._make(K.FRAUD, eid, event, channel=event.get("channel") or None,
                          reason="fraud attempt")

    def _cashbox_removed(self, event: dict[str, Any], eid: str, money: _Money,
                         _: str | None) -> CashEvent | None:
        if self.cashbox_removed:
            return None
        self.cashbox_removed = True
        return self._make(K.CASHBOX_REMOVED, eid, event)

    def _cashbox_replaced(self, event: dict[str, Any], eid: str, money: _Money,
                          _: str | None) -> CashEvent | None:
        self.cashbox_removed = False
        return self._make(K.CASHBOX_REPLACED, eid, event)

    def _disabled(self, event: dict[str, Any], eid: str, money: _Money, _: str | None
                  ) -> CashEvent | None:
        if self.disabled:
            return None
        self.disabled = True
        return self._make(K.DISABLED, eid, event)

    def _progress(self, event: dict[str, Any], eid: str, money: _Money, _: str | None
                  ) -> CashEvent | None:
        if money.paid == self.last_progress:
            return None
        self.last_progress = money.paid
        route = "customer" if event["code"] == Event.DISPENSING else "cashbox"
        return self._make(K.PAYOUT_PROGRESS, eid, event, value=money.paid,
                          currency=money.currency, route=route)

    def _done(self, event: dict[str, Any], eid: str, money: _Money, _: str | None
              ) -> CashEvent | None:
        self.last_progress = None
        dispensed = event["code"] == Event.DISPENSED
        return self._make(K.PAYOUT_DONE, eid, event, value=money.paid, currency=money.currency,
                          route="customer" if dispensed else "cashbox",
                          reason=None if dispensed else "floated")

    def _incomplete(self, event: dict[str, Any], eid: str, money: _Money, _: str | None
                    ) -> CashEvent | None:
        self.last_progress = None
        code = event["code"]
        if code == Event.JAMMED:
            if self.jammed:
                return None
            self.jammed = True
        reason = PAYOUT_STOP_REASONS.get(code)
        if code == Event.ERROR_DURING_PAYOUT:
            reason = "error during payout: " + ERROR_DURING_PAYOUT.get(
                event.get("error", -1), f"code {event.get('error')}")
        return self._make(K.PAYOUT_INCOMPLETE, eid, event, value=money.paid,
                          currency=money.currency, requested=money.requested,
                          route="customer", reason=reason)

    def _emptied(self, event: dict[str, Any], eid: str, money: _Money, _: str | None
                 ) -> CashEvent | None:
        return self._make(K.PAYOUT_DONE, eid, event, value=money.paid, currency=money.currency,
                          route="cashbox", reason="emptied to the cashbox")

    def _stacked(self, event: dict[str, Any], eid: str, money: _Money, _: str | None
                 ) -> CashEvent | None:
        if event["code"] == Event.NOTE_STACKING and self.escrow_channel:
            self.in_path = self.escrow_channel  # accepted: its credit comes when stacked
        self.escrow_channel = 0
        return None

    def _unknown(self, event: dict[str, Any], eid: str) -> CashEvent:
        """Bytes the host cannot read: a fault for the operator, never a guessed credit."""
        raw: bytes = event["raw"]
        possible = event.get("possible") or []
        reason = (f"unknown SSP event 0x{event['code']:02X}: {len(raw)} byte(s) not "
                  f"understood ({raw.hex(' ').upper()}); operator review")
        if any(p["code"] in CREDIT_EVENTS for p in possible):
            reason += "; they may hold a credit"
        detail = {"ssp_event": event["event"], "code": event["code"],
                  "raw": raw.hex(" "), "needs_review": True,
                  "possible": possible, "skipped": event.get("skipped")}
        return CashEvent(K.FAULT, self.device, event_id=eid, detail=detail,
                         currency=self.currency, reason=reason)


def _fault_reason(event: dict[str, Any]) -> str:
    reason: str = event["event"].lower()
    if "error" in event:
        names = ERROR_BYTES.get(event["code"], {})
        reason += f" {event['error']}: " + names.get(event["error"], "unknown code")
    return reason


E = Event
_Handler = Callable[[EventMapper, dict[str, Any], str, _Money, "str | None"], "CashEvent | None"]
_HANDLERS: dict[int, _Handler] = {
    E.SLAVE_RESET: EventMapper._reset, E.READ_NOTE: EventMapper._read,
    E.CREDIT_NOTE: EventMapper._note_credit, E.NOTE_CLEARED_TO_CASHBOX: EventMapper._note_credit,
    E.COIN_CREDIT: EventMapper._value_credit, E.VALUE_ADDED: EventMapper._value_credit,
    E.NOTE_REJECTED: EventMapper._rejected,
    E.NOTE_CLEARED_FROM_FRONT: EventMapper._cleared_from_front,
    E.UNSAFE_NOTE_JAM: EventMapper._note_jam, E.SAFE_NOTE_JAM: EventMapper._note_jam,
    E.FRAUD_ATTEMPT: EventMapper._fraud, E.CASHBOX_REMOVED: EventMapper._cashbox_removed,
    E.CASHBOX_REPLACED: EventMapper._cashbox_replaced, E.DISABLED: EventMapper._disabled,
    E.DISPENSING: EventMapper._progress, E.FLOATING: EventMapper._progress,
    E.DISPENSED: EventMapper._done, E.FLOATED: EventMapper._done,
    E.JAMMED: EventMapper._incomplete, E.HALTED: EventMapper._incomplete,
    E.TIMEOUT: EventMapper._incomplete, E.INCOMPLETE_PAYOUT: EventMapper._incomplete,
    E.INCOMPLETE_FLOAT: EventMapper._incomplete, E.ERROR_DURING_PAYOUT: EventMapper._incomplete,
    E.EMPTIED: EventMapper._emptied, E.SMART_EMPTIED: EventMapper._emptied,
    E.NOTE_STACKED: EventMapper._stacked, E.NOTE_STACKING: EventMapper._stacked,
}
"""Poll events that need state or data, and who maps them. Events in none of the tables
(reading, rejecting, stacking...) report nothing."""


# --- sans-I/O steps ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SspRequest:
    """One SSP command for the runner; the opened reply comes back (generic response first).

    The runner builds the packet (a new sequence flag, sealed when ``encrypt``) and resends
    that same packet, same flag, on silence or a stale reply: the slave answers a repeat with
    its last reply, so nothing runs twice. When every attempt went unanswered it throws
    :class:`~vendhw.errors.NoResponseError` into the operation, which decides what that means.
    """

    command: int
    params: bytes = b""
    encrypt: bool = False
    sync: bool = False
    """The SYNC packet: flag 1, and its reply may carry either flag (GA138)."""
    retries: int | None = None
    """Resends allowed; None = the runner's ``retries``."""
    timeout: float | None = None
    """Reply deadline; None = the runner's ``reply_timeout``."""

    @property
    def data(self) -> bytes:
        return bytes((self.command,)) + self.params


Step = SspRequest | Deliver
"""SSP operations yield requests and events (:mod:`vendhw.devices.engine`)."""


# --- the core ----------------------------------------------------------------------------------


class SspCore:
    """The SSP/eSSP host's rules without I/O: its state, and operations (``*_op``) that yield
    :class:`SspRequest` and :class:`~vendhw.devices.engine.Deliver` steps.

    Why: what to send, what a reply or a failure means and when an event is acknowledged are
    checked by driving these with scripted replies (:func:`vendhw.devices.engine.replay`);
    :class:`SspDevice` runs the same operations on a port.
    """

    name: str
    currency: str = ""

    def __init__(self, *, address: int = 0, encryption: bool | str = "auto",
                 fixed_key: int = DEFAULT_FIXED_KEY,
                 protocol_version: int = MAX_PROTOCOL_VERSION,
                 channels: Iterable[int] | None = None, payout: bool = True,
                 name: str = "ssp", resume: dict[str, Any] | None = None) -> None:
        self.session = SspSession(address)
        self.name = name
        self.encryption = encryption
        self.fixed_key = fixed_key
        self.wanted_version = protocol_version
        self.wanted_channels = set(channels) if channels is not None else None
        self.want_payout = payout
        self.setup: SetupInfo | None = None
        self.serial: int | None = None
        self.encrypted = False
        self.enabled = False
        self.payout_enabled = False
        self.poll_with_ack = True
        self.mapper = EventMapper(self.name)
        self._token = str(resume["session"]) if resume else secrets.token_hex(4)
        self.acks = int(resume["acks"]) if resume else 0
        self._polls = 0
        self._fresh = False
        self._quiet_reset = False
        self._out_of_step = False
        self._restarted = False
        """The device was found reset (KEY NOT SET); its SLAVE RESET event may not come."""
        self._unsure_ack: tuple[Any, ...] | None = None
        """The acked events of a poll whose EVENT ACK went unanswered (it may or may not have
        reached the device)."""
        self._pending: deque[CashEvent] = deque()
        self.stats = {"retries": 0, "resyncs": 0, "key_exchanges": 0}

    @property
    def version(self) -> int:
        return self.setup.protocol_version if self.setup else MIN_PROTOCOL_VERSION

    # -- commands ----------------------------------------------------------------------------

    def command_op(self, command: int, params: bytes = b"", *, encrypt: bool | None = None,
                   errors: dict[int, str] | None = None, recover: bool = True) -> Op[bytes]:
        """One command; returns the data after OK, other responses raise.

        A KEY NOT SET answer to an encrypted command means the device lost its key (a reset):
        the host agrees a new one and sends the command once more. An encrypted command left
        unanswered may have run (and advanced the device's count): the next one resyncs.
        """
        if encrypt is None:
            encrypt = self.encrypted
        if encrypt and self._out_of_step and recover:
            yield from self.resync_op()
        try:
            reply: bytes = yield SspRequest(command, params, encrypt=encrypt)
        except NoResponseError:
            if encrypt:
                # The slave may or may not have executed the packet (and advanced its count):
                # the counts can no longer be trusted. GA138/GA973: SYNC and a new key.
                self._out_of_step = True
            raise
        code, data = reply[0], reply[1:]
        if code == KEY_NOT_SET and encrypt and recover:
            log.warning("%s: KEY NOT SET: the device lost its key; recovering", self.name)
            yield from self.recover_op()
            return (yield from self.command_op(command, params, errors=errors, recover=False))
        if code != OK:
            raise SspResponseError(command, code, data, errors)
        return data

    def resync_op(self) -> Op[None]:
        """The eSSP counts may disagree (an encrypted packet went unanswered): SYNC and agree
        a new key, which restarts the count on both sides (GA138 "Encryption", GA973). The
        device keeps its state (events, enable, inhibits); only the session is new."""
        log.warning("%s: eSSP count out of step; SYNC and a new key", self.name)
        self._out_of_step = False
        self.stats["resyncs"] += 1
        try:
            yield from self.sync_op()
            yield from self.negotiate_key_op()
        except VendhwError:
            self._out_of_step = True
            raise

    def sync_op(self) -> Op[None]:
        """SYNC: the slave expects flag 0 next (the runner sends it with flag 1)."""
        reply: bytes = yield SspRequest(SYNC, sync=True)
        if reply[0] != OK:
            raise SspResponseError(SYNC, reply[0], reply[1:])

    # -- bring-up ----------------------------------------------------------------------------

    def negotiate_key_op(self) -> Op[None]:
        """eSSP key agreement (GA973 §4.2); eCOUNT restarts at 0 on both sides."""
        agreement = KeyAgreement.new()
        self.session.cipher = None
        yield from self.command_op(SET_GENERATOR, agreement.generator.to_bytes(8, "little"),
                                   encrypt=False)
        yield from self.command_op(SET_MODULUS, agreement.modulus.to_bytes(8, "little"),
                                   encrypt=False)
        reply = yield from self.command_op(REQUEST_KEY_EXCHANGE,
                                           agreement.inter_key.to_bytes(8, "little"),
                                           encrypt=False)
        if len(reply) < 8:
            raise UnexpectedReplyError(f"key exchange reply too short: {reply.hex(' ')}")
        key = agreement.negotiated_key(int.from_bytes(reply[:8], "little"))
        self.session.cipher = EsspCipher.from_agreement(key, self.fixed_key)
        self.encrypted = True
        self.stats["key_exchanges"] += 1

    def set_version_op(self) -> Op[int]:
        """HOST PROTOCOL VERSION, newest first, one down on each FAIL."""
        for version in range(self.wanted_version, MIN_PROTOCOL_VERSION - 1, -1):
            try:
                yield from self.command_op(HOST_PROTOCOL_VERSION, bytes((version,)),
                                           encrypt=False)
                return version
            except SspResponseError as exc:
                if exc.code not in (FAIL, PARAMETER_OUT_OF_RANGE):
                    raise
        raise DeviceFault(f"{self.name}: no protocol version between {MIN_PROTOCOL_VERSION} "
                          f"and {self.wanted_version} is accepted")

    def start_op(self) -> Op[None]:
        """SYNC, protocol version, key agreement, setup, serial number; left inhibited."""
        self.encrypted = False
        self.session.cipher = None
        self._out_of_step = False
        yield from self.sync_op()
        version = yield from self.set_version_op()
        if self.encryption:
            try:
                yield from self.negotiate_key_op()
            except SspResponseError as exc:
                if self.encryption is True or exc.code != COMMAND_NOT_KNOWN:
                    raise
                log.info("%s: the device does not know eSSP; continuing in clear", self.name)
        self.setup = parse_setup((yield from self.command_op(SETUP_REQUEST)))
        if self.setup.protocol_version != version:
            log.info("%s: asked for protocol %d, setup reports %d", self.name, version,
                     self.setup.protocol_version)
        serial = yield from self.command_op(GET_SERIAL_NUMBER)
        self.serial = int.from_bytes(serial[:4], "big")
        self.currency = self.setup.currency or (self.setup.channels[0].currency
                                                if self.setup.channels else "")
        self.mapper.currency = self.currency
        self.mapper.channels = {c.number: c for c in self.setup.channels}
        yield from self._inhibits_op(enable=False)
        if self.is_payout and self.want_payout:
            try:
                yield from self.enable_payout_op()
            except SspResponseError as exc:
                if exc.code != KEY_NOT_SET:
                    raise
                log.warning("%s: the payout unit needs eSSP; notes are accepted, payouts "
                            "refused", self.name)
        self._fresh = True  # the next poll's SLAVE RESET is the one just handled
        self._quiet_reset = True  # ...and, after the user's start(), not news either

    def recover_op(self) -> Op[None]:
        """After a device reset: sync, key, protocol and inhibits again; re-enable if we were."""
        self.stats["resyncs"] += 1
        self._restarted = True
        was_enabled = self.enabled
        yield from self.start_op()
        self._quiet_reset = False  # a reset in operation is reported
        if was_enabled:
            yield from self.enable_op()

    # -- acceptance --------------------------------------------------------------------------

    @property
    def is_payout(self) -> bool:
        return bool(self.setup and self.setup.unit_type in PAYOUT_UNITS)

    def _mask(self) -> int:
        assert self.setup is not None
        mask = 0
        for channel in self.setup.channels:
            wanted = self.wanted_channels is None or channel.number in self.wanted_channels
            if wanted and channel.value and channel.number <= 16:
                mask |= 1 << (channel.number - 1)
        return mask

    def _inhibits_op(self, *, enable: bool) -> Op[None]:
        assert self.setup is not None
        mask = self._mask() if enable else 0
        if self.setup.unit_type == 0x03:
            return  # a SMART Hopper has coin-mech inhibits per denomination instead
        yield from self.command_op(SET_INHIBITS, mask.to_bytes(2, "little"))

    def _require_setup(self) -> SetupInfo:
        if self.setup is None:
            raise ConfigurationError(f"{self.name}: call start() first")
        return self.setup

    def enable_op(self) -> Op[None]:
        """Inhibits for the wanted channels, then ENABLE."""
        self._require_setup()
        yield from self._inhibits_op(enable=True)
        yield from self.command_op(ENABLE)
        self.enabled = True
        self.mapper.disabled = False

    def disable_op(self) -> Op[None]:
        yield from self.command_op(DISABLE)
        self.enabled = False

    def stack_op(self) -> Op[None]:
        """Accept the note in escrow: nothing to send, the next poll stacks it (GA138 HOLD:
        a poll accepts)."""
        if self.setup and self.setup.unit_type in NO_ESCROW_UNITS:
            raise NotSupportedError(f"{self.name} has no escrow")
        yield from ()

    def reject_op(self) -> Op[None]:
        """Return the note in escrow (REJECT 0x08)."""
        yield from self.command_op(REJECT)

    def hold_op(self) -> Op[None]:
        """Keep the note in escrow for another ``ESCROW_TIMEOUT`` (HOLD 0x18, sent instead of
        a poll: a poll would accept the note)."""
        yield from self.command_op(HOLD)

    def last_reject_reason_op(self) -> Op[str]:
        data = yield from self.command_op(LAST_REJECT_CODE)
        code = data[0] if data else 0xFF
        return REJECT_REASONS.get(code, f"reject code 0x{code:02X}")

    # -- polling -----------------------------------------------------------------------------

    def poll_op(self) -> Op[list[CashEvent]]:
        """POLL (WITH ACK), events to the sink, then EVENT ACK; recovers after a reset.

        Every event is a :class:`~vendhw.devices.engine.Deliver` step before the EVENT ACK
        request: a sink that raises closes the operation, so nothing is acknowledged and the
        device repeats the events (with the same ids).
        """
        self._require_setup()
        out: list[CashEvent] = []
        while self._pending:  # plain-poll events the sink refused last time
            yield Deliver(self._pending[0])
            out.append(self._pending.popleft())
        data = yield from self._poll_command_op()
        # An unknown event never fails the poll: what parses is kept, the rest goes to the
        # operator, and the poll is acknowledged (else POLL WITH ACK repeats it forever).
        events = decode_poll(data, self.version)
        self._polls += 1
        fresh, self._fresh = self._fresh, False
        reset = any(e["code"] == Event.SLAVE_RESET for e in events)
        if fresh and self._quiet_reset:  # the power-up start() just handled, not news
            events = [e for e in events if e["code"] != Event.SLAVE_RESET]
        prefix = f"ssp:{self.serial:08X}/{self._token}"
        acked = tuple((e["code"], e.get("channel"), repr(e.get("values")))
                      for e in events if self.poll_with_ack and e["code"] in ACKED_EVENTS)
        repeat_value = 0
        if self._unsure_ack is not None:
            if acked and acked == self._unsure_ack:
                # The same events as the poll whose EVENT ACK went unanswered: most likely
                # repeated (the ACK never arrived), so they keep their ids and count once. A
                # device has no event number, so identical new events would read the same:
                # an operator is told the value (below).
                repeat_value = 1
            else:
                self.acks += 1  # the ACK arrived: these are new events
            self._unsure_ack = None
        ids: list[str] = []
        k = 0
        needs_ack = False
        for i, event in enumerate(events):
            if self.poll_with_ack and (event["code"] in ACKED_EVENTS
                                       or event["event"] == UNKNOWN_EVENT):
                ids.append(f"{prefix}/a{self.acks}/{k}")
                k += 1
                needs_ack = True
            else:
                ids.append(f"{prefix}/p{self._polls}/{i}")
        reason = None
        if any(e["code"] == Event.NOTE_REJECTED for e in events):
            try:
                reason = yield from self.last_reject_reason_op()
            except VendhwError as exc:
                log.info("%s: LAST REJECT CODE failed: %s", self.name, exc)
        cash = self.mapper.map(events, ids, reason)
        if self._restarted:
            self._restarted = False
            at_risk = self.mapper.at_risk(f"{prefix}/p{self._polls}/in-path")
            if at_risk is not None:  # a reset whose SLAVE RESET event did not reach us
                cash.insert(0, at_risk)
        if self.poll_with_ack:
            for made in cash:  # a refused event stops here; the device repeats it unacked
                yield Deliver(made)
                out.append(made)
            if repeat_value:
                value = sum(c.value or 0 for c in cash if c.kind is CashEventKind.CREDIT)
                if value:
                    made = CashEvent(
                        CashEventKind.FAULT, self.name, event_id=f"{prefix}/a{self.acks}/unsure",
                        value=value, currency=self.currency,
                        reason="credit repeated after an unanswered EVENT ACK: counted once; "
                        "check whether a second note of the same value was taken",
                        detail={"needs_review": True})
                    yield Deliver(made)
                    out.append(made)
            if needs_ack:
                try:
                    yield from self.command_op(EVENT_ACK)
                except NoResponseError:
                    self._unsure_ack = acked  # decided by the next poll
                    raise
                self.acks += 1
        else:
            self._pending.extend(cash)
            while self._pending:
                yield Deliver(self._pending[0])
                out.append(self._pending.popleft())
        if reset and not fresh:
            yield from self.recover_op()  # a reset since start(): session, key, inhibits gone
        return out

    def _poll_command_op(self) -> Op[bytes]:
        if self.poll_with_ack:
            try:
                return (yield from self.command_op(POLL_WITH_ACK))
            except SspResponseError as exc:
                if exc.code != COMMAND_NOT_KNOWN:
                    raise
                log.info("%s: no POLL WITH ACK; using POLL", self.name)
                self.poll_with_ack = False
        return (yield from self.command_op(POLL))

    def checkpoint(self) -> dict[str, Any]:
        """What identifies repeated events across a restart; pass it back as ``resume=``."""
        return {"session": self._token, "acks": self.acks}

    def restore(self, data: dict[str, Any]) -> None:
        """Continue from a :meth:`checkpoint` (like ``resume=``), before :meth:`start`;
        :class:`~vendhw.machine.cash.CashAcceptor` does this from its journal."""
        self._token = str(data["session"])
        self.acks = int(data["acks"])

    # -- payout ------------------------------------------------------------------------------

    def _require_payout(self) -> SetupInfo:
        setup = self._require_setup()
        if setup.unit_type not in PAYOUT_UNITS:
            raise NotSupportedError(f"{self.name} ({setup.unit}) cannot pay out")
        return setup

    def enable_payout_op(self) -> Op[None]:
        """ENABLE PAYOUT DEVICE (SMART Payout, NV11): store notes for later payouts."""
        self._require_payout()
        yield from self.command_op(ENABLE_PAYOUT_DEVICE, errors=PAYOUT_DEVICE_ERRORS)
        self.payout_enabled = True

    def disable_payout_op(self) -> Op[None]:
        self._require_payout()
        yield from self.command_op(DISABLE_PAYOUT_DEVICE)
        self.payout_enabled = False

    def payout_op(self, amount: int, *, test: bool = False) -> Op[None]:
        """PAYOUT AMOUNT in minor units; progress, done or incomplete come as poll events.

        ``test=True`` asks whether the amount could be paid without paying it. A refusal
        raises :class:`SspResponseError` with the reason. A PAYOUT STARTED event is queued for
        the next poll to deliver (the command has no event of its own).
        """
        self._require_payout()
        if amount <= 0:
            raise ValueError("payout amount must be positive")
        params = money(amount, self.currency, self.version)
        if self.version >= 6:
            params += bytes((TEST_ONLY if test else COMMIT,))
        yield from self.command_op(PAYOUT_AMOUNT, params, errors=PAYOUT_ERRORS)
        if not test:
            self._pending.append(CashEvent(
                K.PAYOUT_STARTED, self.name, value=0, currency=self.currency,
                requested=amount, route="customer",
                event_id=f"ssp:{self.serial:08X}/{self._token}/payout{self._polls}"))

    def can_pay_op(self, amount: int) -> Op[bool]:
        """PAYOUT AMOUNT with the test option: COMMAND CANNOT BE PROCESSED means no."""
        try:
            yield from self.payout_op(amount, test=True)
        except SspResponseError as exc:
            if exc.code == CANNOT_PROCESS:
                return False
            raise
        return True

    def float_amount_op(self, keep: int, min_payout: int) -> Op[None]:
        """FLOAT AMOUNT: send stored money to the cashbox until ``keep`` remains."""
        setup = self._require_payout()
        width = 2 if setup.unit_type == 0x03 else 4
        params = min_payout.to_bytes(width, "little") + money(keep, self.currency, self.version)
        if self.version >= 6:
            params += bytes((COMMIT,))
        yield from self.command_op(FLOAT_AMOUNT, params, errors=PAYOUT_ERRORS)

    def empty_op(self, *, smart: bool = False) -> Op[None]:
        """EMPTY ALL (or SMART EMPTY, which records the value) to the cashbox."""
        self._require_payout()
        yield from self.command_op(SMART_EMPTY if smart else EMPTY_ALL)

    def halt_payout_op(self) -> Op[None]:
        self._require_payout()
        yield from self.command_op(HALT_PAYOUT)

    def set_route_op(self, value: int, *, to_payout: bool) -> Op[None]:
        """SET DENOMINATION ROUTE: store notes of ``value`` for payout or send to cashbox."""
        setup = self._require_payout()
        route = ROUTE_PAYOUT if to_payout else ROUTE_CASHBOX
        if self.version >= 6:
            params = bytes((route,)) + money(value, self.currency, self.version)
        else:
            width = 2 if setup.unit_type == 0x03 else 4
            params = bytes((route,)) + value.to_bytes(width, "little")
        yield from self.command_op(SET_DENOMINATION_ROUTE, params, errors=ROUTE_ERRORS)

    def get_route_op(self, value: int) -> Op[str]:
        reply = yield from self.command_op(GET_DENOMINATION_ROUTE,
                                           money(value, self.currency, self.version),
                                           errors=ROUTE_ERRORS)
        return "payout" if reply and reply[0] == ROUTE_PAYOUT else "cashbox"

    def levels_op(self) -> Op[list[dict[str, Any]]]:
        """GET ALL LEVELS: ``[{"value", "currency", "level"}]`` per stored denomination."""
        self._require_payout()
        data = yield from self.command_op(GET_ALL_LEVELS)
        if not data:
            return []
        out = []
        for i in range(data[0]):
            block = data[1 + 9 * i:10 + 9 * i]
            if len(block) < 9:
                raise UnexpectedReplyError(f"GET ALL LEVELS reply too short: {data.hex(' ')}")
            out.append({"level": int.from_bytes(block[0:2], "little"),
                        "value": int.from_bytes(block[2:6], "little"),
                        "currency": _ascii(block[6:9])})
        return out

    # -- the rest ----------------------------------------------------------------------------

    def reset_device_op(self) -> Op[None]:
        """RESET: the device restarts; the next polls report SLAVE RESET and the host
        recovers by itself."""
        yield from self.command_op(RESET)

    def status_op(self) -> Op[dict[str, Any]]:
        setup = self._require_setup()
        out: dict[str, Any] = {"device": self.name, "currency": self.currency,
                               "serial": self.serial, **setup.to_dict(),
                               "encrypted": self.encrypted, "enabled": self.enabled,
                               "poll_with_ack": self.poll_with_ack, **self.stats}
        if self.is_payout:
            out["levels"] = yield from self.levels_op()
        return out


# --- the runner --------------------------------------------------------------------------------


class SspDevice(SspCore, CashDevice):
    """An SSP/eSSP device on one port: note validator, with or without a payout unit.

    The rules are :class:`SspCore`'s operations; this class only runs them (:meth:`run`) and
    does the packet work (:meth:`_transact`): framing, sealing, the sequence flag, resends.

    :param encryption: ``"auto"`` agrees a key when the device knows the commands (payout
        devices refuse payouts without one), ``True`` insists, ``False`` never encrypts.
    :param channels: channel numbers to enable (default: every channel with a value).
    :param resume: a :meth:`checkpoint` from before a restart (see the module docstring).
    """

    def __init__(self, transport: Transport, *, address: int = 0,
                 encryption: bool | str = "auto", fixed_key: int = DEFAULT_FIXED_KEY,
                 reply_timeout: float = REPLY_TIMEOUT, retries: int = RETRIES,
                 protocol_version: int = MAX_PROTOCOL_VERSION,
                 channels: Iterable[int] | None = None, payout: bool = True,
                 name: str = "", resume: dict[str, Any] | None = None) -> None:
        self.transport = transport
        self.link = FrameLink(transport, SspFramer(), incoming="device", gap=INTER_BYTE_GAP)
        super().__init__(address=address, encryption=encryption, fixed_key=fixed_key,
                         protocol_version=protocol_version, channels=channels, payout=payout,
                         name=name or f"ssp@{transport.url}", resume=resume)
        self.reply_timeout = reply_timeout
        self.retries = retries

    # -- the runner --------------------------------------------------------------------------

    def run(self, op: Op[T], sink: EventSink | None = None) -> T:
        """Drive an operation to its end with blocking I/O; returns what it returns."""
        return drive(op, self._transact, sink=sink)

    def _transact(self, request: SspRequest) -> bytes:
        """Send one command and return its opened reply, resending the same packet (same
        sequence flag, same eSSP count) on silence or a stale reply."""
        command = request.command
        if request.sync:
            # SYNC is where the flags are agreed: its reply's flag is whatever the slave had.
            packet, seq = self.session.sync(), None
        else:
            packet = self.session.command(request.data, encrypt=request.encrypt)
            seq = self.session.seq
        retries = self.retries if request.retries is None else request.retries
        timeout = self.reply_timeout if request.timeout is None else request.timeout
        for attempt in range(retries + 1):
            if attempt:
                self.stats["retries"] += 1
                log.info("%s: no valid reply to 0x%02X, resending with the same sequence flag "
                         "(%d/%d)", self.name, command, attempt, retries)
            self.link.send(packet)
            try:
                # A reply carries the flag of its command (GA138): one with the other flag
                # is a stale or duplicated answer to the previous command, never this one's.
                frame = self.link.receive(timeout,
                                          accept=lambda f: f.get("address") ==
                                          self.session.address and seq in (None, f.get("seq", seq)))
                code, data = self.session.open(frame)
                return bytes((code,)) + data
            except NoResponseError:
                continue
            except SequenceError as exc:
                # An eSSP reply with another count is an older reply (duplicated or late on
                # the line); the slave answers the retransmission with its last reply.
                log.info("%s: %s; resending", self.name, exc)
                continue
        raise NoResponseError(f"no SSP reply to command 0x{command:02X} after "
                              f"{retries + 1} attempts", port=self.transport.url,
                              baudrate=self.transport.baudrate, timeout=timeout)

    # -- the CashDevice surface: each runs one operation --------------------------------------

    def command(self, command: int, params: bytes = b"", *, encrypt: bool | None = None,
                errors: dict[int, str] | None = None, recover: bool = True) -> bytes:
        """Send one command and return the data after OK (see :meth:`command_op`)."""
        return self.run(self.command_op(command, params, encrypt=encrypt, errors=errors,
                                        recover=recover))

    def sync(self) -> None:
        return self.run(self.sync_op())

    def negotiate_key(self) -> None:
        """eSSP key agreement (GA973 §4.2); eCOUNT restarts at 0 on both sides."""
        return self.run(self.negotiate_key_op())

    def start(self) -> None:
        """SYNC, protocol version, key agreement, setup, serial number; left inhibited."""
        return self.run(self.start_op())

    def enable(self) -> None:
        return self.run(self.enable_op())

    def disable(self) -> None:
        return self.run(self.disable_op())

    def stack(self) -> None:
        """Accept the note in escrow: the next poll stacks it (GA138 HOLD: a poll accepts)."""
        return self.run(self.stack_op())

    def reject(self) -> None:
        """Return the note in escrow (REJECT 0x08)."""
        return self.run(self.reject_op())

    def hold(self) -> None:
        """Keep the note in escrow for another ``ESCROW_TIMEOUT`` (HOLD 0x18)."""
        return self.run(self.hold_op())

    def last_reject_reason(self) -> str:
        return self.run(self.last_reject_reason_op())

    def poll(self, sink: EventSink | None = None) -> list[CashEvent]:
        """POLL (WITH ACK), events to the sink, then EVENT ACK; recovers after a reset."""
        return self.run(self.poll_op(), sink)

    def enable_payout(self) -> None:
        """ENABLE PAYOUT DEVICE (SMART Payout, NV11): store notes for later payouts."""
        return self.run(self.enable_payout_op())

    def disable_payout(self) -> None:
        return self.run(self.disable_payout_op())

    def payout(self, amount: int, *, test: bool = False) -> None:
        """PAYOUT AMOUNT in minor units; progress, done or incomplete come as poll events.

        ``test=True`` asks whether the amount could be paid without paying it. A refusal
        raises :class:`SspResponseError` with the reason (not enough value, cannot pay the
        exact amount, busy, disabled).
        """
        return self.run(self.payout_op(amount, test=test))

    def can_pay(self, amount: int) -> bool:
        """Whether the device could pay ``amount`` exactly now (PAYOUT AMOUNT, test option)."""
        return self.run(self.can_pay_op(amount))

    def float_amount(self, keep: int, min_payout: int) -> None:
        """FLOAT AMOUNT: send stored money to the cashbox until ``keep`` remains."""
        return self.run(self.float_amount_op(keep, min_payout))

    def empty(self, *, smart: bool = False) -> None:
        """EMPTY ALL (or SMART EMPTY, which records the value) to the cashbox."""
        return self.run(self.empty_op(smart=smart))

    def halt_payout(self) -> None:
        return self.run(self.halt_payout_op())

    def set_route(self, value: int, *, to_payout: bool) -> None:
        """SET DENOMINATION ROUTE: store notes of ``value`` for payout or send to cashbox."""
        return self.run(self.set_route_op(value, to_payout=to_payout))

    def get_route(self, value: int) -> str:
        return self.run(self.get_route_op(value))

    def levels(self) -> list[dict[str, Any]]:
        """GET ALL LEVELS: ``[{"value", "currency", "level"}]`` per stored denomination."""
        return self.run(self.levels_op())

    def reset_device(self) -> None:
        """RESET: the device restarts; the next polls report SLAVE RESET and the host
        recovers by itself."""
        return self.run(self.reset_device_op())

    def status(self) -> dict[str, Any]:
        return self.run(self.status_op())

    def close(self) -> None:
        self.link.close()


def open_device(url: str, *, address: int | str = 0, encryption: bool | str = "auto",
                reply_timeout: float | str = REPLY_TIMEOUT, retries: int | str = RETRIES,
                protocol_version: int | str = MAX_PROTOCOL_VERSION,
                channels: str | Iterable[int] | None = None, payout: bool | str = True,
                **options: Any) -> SspDevice:
    """Open an SSP device on ``url`` (9600 8N2) for :mod:`vendhw.cli.cash` and integrators.

    Options may be strings (from a URL or ``-o key=value``). ``payout=False`` leaves the
    payout unit of a SMART Payout disabled at start.
    """
    if isinstance(channels, str):
        channels = option_ints(channels)
    auto = isinstance(encryption, str) and encryption.strip().lower() == "auto"
    encryption = "auto" if auto else option_flag(encryption)
    transport = open_transport(url, baudrate=BAUDRATE, stopbits=STOPBITS, **options)
    device = SspDevice(transport, address=int(address, 0) if isinstance(address, str)
                       else address, encryption=encryption,
                       reply_timeout=float(reply_timeout), retries=int(retries),
                       protocol_version=int(protocol_version), channels=channels,
                       payout=option_flag(payout))
    return device


__all__ = ["Channel", "EventMapper", "SetupInfo", "SspDevice", "SspResponseError",
           "SspSession", "money", "open_device", "parse_setup"]
