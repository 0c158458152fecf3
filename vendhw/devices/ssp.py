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
* :class:`SspDevice` is the runner: it sends packets through a
  :class:`~vendhw.devices.link.FrameLink`, waits ``REPLY_TIMEOUT`` and retransmits up to
  ``RETRIES`` times, and implements :class:`~vendhw.devices.cash.CashDevice`.

Credit safety: polls use POLL WITH ACK (0x56) when the device knows it, so a credit repeats
until EVENT ACK (0x57), which is sent only after the sink took every event of the poll. The
``event_id`` of an acknowledged event is ``<device>/<session>/<acks so far>/<index>``; the
same event repeated after a refused sink gets the same id. Store :meth:`SspDevice.checkpoint`
with your journal and pass it back as ``resume=`` after a restart, so an event journaled just
before a crash (and repeated because its ACK never left) is recognised. Devices without POLL
WITH ACK get plain POLL, and events the sink refused are kept and delivered first next time.

After SLAVE RESET (or KEY NOT SET on an encrypted command: the device lost its key) the host
synchronises again, agrees a new key and restores the inhibits and enable state by itself.

Facts and sources: ``protocols/ssp/README.md`` (ITL GA138, GA973).
"""

from __future__ import annotations

import logging
import secrets
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from vendhw.devices.cash import CashDevice, CashEvent, CashEventKind, EventSink
from vendhw.devices.link import FrameLink
from vendhw.errors import (
    ConfigurationError,
    DeviceFault,
    NakError,
    NoResponseError,
    NotSupportedError,
    ProtocolError,
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
    SspFramer,
    decode_events,
)
from vendhw.options import option_flag, option_ints
from vendhw.transport import Transport, open_transport

log = logging.getLogger(__name__)

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

(RESET, SET_INHIBITS, SETUP_REQUEST, HOST_PROTOCOL_VERSION, POLL, REJECT, DISABLE, ENABLE,
 GET_SERIAL_NUMBER, SYNC, LAST_REJECT_CODE, HOLD, GET_ALL_LEVELS, PAYOUT_AMOUNT,
 GET_DENOMINATION_LEVEL, HALT_PAYOUT, SET_DENOMINATION_ROUTE, GET_DENOMINATION_ROUTE,
 FLOAT_AMOUNT, GET_MINIMUM_PAYOUT, EMPTY_ALL, SET_GENERATOR, SET_MODULUS,
 REQUEST_KEY_EXCHANGE, SMART_EMPTY, POLL_WITH_ACK, EVENT_ACK, DISABLE_PAYOUT_DEVICE,
 ENABLE_PAYOUT_DEVICE, SET_COIN_MECH_INHIBITS) = (
    0x01, 0x02, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0C, 0x11, 0x17, 0x18, 0x22, 0x33, 0x35,
    0x38, 0x3B, 0x3C, 0x3D, 0x3E, 0x3F, 0x4A, 0x4B, 0x4C, 0x52, 0x56, 0x57, 0x5B, 0x5C, 0x40)

OK, COMMAND_NOT_KNOWN, WRONG_PARAMETERS, PARAMETER_OUT_OF_RANGE = 0xF0, 0xF2, 0xF3, 0xF4
CANNOT_PROCESS, SOFTWARE_ERROR, FAIL, KEY_NOT_SET = 0xF5, 0xF6, 0xF8, 0xFA
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
PAYOUT_DEVICE_ERRORS = {1: "no payout connected", 2: "invalid currency detected",
                        3: "payout device failure (or busy)"}
"""GA138 SET DENOMINATION ROUTE / ENABLE PAYOUT DEVICE errors."""
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

    def _channel(self, number: int) -> tuple[int, str]:
        channel = self.channels.get(number)
        return (channel.value, channel.currency) if channel else (0, self.currency)

    def map(self, events: Iterable[dict[str, Any]], ids: Iterable[str],
            reject_reason: str | None = None) -> list[CashEvent]:
        out: list[CashEvent] = []
        codes = set()
        for event, event_id in zip(events, ids, strict=True):
            code = event["code"]
            codes.add(code)
            made = self._one(event, event_id, reject_reason)
            if made is not None:
                out.append(made)
        if self.jammed and not codes & {0xE9, 0xEA, 0xD5}:
            self.jammed = False
        if self.escrow_channel and 0xEF not in codes:
            # The note left escrow; stacking, credit or rejection events say how.
            self.escrow_channel = 0
        return out

    def _make(self, kind: CashEventKind, event_id: str, event: dict[str, Any],
              **fields: Any) -> CashEvent:
        fields.setdefault("currency", self.currency)
        detail = {"ssp_event": event["event"], "code": event["code"]}
        return CashEvent(kind, self.device, event_id=event_id, detail=detail, **fields)

    def _one(self, event: dict[str, Any], eid: str, reject_reason: str | None
             ) -> CashEvent | None:
        code = event["code"]
        channel = event.get("channel")
        values = event.get("values") or []
        paid = sum(v["value"] for v in values)
        currency = values[0]["currency"] if values and values[0]["currency"] else self.currency
        if code == 0xF1:
            self.escrow_channel, self.disabled, self.last_progress = 0, None, None
            return self._make(K.DEVICE_RESET, eid, event, reason="slave reset (power-up)")
        if code == 0xEF:
            if channel and channel != self.escrow_channel:
                self.escrow_channel = channel
                value, cur = self._channel(channel)
                return self._make(K.ESCROW, eid, event, value=value, currency=cur,
                                  channel=channel, route="escrow")
            return None
        if code == 0xEE:
            value, cur = self._channel(channel or 0)
            self.escrow_channel = 0
            return self._make(K.CREDIT, eid, event, value=value, currency=cur, channel=channel,
                              route="validator")
        if code == 0xE2:
            value, cur = self._channel(channel or 0)
            return self._make(K.CREDIT, eid, event, value=value, currency=cur, channel=channel,
                              route="cashbox", reason="note found in the path at power-up "
                              "and stacked")
        if code == 0xDF:
            return self._make(K.CREDIT, eid, event, value=paid, currency=currency,
                              route="hopper")
        if code == 0xBF:
            return self._make(K.CREDIT, eid, event, value=paid, currency=currency,
                              route="system")
        if code == 0xEC:
            return self._make(K.REJECTED, eid, event, reason=reject_reason or "rejected")
        if code == 0xE1:
            value, cur = self._channel(channel or 0)
            return self._make(K.RETURNED, eid, event, value=value, currency=cur,
                              channel=channel or None, reason="note cleared from the front "
                              "at power-up")
        if code in (0xE9, 0xEA):
            if self.jammed:
                return None
            self.jammed = True
            return self._make(K.JAM, eid, event, reason=event["event"].lower())
        if code == 0xE6:
            return self._make(K.FRAUD, eid, event, channel=channel or None,
                              reason="fraud attempt")
        if code == 0xE7:
            return self._make(K.CASHBOX_FULL, eid, event, reason="stacker full")
        if code == 0xE3:
            if self.cashbox_removed:
                return None
            self.cashbox_removed = True
            return self._make(K.CASHBOX_REMOVED, eid, event)
        if code == 0xE4:
            self.cashbox_removed = False
            return self._make(K.CASHBOX_REPLACED, eid, event)
        if code == 0xE8:
            if self.disabled:
                return None
            self.disabled = True
            return self._make(K.DISABLED, eid, event)
        if code in (0xE0, 0xC6, 0x90, 0x83):
            return self._make(K.FAULT, eid, event, reason=event["event"].lower())
        if code in (0xDA, 0xD7):
            if paid == self.last_progress:
                return None
            self.last_progress = paid
            return self._make(K.PAYOUT_PROGRESS, eid, event, value=paid, currency=currency,
                              route="customer" if code == 0xDA else "cashbox")
        if code in (0xD2, 0xD8):
            self.last_progress = None
            return self._make(K.PAYOUT_DONE, eid, event, value=paid, currency=currency,
                              route="customer" if code == 0xD2 else "cashbox",
                              reason=None if code == 0xD2 else "floated")
        if code in (0xD5, 0xD6, 0xD9, 0xDC, 0xDD, 0xB1):
            self.last_progress = None
            if code == 0xD5:
                if self.jammed:
                    return None
                self.jammed = True
            requested = sum(v.get("requested", 0) for v in values) or None
            reason = {0xD5: "jammed during payout", 0xD6: "payout halted",
                      0xD9: "payout timed out", 0xDC: "payout interrupted (power-down or reset)",
                      0xDD: "float interrupted (power-down or reset)"}.get(code)
            if code == 0xB1:
                reason = "error during payout: " + ERROR_DURING_PAYOUT.get(
                    event.get("error", -1), f"code {event.get('error')}")
            return self._make(K.PAYOUT_INCOMPLETE, eid, event, value=paid, currency=currency,
                              requested=requested, route="customer", reason=reason)
        if code in (0xC3, 0xB4):
            return self._make(K.PAYOUT_DONE, eid, event, value=paid, currency=currency,
                              route="cashbox", reason="emptied to the cashbox")
        if code in (0xEB, 0xCC):
            self.escrow_channel = 0
        return None  # in-between states (reading, rejecting, stacking...): nothing to report


# --- the runner --------------------------------------------------------------------------------


class SspDevice(CashDevice):
    """An SSP/eSSP device on one port: note validator, with or without a payout unit.

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
        self.session = SspSession(address)
        self.name = name or f"ssp@{transport.url}"
        self.encryption = encryption
        self.fixed_key = fixed_key
        self.reply_timeout = reply_timeout
        self.retries = retries
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
        self._pending: deque[CashEvent] = deque()
        self.stats = {"retries": 0, "resyncs": 0, "key_exchanges": 0}

    # -- packets ---------------------------------------------------------------------------------

    @property
    def version(self) -> int:
        return self.setup.protocol_version if self.setup else MIN_PROTOCOL_VERSION

    def _exchange(self, packet: bytes, command: int) -> tuple[int, bytes]:
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats["retries"] += 1
                log.info("%s: no valid reply to 0x%02X, resending with the same sequence flag "
                         "(%d/%d)", self.name, command, attempt, self.retries)
            self.link.send(packet)
            try:
                frame = self.link.receive(self.reply_timeout,
                                          accept=lambda f: f.get("address") ==
                                          self.session.address)
            except NoResponseError:
                continue
            return self.session.open(frame)
        raise NoResponseError(f"no SSP reply to command 0x{command:02X} after "
                              f"{self.retries + 1} attempts", port=self.transport.url,
                              baudrate=self.transport.baudrate, timeout=self.reply_timeout)

    def command(self, command: int, params: bytes = b"", *, encrypt: bool | None = None,
                errors: dict[int, str] | None = None, recover: bool = True) -> bytes:
        """Send one command and return the data after OK; other responses raise.

        A KEY NOT SET answer to an encrypted command means the device lost its key (a reset):
        the host agrees a new one and sends the command once more.
        """
        if encrypt is None:
            encrypt = self.encrypted
        data = bytes((command,)) + params
        code, reply = self._exchange(self.session.command(data, encrypt=encrypt), command)
        if code == KEY_NOT_SET and encrypt and recover:
            log.warning("%s: KEY NOT SET: the device lost its key; recovering", self.name)
            self._recover()
            return self.command(command, params, errors=errors, recover=False)
        if code != OK:
            raise SspResponseError(command, code, reply, errors)
        return reply

    def sync(self) -> None:
        code, reply = self._exchange(self.session.sync(), SYNC)
        if code != OK:
            raise SspResponseError(SYNC, code, reply)

    # -- bring-up ----------------------------------------------------------------------------

    def negotiate_key(self) -> None:
        """eSSP key agreement (GA973 §4.2); eCOUNT restarts at 0 on both sides."""
        agreement = KeyAgreement.new()
        self.session.cipher = None
        self.command(SET_GENERATOR, agreement.generator.to_bytes(8, "little"), encrypt=False)
        self.command(SET_MODULUS, agreement.modulus.to_bytes(8, "little"), encrypt=False)
        reply = self.command(REQUEST_KEY_EXCHANGE, agreement.inter_key.to_bytes(8, "little"),
                             encrypt=False)
        if len(reply) < 8:
            raise UnexpectedReplyError(f"key exchange reply too short: {reply.hex(' ')}")
        key = agreement.negotiated_key(int.from_bytes(reply[:8], "little"))
        self.session.cipher = EsspCipher.from_agreement(key, self.fixed_key)
        self.encrypted = True
        self.stats["key_exchanges"] += 1

    def _set_version(self) -> int:
        for version in range(self.wanted_version, MIN_PROTOCOL_VERSION - 1, -1):
            try:
                self.command(HOST_PROTOCOL_VERSION, bytes((version,)), encrypt=False)
                return version
            except SspResponseError as exc:
                if exc.code not in (FAIL, PARAMETER_OUT_OF_RANGE):
                    raise
        raise DeviceFault(f"{self.name}: no protocol version between {MIN_PROTOCOL_VERSION} "
                          f"and {self.wanted_version} is accepted")

    def start(self) -> None:
        """SYNC, protocol version, key agreement, setup, serial number; left inhibited."""
        self.encrypted = False
        self.session.cipher = None
        self.sync()
        version = self._set_version()
        if self.encryption:
            try:
                self.negotiate_key()
            except SspResponseError as exc:
                if self.encryption is True or exc.code != COMMAND_NOT_KNOWN:
                    raise
                log.info("%s: the device does not know eSSP; continuing in clear", self.name)
        self.setup = parse_setup(self.command(SETUP_REQUEST))
        if self.setup.protocol_version != version:
            log.info("%s: asked for protocol %d, setup reports %d", self.name, version,
                     self.setup.protocol_version)
        self.serial = int.from_bytes(self.command(GET_SERIAL_NUMBER)[:4], "big")
        self.currency = self.setup.currency or (self.setup.channels[0].currency
                                                if self.setup.channels else "")
        self.mapper.currency = self.currency
        self.mapper.channels = {c.number: c for c in self.setup.channels}
        self._inhibits(enable=False)
        if self.is_payout and self.want_payout:
            try:
                self.enable_payout()
            except SspResponseError as exc:
                if exc.code != KEY_NOT_SET:
                    raise
                log.warning("%s: the payout unit needs eSSP; notes are accepted, payouts "
                            "refused", self.name)
        self._fresh = True  # the next poll's SLAVE RESET is the one just handled
        self._quiet_reset = True  # ...and, after the user's start(), not news either

    def _recover(self) -> None:
        """After a device reset: sync, key, protocol and inhibits again; re-enable if we were."""
        self.stats["resyncs"] += 1
        was_enabled = self.enabled
        self.start()
        self._quiet_reset = False  # a reset in operation is reported
        if was_enabled:
            self.enable()

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

    def _inhibits(self, *, enable: bool) -> None:
        assert self.setup is not None
        mask = self._mask() if enable else 0
        if self.setup.unit_type == 0x03:
            return  # a SMART Hopper has coin-mech inhibits per denomination instead
        self.command(SET_INHIBITS, mask.to_bytes(2, "little"))

    def _require_setup(self) -> SetupInfo:
        if self.setup is None:
            raise ConfigurationError(f"{self.name}: call start() first")
        return self.setup

    def enable(self) -> None:
        self._require_setup()
        self._inhibits(enable=True)
        self.command(ENABLE)
        self.enabled = True
        self.mapper.disabled = False

    def disable(self) -> None:
        self.command(DISABLE)
        self.enabled = False

    def stack(self) -> None:
        """Accept the note in escrow: the next poll stacks it (GA138 HOLD: a poll accepts)."""
        if self.setup and self.setup.unit_type in NO_ESCROW_UNITS:
            raise NotSupportedError(f"{self.name} has no escrow")

    def reject(self) -> None:
        """Return the note in escrow (REJECT 0x08)."""
        self.command(REJECT)

    def hold(self) -> None:
        """Keep the note in escrow for another ``ESCROW_TIMEOUT`` (HOLD 0x18, sent instead of
        a poll: a poll would accept the note)."""
        self.command(HOLD)

    def last_reject_reason(self) -> str:
        data = self.command(LAST_REJECT_CODE)
        code = data[0] if data else 0xFF
        return REJECT_REASONS.get(code, f"reject code 0x{code:02X}")

    # -- polling -----------------------------------------------------------------------------

    def _deliver(self, event: CashEvent, sink: EventSink | None) -> None:
        if sink is not None:
            sink(event)

    def poll(self, sink: EventSink | None = None) -> list[CashEvent]:
        """POLL (WITH ACK), events to the sink, then EVENT ACK; recovers after a reset."""
        self._require_setup()
        out: list[CashEvent] = []
        while self._pending:  # plain-poll events the sink refused last time
            self._deliver(self._pending[0], sink)
            out.append(self._pending.popleft())
        data = self._poll_command()
        events = decode_events(data, self.version)
        if events is None:
            raise UnexpectedReplyError(f"{self.name}: poll reply does not parse as events: "
                                       f"{data.hex(' ')}")
        self._polls += 1
        fresh, self._fresh = self._fresh, False
        reset = any(e["code"] == 0xF1 for e in events)
        if fresh and self._quiet_reset:  # the power-up start() just handled, not news
            events = [e for e in events if e["code"] != 0xF1]
        prefix = f"ssp:{self.serial:08X}/{self._token}"
        ids: list[str] = []
        k = 0
        needs_ack = False
        for i, event in enumerate(events):
            if self.poll_with_ack and event["code"] in ACKED_EVENTS:
                ids.append(f"{prefix}/a{self.acks}/{k}")
                k += 1
                needs_ack = True
            else:
                ids.append(f"{prefix}/p{self._polls}/{i}")
        reason = None
        if any(e["code"] == 0xEC for e in events):
            try:
                reason = self.last_reject_reason()
            except VendhwError as exc:
                log.info("%s: LAST REJECT CODE failed: %s", self.name, exc)
        cash = self.mapper.map(events, ids, reason)
        if self.poll_with_ack:
            for made in cash:  # a refused event stops here; the device repeats it unacked
                self._deliver(made, sink)
                out.append(made)
            if needs_ack:
                self.command(EVENT_ACK)
                self.acks += 1
        else:
            self._pending.extend(cash)
            while self._pending:
                self._deliver(self._pending[0], sink)
                out.append(self._pending.popleft())
        if reset and not fresh:
            self._recover()  # a reset since our start(): session, key and inhibits are gone
        return out

    def _poll_command(self) -> bytes:
        if self.poll_with_ack:
            try:
                return self.command(POLL_WITH_ACK)
            except SspResponseError as exc:
                if exc.code != COMMAND_NOT_KNOWN:
                    raise
                log.info("%s: no POLL WITH ACK; using POLL", self.name)
                self.poll_with_ack = False
        return self.command(POLL)

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

    def enable_payout(self) -> None:
        """ENABLE PAYOUT DEVICE (SMART Payout, NV11): store notes for later payouts."""
        self._require_payout()
        self.command(ENABLE_PAYOUT_DEVICE, errors=PAYOUT_DEVICE_ERRORS)
        self.payout_enabled = True

    def disable_payout(self) -> None:
        self._require_payout()
        self.command(DISABLE_PAYOUT_DEVICE)
        self.payout_enabled = False

    def payout(self, amount: int, *, test: bool = False) -> None:
        """PAYOUT AMOUNT in minor units; progress, done or incomplete come as poll events.

        ``test=True`` asks whether the amount could be paid without paying it. A refusal
        raises :class:`SspResponseError` with the reason (not enough value, cannot pay the
        exact amount, busy, disabled).
        """
        self._require_payout()
        if amount <= 0:
            raise ValueError("payout amount must be positive")
        params = money(amount, self.currency, self.version)
        if self.version >= 6:
            params += bytes((TEST_ONLY if test else COMMIT,))
        self.command(PAYOUT_AMOUNT, params, errors=PAYOUT_ERRORS)
        if not test:
            self._pending.append(CashEvent(
                K.PAYOUT_STARTED, self.name, value=0, currency=self.currency,
                requested=amount, route="customer",
                event_id=f"ssp:{self.serial:08X}/{self._token}/payout{self._polls}"))

    def can_pay(self, amount: int) -> bool:
        """Whether the device could pay ``amount`` exactly now (PAYOUT AMOUNT, test option)."""
        try:
            self.payout(amount, test=True)
        except SspResponseError as exc:
            if exc.code == CANNOT_PROCESS:
                return False
            raise
        return True

    def float_amount(self, keep: int, min_payout: int) -> None:
        """FLOAT AMOUNT: send stored money to the cashbox until ``keep`` remains."""
        setup = self._require_payout()
        width = 2 if setup.unit_type == 0x03 else 4
        params = min_payout.to_bytes(width, "little") + money(keep, self.currency, self.version)
        if self.version >= 6:
            params += bytes((COMMIT,))
        self.command(FLOAT_AMOUNT, params, errors=PAYOUT_ERRORS)

    def empty(self, *, smart: bool = False) -> None:
        """EMPTY ALL (or SMART EMPTY, which records the value) to the cashbox."""
        self._require_payout()
        self.command(SMART_EMPTY if smart else EMPTY_ALL)

    def halt_payout(self) -> None:
        self._require_payout()
        self.command(HALT_PAYOUT)

    def set_route(self, value: int, *, to_payout: bool) -> None:
        """SET DENOMINATION ROUTE: store notes of ``value`` for payout or send to cashbox."""
        setup = self._require_payout()
        route = ROUTE_PAYOUT if to_payout else ROUTE_CASHBOX
        if self.version >= 6:
            params = bytes((route,)) + money(value, self.currency, self.version)
        else:
            width = 2 if setup.unit_type == 0x03 else 4
            params = bytes((route,)) + value.to_bytes(width, "little")
        self.command(SET_DENOMINATION_ROUTE, params, errors=PAYOUT_DEVICE_ERRORS)

    def get_route(self, value: int) -> str:
        reply = self.command(GET_DENOMINATION_ROUTE, money(value, self.currency, self.version),
                             errors=PAYOUT_DEVICE_ERRORS)
        return "payout" if reply and reply[0] == ROUTE_PAYOUT else "cashbox"

    def levels(self) -> list[dict[str, Any]]:
        """GET ALL LEVELS: ``[{"value", "currency", "level"}]`` per stored denomination."""
        self._require_payout()
        data = self.command(GET_ALL_LEVELS)
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

    def reset_device(self) -> None:
        """RESET: the device restarts; the next polls report SLAVE RESET and the host
        recovers by itself."""
        self.command(RESET)

    def status(self) -> dict[str, Any]:
        setup = self._require_setup()
        out: dict[str, Any] = {"device": self.name, "currency": self.currency,
                               "serial": self.serial, **setup.to_dict(),
                               "encrypted": self.encrypted, "enabled": self.enabled,
                               "poll_with_ack": self.poll_with_ack, **self.stats}
        if self.is_payout:
            out["levels"] = self.levels()
        return out

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
