"""ccTalk hosts: coin acceptor, hopper and bill validator, reporting CashEvents.

Layers (sans-I/O core, thin runner):

* **Core.** Every operation (start, poll, payout, route bill...) is a generator that yields
  :class:`Request` steps (one ccTalk command each) and receives the reply data back, and
  yields :class:`Deliver` steps for events that must reach the sink before the host moves
  on. It never touches a port and never sleeps, so the same core runs under
  :meth:`CcTalkBus.run` (threads), :meth:`CcTalkBus.arun` (asyncio) and in tests that drive
  it against a simulator directly.
* **Runner.** :class:`CcTalkBus` builds packets with :class:`~vendhw.framing.cctalk.CcTalkFramer`,
  sends them through :class:`~vendhw.devices.link.FrameLink` with local-echo removal (one
  data wire: the host hears itself), reads replies under the 50 ms inter-byte rule and
  retries idempotent commands (a slave drops a bad packet silently, Part 1 §11).

Credit safety rests on the **event counter** of headers 229/159: the host diffs each reading
against the last one it *committed*, and commits an event only after the sink accepted it, so
a failing journal means the same events (with the same ``event_id``) come again at the next
poll. The counter runs 1..255 then wraps to 1; 0 means the device was reset. More than five
new events means some fell out of the device's five-event buffer: they are reported as one
``fault`` event that says how many were lost.

Facts and sources: ``protocols/cctalk/README.md``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from abc import abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from vendhw.devices.cash import CashDevice, CashEvent, CashEventKind, EventSink
from vendhw.devices.engine import Deliver, Op, drive, drive_async
from vendhw.devices.link import FrameLink
from vendhw.errors import (
    ConfigurationError,
    DeviceFault,
    FramingError,
    NakError,
    NoResponseError,
    ProtocolError,
    UnexpectedReplyError,
    VendhwError,
)
from vendhw.framing.base import Frame
from vendhw.framing.cctalk import (
    BUSY,
    HEADERS,
    HOST_ADDRESS,
    INTER_BYTE_GAP,
    NAK,
    REPLY,
    CcTalkFramer,
    Header,
)
from vendhw.options import option_flag
from vendhw.transport import Transport, open_transport

log = logging.getLogger(__name__)

T = TypeVar("T")

# --- timing and limits (Generic Specification v4.7) -------------------------------------------

BAUDRATE = 9600
"""Part 1 §10: 9600 baud, 8N1, one open-collector data line."""
RECEIVE_GAP = INTER_BYTE_GAP
"""Part 1 §11: a receiver waits at most 50 ms for the next byte of a packet, then drops it."""
REPLY_TIMEOUT = 0.2
"""Seconds for a reply's first byte. Part 1 §11: most devices answer within 10 ms; the rest
is margin for USB-serial adapters and ptys (pass ``reply_timeout`` to tighten it)."""
RETRIES = 2
"""Resends of an idempotent command after silence or a corrupt reply (Part 1 §11: a slave
discards a bad packet silently and the host retries at application level)."""
POLL_INTERVAL = 0.2
"""Part 3 Appendices 4/11/16: poll coin acceptors every 200 ms (their buffer holds 5 events)."""
INHIBIT_CHECK_POLLS = 25
"""While enabled, ask for the master inhibit every this many polls (5 s at 200 ms) to catch
a reset the event counter cannot show (no event since the previous reset)."""
RESET_TIMEOUT = 2.0
"""Seconds a device may stay silent after RESET DEVICE (header 1) before it answers polls."""
BUFFER_EVENTS = 5
"""Part 2 header 229/159: the reply carries the last five events, newest first."""
BUFFER_REPLY_LENGTH = 1 + 2 * BUFFER_EVENTS
"""Data bytes of a 229/159 reply: the event counter and five (A, B) result pairs."""
MAX_DISPENSE = 255
"""Part 2 header 167: one byte of coin count per dispense command."""

# --- addresses and headers (Part 3 Table 1, Part 2) -------------------------------------------

COIN_ACCEPTOR_ADDRESS = 2
HOPPER_ADDRESS = 3
BILL_VALIDATOR_ADDRESS = 40

ENABLE_HOPPER_CODE = 165
"""Part 2 header 164: data 165 enables the payout, anything else disables it."""
BARCODE_TICKET = 255
"""Part 3 Appendix 16: bill type 255 in header 159 events is a barcode ticket."""
ROUTE_RETURN, ROUTE_STACK, ROUTE_EXTEND_ESCROW = 0, 1, 255
"""Part 2 header 154 route codes."""
ROUTE_ERRORS = {254: "escrow is empty", 255: "failed to route bill"}
"""Part 2 header 154: a one-byte reply instead of ACK."""

# --- event tables (Part 3 Table 3 coin error codes; header 159 bill event codes) --------------

K = CashEventKind
COIN_ERRORS: dict[int, tuple[CashEventKind | None, str]] = {
    0: (None, "null event"),
    1: (K.REJECTED, "reject coin"),
    2: (K.REJECTED, "inhibited coin"),
    3: (K.REJECTED, "multiple window"),
    4: (K.JAM, "wake-up timeout"),
    5: (K.JAM, "validation timeout"),
    6: (K.JAM, "credit sensor timeout"),
    7: (K.JAM, "sorter opto timeout"),
    8: (K.REJECTED, "2nd close coin error"),
    9: (K.REJECTED, "accept gate not ready"),
    10: (K.REJECTED, "credit sensor not ready"),
    11: (K.REJECTED, "sorter not ready"),
    12: (K.REJECTED, "reject coin not cleared"),
    13: (K.REJECTED, "validation sensor not ready"),
    14: (K.FAULT, "credit sensor blocked"),
    15: (K.FAULT, "sorter opto blocked"),
    16: (K.FRAUD, "credit sequence error"),
    17: (K.FRAUD, "coin going backwards"),
    18: (K.FRAUD, "coin too fast (over credit sensor)"),
    19: (K.FRAUD, "coin too slow (over credit sensor)"),
    20: (K.FRAUD, "C.O.S. mechanism activated (coin-on-string)"),
    21: (K.JAM, "DCE opto timeout"),
    22: (K.FRAUD, "DCE opto not seen"),
    23: (K.FRAUD, "credit sensor reached too early"),
    24: (K.FRAUD, "reject coin (repeated sequential trip)"),
    25: (K.REJECTED, "reject slug"),
    26: (K.FAULT, "reject sensor blocked"),
    27: (K.FAULT, "games overload"),
    28: (K.FAULT, "max. coin meter pulses exceeded"),
    29: (K.FAULT, "accept gate open not closed"),
    30: (K.FAULT, "accept gate closed not open"),
    31: (K.JAM, "manifold opto timeout"),
    32: (K.FAULT, "manifold opto blocked"),
    33: (K.REJECTED, "manifold not ready"),
    34: (K.FRAUD, "security status changed"),
    35: (K.FAULT, "motor exception"),
    36: (K.FRAUD, "swallowed coin"),
    37: (K.FRAUD, "coin too fast (over validation sensor)"),
    38: (K.FRAUD, "coin too slow (over validation sensor)"),
    39: (K.FAULT, "coin incorrectly sorted"),
    40: (K.FRAUD, "external light attack"),
    253: (None, "data block request"),
    254: (K.RETURNED, "coin return mechanism activated (flight deck open)"),
    255: (K.FAULT, "unspecified alarm code"),
}
BILL_STATUS: dict[int, tuple[CashEventKind | None, str]] = {
    0: (K.DISABLED, "master inhibit active"),
    1: (K.RETURNED, "bill returned from escrow"),
    2: (K.REJECTED, "invalid bill (validation fail)"),
    3: (K.REJECTED, "invalid bill (transport problem)"),
    4: (K.REJECTED, "inhibited bill (on serial)"),
    5: (K.REJECTED, "inhibited bill (on DIP switches)"),
    6: (K.JAM, "bill jammed in transport (unsafe mode)"),
    7: (K.JAM, "bill jammed in stacker"),
    8: (K.FRAUD, "bill pulled backwards"),
    9: (K.FRAUD, "bill tamper"),
    10: (None, "stacker OK"),
    11: (K.CASHBOX_REMOVED, "stacker removed"),
    12: (K.CASHBOX_REPLACED, "stacker inserted"),
    13: (K.FAULT, "stacker faulty"),
    14: (K.CASHBOX_FULL, "stacker full"),
    15: (K.JAM, "stacker jammed"),
    16: (K.JAM, "bill jammed in transport (safe mode)"),
    17: (K.FRAUD, "opto fraud detected"),
    18: (K.FRAUD, "string fraud detected"),
    19: (K.FAULT, "anti-string mechanism faulty"),
    20: (None, "barcode detected"),  # the ticket follows as bill type 255
    21: (K.FAULT, "unknown bill type stacked"),
}
HOPPER_FLAGS: tuple[tuple[str, ...], ...] = (
    ("absolute maximum current exceeded", "payout timeout occurred",
     "motor reversed during last payout to clear a jam", "opto fraud: path blocked during idle",
     "opto fraud: short-circuit during idle", "opto blocked permanently during payout",
     "power-up detected", "payout disabled"),
    ("opto fraud: short-circuit during payout", "single coin payout mode",
     "use other hopper for change", "opto fraud: finger / slider mis-match",
     "motor reverse limit reached", "inductive coil fault", "NV memory checksum error",
     "PIN number mechanism"),
    ("power down during payout", "unknown coin type paid", "PIN number incorrect",
     "incorrect cipher key", "encryption enabled", "", "", ""),
)
"""Part 2 v4.7 header 163 (test hopper, SCH3 format): three status registers, bit 0 first.
Register 2 bits 2-6 follow v4.7 (Kosta-Git/cc-talk-docs ``docs/cctalk-part-2-v4-7.pdf``
§3.90; the same in Kosta-Git/cc-talk-rs ``cc_talk_core/src/common/hopper_flags.rs``), not
the "checksum A-D" labels of older issues."""

CURRENCIES = {
    "EU": "EUR", "GB": "GBP", "US": "USD", "CH": "CHF", "JP": "JPY", "CN": "CNY", "RU": "RUB",
    "AU": "AUD", "CA": "CAD", "SE": "SEK", "NO": "NOK", "DK": "DKK", "PL": "PLN", "CZ": "CZK",
    "HU": "HUF", "TR": "TRY", "IN": "INR", "ZA": "ZAR", "NZ": "NZD", "MX": "MXN", "BR": "BRL",
    "KR": "KRW", "RO": "RON", "BG": "BGN", "UA": "UAH", "IL": "ILS", "AR": "ARS",
}
"""ccTalk two-letter country codes of coin and bill ids -> ISO 4217 currency."""
ZERO_DECIMAL = {"JP", "KR", "HU"}


# --- sans-I/O steps ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One command for the runner to send; the reply's data bytes come back (b"" for ACK).

    A NAK, silence or a corrupt reply is thrown back into the operation as a vendhw error, so
    the core decides what a failure means (a lost dispense reply must not be resent blindly).
    """

    address: int
    header: int
    data: bytes = b""
    retries: int = RETRIES
    """Resends allowed; 0 for commands that must not run twice (dispense)."""
    timeout: float | None = None
    """Reply deadline for slow commands; None = the runner's default."""
    reply_length: int | None = None
    """Data bytes the reply must carry; a reply of another length is a late answer to an
    earlier command (ccTalk replies do not name their command) and is skipped."""

    @property
    def name(self) -> str:
        return HEADERS.get(self.header, f"HEADER {self.header}")


Step = Request | Deliver
"""ccTalk operations yield requests and events (:mod:`vendhw.devices.engine`)."""


def _ascii(data: bytes) -> str:
    return data.decode("ascii", "replace").strip(" \x00")


# --- value strings (Part 3 coin/bill naming; cc-talk-rs cc_talk_core/src/common/currency.rs) --

_FACTORS = {"K": 1000, "M": 1_000_000, "G": 1_000_000_000}


def currency_of(country: str) -> str:
    """ISO currency for a ccTalk country code (``EU`` -> ``EUR``); unknown codes stay as is."""
    return CURRENCIES.get(country, country)


def decimals_of(country: str) -> int:
    return 0 if country in ZERO_DECIMAL else 2


def parse_value_id(text: str) -> tuple[str, int | None]:
    """``(country, value in minor units)`` from a coin id (``EU200A``) or bill id (``EU0005A``).

    Coin ids (6 characters) carry the value in the currency's smallest unit (``EU200A`` is
    200 cents); bill ids (7 characters) in the main unit (``EU0005A`` is 5 euros). A factor
    letter stands for the decimal point (``2K5`` = 2500) and ``.`` is a decimal point in the
    same unit (Part 3 v4.7 §2.1: ``.50`` = 0.50, ``2.5`` = 2.5; a bill ``BN0.10A`` is 10
    cents). ``None`` for tokens (``TK``), empty channels (``..``), values below the smallest
    unit (coin ``EU.50A``, ``CH2.5A``, ``CH5m0A``) and values that cannot be read.
    """
    text = text.strip()
    if len(text) < 6:
        return "", None
    country = text[:2]
    if country in ("..", "TK") or not country.isalpha():
        return country if country == "TK" else "", None
    digits = text[2:-1]
    try:
        for letter, factor in _FACTORS.items():
            if letter in digits:
                whole, _, frac = digits.partition(letter)
                value = int(whole or "0") * factor + (
                    int(frac) * factor // 10 ** len(frac) if frac else 0)
                return country, value * (10 ** decimals_of(country) if len(text) == 7 else 1)
        if "." in digits:
            # Part 3 §2.1 table: "." is a decimal point in the id's own unit (".50" = 0.50,
            # "2.5" = 2.5 of what "001" is 1 of): the smallest unit for coins, the main
            # unit for bills. A value below the smallest unit cannot be credited.
            whole, _, frac = digits.partition(".")
            dec = decimals_of(country) if len(text) == 7 else 0
            if frac[dec:].strip("0"):
                return country, None
            frac = (frac + "0" * dec)[:dec]
            return country, int(whole or "0") * 10 ** dec + int(frac or "0")
        value = int(digits)
    except ValueError:
        return country, None
    return country, value * (10 ** decimals_of(country) if len(text) == 7 else 1)


# --- the event counter (the heart) ------------------------------------------------------------


def counter_distance(last: int, counter: int) -> int:
    """Events between two non-zero readings of an event counter that runs 1..255, 1, 2...

    ``last`` 0 means "just reset" (the device counts 1, 2... from there).
    """
    if last == 0 or counter >= last:
        return counter - last
    return counter + 255 - last


def counter_advance(last: int, steps: int) -> int:
    """The counter value ``steps`` events after ``last`` (wrapping 255 -> 1, never 0)."""
    if steps <= 0:
        return last
    return (last + steps - 1) % 255 + 1


@dataclass
class CounterState:
    """What the host has committed of one device's event counter.

    ``session`` changes whenever the device resets (its counter restarts); ``ordinal`` counts
    events within the session, so ``(session, ordinal)`` names each event for ever. Persist
    :meth:`checkpoint` with the journal to resume across host restarts without double counting.
    """

    session: str = field(default_factory=lambda: secrets.token_hex(4))
    last: int | None = None
    """Last committed counter value; None until the baseline reading."""
    ordinal: int = 0

    def checkpoint(self) -> dict[str, Any]:
        return {"session": self.session, "counter": self.last, "ordinal": self.ordinal}

    @classmethod
    def resume(cls, data: dict[str, Any]) -> CounterState:
        return cls(str(data["session"]), None if data.get("counter") is None
                   else int(data["counter"]), int(data.get("ordinal", 0)))


@dataclass(frozen=True)
class BufferRead:
    """One reading of a five-event buffer, diffed against the committed state."""

    counter: int
    reset: bool
    """The counter reads 0 while the host had committed events: the device was reset."""
    lost: int
    """Events that fell out of the buffer between two readings."""
    results: tuple[tuple[int, int], ...]
    """The new (result A, result B) pairs still in the buffer, oldest first."""
    suspicious: bool = False
    """More than five new events: either a burst or a reset followed by new events."""


def read_buffer(state: CounterState, data: bytes) -> BufferRead:
    """Diff a 229/159 reply (``[counter][A1][B1]...[A5][B5]``, newest first) against ``state``."""
    if not data:
        raise UnexpectedReplyError("event buffer reply is empty")
    counter = data[0]
    pairs = [(data[i], data[i + 1]) for i in range(1, len(data) - 1, 2)]
    if state.last is None:
        raise ConfigurationError("event counter has no baseline; call start() first")
    if counter == 0:
        return BufferRead(0, state.last != 0, 0, ())
    n = counter_distance(state.last, counter)
    available = min(n, BUFFER_EVENTS)
    if len(pairs) < available:
        # Devices always send all five pairs; a short reply is damage, not lost events.
        raise UnexpectedReplyError(f"event buffer reply has {len(pairs)} event(s), the "
                                   f"counter says {available} are new")
    lost = n - available
    return BufferRead(counter, False, lost, tuple(reversed(pairs[:available])),
                      suspicious=n > BUFFER_EVENTS)


# --- the runner -------------------------------------------------------------------------------


class CcTalkBus:
    """One ccTalk line (one or more devices) behind a FrameLink; thread-safe.

    :param checksum: ``"simple"`` (8-bit zero sum) or ``"crc16"`` (CRC-16/XMODEM).
    :param echo: the line echoes what the host sends (true for a plain UART on the single
        data wire; harmless when it does not: the link stops expecting it).
    """

    def __init__(self, transport: Transport, *, checksum: str = "simple", echo: bool = True,
                 reply_timeout: float = REPLY_TIMEOUT, retries: int = RETRIES) -> None:
        self.transport = transport
        self.framer = CcTalkFramer(checksum=checksum)
        self.checksum = checksum
        self.reply_timeout = reply_timeout
        self.retries = retries
        # The 50 ms rule belongs to the deframer (a partial packet older than that is
        # dropped). Handing it to the link as its read gap too would make every read wait
        # 50 ms after the last byte for more, so the link reads what is there and returns.
        self.link = FrameLink(transport, self.framer, incoming="device", gap=None, echo=echo)
        self.link.deframer = self.framer.deframer("device", gap=RECEIVE_GAP)
        self._lock = threading.RLock()

    def packet(self, address: int, header: int, data: bytes = b"") -> bytes:
        return self.framer.build(direction="host", dest=address, src=HOST_ADDRESS,
                                 header=header, data=data)

    def _accept(self, address: int) -> Callable[[Frame], bool]:
        crc = self.checksum == "crc16"

        def accept(frame: Frame) -> bool:
            # CRC-16 replies carry the CRC's low byte where the source address would be.
            return bool(frame["dest"] == HOST_ADDRESS and (crc or frame["src"] == address))

        return accept

    def _receive(self, timeout: float, accept: Callable[[Frame], bool]) -> Frame:
        """The reply within ``timeout``, applying the 50 ms rule during silences too.

        A false packet start in line noise (a ``01`` then a large length byte) would hold
        the real reply behind it until more bytes come; after 50 ms of silence the partial
        packet is stale (Part 1 §11), so the deframer rescans what it held.
        """
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NoResponseError("no ccTalk reply", port=self.transport.url,
                                      baudrate=self.transport.baudrate, timeout=timeout)
            try:
                return self.link.receive(min(remaining, RECEIVE_GAP), accept=accept)
            except NoResponseError:
                if not self.link.deframer.pending:
                    continue
            for item in self.link.deframer.feed(b"", time.monotonic()):
                if isinstance(item, Frame):
                    if accept(item):
                        return item
                else:
                    self.link.garbage.append(item)

    def transact(self, request: Request) -> bytes:
        """Send one command and return its reply data; retries only as ``request`` allows."""
        packet = self.packet(request.address, request.header, request.data)
        timeout = request.timeout or self.reply_timeout
        accept = self._accept(request.address)
        if request.reply_length is not None:
            by_address, length = accept, request.reply_length

            def accept(frame: Frame) -> bool:
                return by_address(frame) and (frame["header"] != REPLY
                                              or len(frame["data"]) == length)
        failure: VendhwError | None = None
        with self._lock:
            for attempt in range(request.retries + 1):
                try:
                    self.link.send(packet)
                    frame = self._receive(timeout, accept)
                except NoResponseError as exc:
                    failure = exc
                    log.debug("%s: no reply to %s (attempt %d)", self.transport.url,
                              request.name, attempt + 1)
                    continue
                header = frame["header"]
                if header == NAK:
                    raise NakError(f"ccTalk address {request.address} answered NAK to "
                                   f"{request.name}")
                if header == BUSY:
                    failure = DeviceFault(f"ccTalk address {request.address} is busy "
                                          f"({request.name})")
                    continue
                return bytes(frame["data"])
        if isinstance(failure, DeviceFault):
            raise failure
        raise NoResponseError(
            f"ccTalk address {request.address} did not answer {request.name} "
            f"({request.retries + 1} attempts; check the address, --checksum "
            f"{'simple' if self.checksum == 'crc16' else 'crc16'}?, encryption and wiring)",
            port=self.transport.url, baudrate=self.transport.baudrate, timeout=timeout)

    def run(self, op: Op[T], sink: EventSink | None = None) -> T:
        """Drive a sans-I/O operation to its end with blocking I/O (threads)."""
        with self._lock:
            return drive(op, self.transact, sink=sink)

    async def arun(self, op: Op[T], sink: EventSink | None = None) -> T:
        """Drive an operation from asyncio (the blocking exchange runs in a worker thread)."""
        return await run_async(op, lambda request: asyncio.to_thread(self.transact, request),
                               sink)

    def close(self) -> None:
        self.link.close()


async def run_async(op: Op[T], transact: Callable[[Request], Awaitable[bytes]],
                    sink: EventSink | None = None) -> T:
    """Drive a sans-I/O operation with any async ``transact(request) -> reply data``."""
    return await drive_async(op, transact, sink=sink)


# --- shared device core -----------------------------------------------------------------------


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
        self.name = name or f"cctalk-{self.address}@{bus.transport.url.split('?')[0]}"
        self.identity = Identity()
        self._pending: deque[CashEvent] = deque()

    # -- core helpers (generators) ---------------------------------------------------------------

    def _req(self, header: int, data: bytes = b"", **kw: Any) -> Request:
        return Request(self.address, header, bytes(data), **kw)

    def _optional(self, header: int, data: bytes = b"") -> Op[bytes | None]:
        """A command some devices do not implement: NAK or silence gives None."""
        try:
            reply: bytes = yield self._req(header, data, retries=0)
        except (NakError, NoResponseError, FramingError):
            return None
        return reply

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
            ident.serial_bytes = serial[:3]
            ident.serial = int.from_bytes(serial[:3], "little")
        comms = yield from self._optional(Header.REQUEST_COMMS_REVISION)
        if comms and len(comms) >= 3:
            ident.comms_revision = f"{comms[1]}.{comms[2]} (release {comms[0]})"
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

    # -- operations --------------------------------------------------------------------------

    def baseline_op(self) -> Op[None]:
        """First buffer reading: set the counter baseline (or check the resumed one)."""
        data: bytes = yield self._req(self.read_header)
        counter = data[0] if data else 0
        if self.counter.last is None:
            if counter:
                log.info("%s: %d events predate this session (counter %d); pass resume= "
                         "with a checkpoint to recover them", self.name,
                         min(counter, BUFFER_EVENTS), counter)
            self.counter.last = counter
        elif counter == 0 and self.counter.last != 0:
            self.counter = CounterState(last=0)  # device reset while the host was away

    def mask_op(self, enable: bool) -> Op[None]:
        channels = self.channels if self.channels is not None else set(self.values)
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
        data: bytes = yield self._req(Header.REQUEST_MASTER_INHIBIT_STATUS, reply_length=1)
        return not (data and data[0] & 1)

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
            state = self.counter = CounterState(last=0)
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
                self.counter = CounterState(last=state.last)
                yield from self.mask_op(True)
        return out

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


class CcTalkCoinAcceptor(_BufferedAcceptor):
    """A coin acceptor (address 2): coin ids, inhibits, credit from the event counter.

    :param coin_values: channel -> value in minor units, overriding what the coin ids say.
    """

    default_address = COIN_ACCEPTOR_ADDRESS
    expected_category = ("Coin Acceptor",)
    read_header = Header.READ_BUFFERED_CREDIT_OR_ERROR_CODES

    def __init__(self, bus: CcTalkBus, *, address: int | None = None, name: str = "",
                 resume: dict[str, Any] | None = None,
                 coin_values: dict[int, int] | None = None,
                 channels: Iterable[int] | None = None) -> None:
        super().__init__(bus, address=address, name=name, resume=resume)
        self.overrides = dict(coin_values or {})
        self.channels = set(channels) if channels is not None else None

    def start_op(self) -> Op[None]:
        yield from self.identify_op()
        for channel in range(1, 17):
            reply = yield from self._optional(Header.REQUEST_COIN_ID, bytes((channel,)))
            if reply is None:
                continue
            text = _ascii(reply)
            country, value = parse_value_id(text)
            if text and not text.startswith(".."):
                self.ids[channel] = text
            if value:
                self.values[channel] = value
                self.currency = self.currency or currency_of(country)
        self.values.update(self.overrides)
        yield from self.baseline_op()
        yield from self.mask_op(False)

    def start(self) -> None:
        self.run(self.start_op())

    def _inhibited(self, a: int, b: int) -> bool:
        return a == 0 and (b == 2 or 128 <= b <= 159)

    def _event(self, a: int, b: int, event_id: str) -> CashEvent | None:
        if a:
            value = self.values.get(a)
            return CashEvent(K.CREDIT, self.name, value or 0, self.currency, a, "cashbox",
                             None if value else "coin value unknown (no coin id)", event_id,
                             detail={"sorter_path": b, "coin_id": self.ids.get(a, "")})
        kind, text = COIN_ERRORS.get(b, (K.REJECTED, "inhibited coin")
                                     if 128 <= b <= 159 else (K.FAULT, f"error code {b}"))
        if kind is None:
            return None
        detail: dict[str, Any] = {"code": b}
        if 128 <= b <= 159:
            detail["channel"] = b - 127
            text = f"inhibited coin (type {b - 127})"
        return CashEvent(kind, self.name, reason=text, event_id=event_id, detail=detail)


class CcTalkBillValidator(_BufferedAcceptor):
    """A bill validator (address 40) with escrow: read buffered bill events, route bill.

    :param escrow: hold each note for :meth:`stack` / :meth:`reject` (else stack at once).
    """

    default_address = BILL_VALIDATOR_ADDRESS
    expected_category = ("Bill Validator", "Bill Acceptor")  # Appendix 16 shows the latter
    read_header = Header.READ_BUFFERED_BILL_EVENTS

    def __init__(self, bus: CcTalkBus, *, address: int | None = None, name: str = "",
                 resume: dict[str, Any] | None = None, escrow: bool = True,
                 bill_values: dict[int, int] | None = None,
                 channels: Iterable[int] | None = None) -> None:
        super().__init__(bus, address=address, name=name, resume=resume)
        self.escrow = escrow
        self.overrides = dict(bill_values or {})
        self.channels = set(channels) if channels is not None else None
        self.scaling: dict[str, tuple[int, int]] = {}

    def start_op(self) -> Op[None]:
        yield from self.identify_op()
        for channel in range(1, 17):
            reply = yield from self._optional(Header.REQUEST_BILL_ID, bytes((channel,)))
            if reply is None:
                continue
            text = _ascii(reply)
            if not text or text.startswith(".."):
                continue
            self.ids[channel] = text
            country = text[:2]
            if country not in self.scaling and country.isalpha():
                factor = yield from self._optional(Header.REQUEST_COUNTRY_SCALING_FACTOR,
                                                   country.encode("ascii"))
                if factor and len(factor) >= 3 and (factor[0] or factor[1]):
                    self.scaling[country] = (int.from_bytes(factor[:2], "little"), factor[2])
            digits = text[2:6]
            if country in self.scaling and digits.isdigit():
                self.values[channel] = int(digits) * self.scaling[country][0]
            else:
                _, value = parse_value_id(text)
                if value:
                    self.values[channel] = value
            self.currency = self.currency or currency_of(country)
        self.values.update(self.overrides)
        yield self._req(Header.MODIFY_BILL_OPERATING_MODE, bytes((1 | (2 if self.escrow else 0),)))
        yield from self.baseline_op()
        yield from self.mask_op(False)

    def start(self) -> None:
        self.run(self.start_op())

    def _inhibited(self, a: int, b: int) -> bool:
        return a == 0 and b in (0, 4)

    def _event(self, a: int, b: int, event_id: str) -> CashEvent | None:
        if a == BARCODE_TICKET:
            # Part 3 Appendix 16: a barcode ticket reads as bill type 255; its value is in
            # READ BARCODE DATA (header 129), which is the host's business, not a credit here.
            return CashEvent(K.ESCROW if b == 1 else K.CREDIT, self.name, 0, self.currency, a,
                             "escrow" if b == 1 else "cashbox",
                             "barcode ticket (value from header 129)", event_id,
                             detail={"barcode": True, "code": b})
        if a:
            value = self.values.get(a, 0)
            if b == 1:
                return CashEvent(K.ESCROW, self.name, value, self.currency, a, "escrow",
                                 event_id=event_id, detail={"bill_id": self.ids.get(a, "")})
            return CashEvent(K.CREDIT, self.name, value, self.currency, a, "cashbox",
                             None if value else "bill value unknown (no bill id)", event_id,
                             detail={"bill_id": self.ids.get(a, ""), "code": b})
        kind, text = BILL_STATUS.get(b, (K.FAULT, f"bill event code {b}"))
        if kind is None:
            return None
        return CashEvent(kind, self.name, reason=text, event_id=event_id, detail={"code": b})

    def route_op(self, code: int) -> Op[None]:
        """ROUTE BILL. A lost ACK makes the retry find the escrow empty: that is success."""
        first = True
        while True:
            try:
                reply: bytes = yield self._req(Header.ROUTE_BILL, bytes((code,)), retries=0)
            except (NoResponseError, FramingError):
                if not first:
                    raise
                first = False
                continue
            if not reply:
                return
            if reply[0] == 254 and not first:
                return  # the first attempt did route it; its ACK was lost
            raise DeviceFault(f"{self.name}: route bill failed: "
                              f"{ROUTE_ERRORS.get(reply[0], 'error')}", code=reply[0])

    def stack(self) -> None:
        self.run(self.route_op(ROUTE_STACK))

    def reject(self) -> None:
        self.run(self.route_op(ROUTE_RETURN))


# --- hopper -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class HopperStatus:
    """Header 166: ``[event counter][coins remaining][last payout paid][last payout unpaid]``."""

    counter: int
    remaining: int
    paid: int
    unpaid: int

    @classmethod
    def parse(cls, data: bytes) -> HopperStatus:
        if len(data) < 4:
            raise UnexpectedReplyError(f"hopper status reply has {len(data)} bytes, need 4")
        return cls(data[0], data[1], data[2], data[3])


def hopper_flags(data: bytes) -> list[str]:
    """Names of the flags set in a TEST HOPPER (163) reply."""
    names: list[str] = []
    for register, byte in zip(HOPPER_FLAGS, data, strict=False):
        names += [name for bit, name in enumerate(register) if name and byte >> bit & 1]
    return names


@dataclass
class Payout:
    """A dispense in progress: what was asked, the hopper's counters at the start."""

    amount: int
    coins: int
    counter: int
    """The hopper's event counter after it accepted this dispense."""
    baseline: int | None
    """The lifetime dispense count (header 168) before it started, for reconciliation."""
    reported: int = 0
    """Coins already reported as paid."""

    @property
    def key(self) -> str:
        return f"payout{self.counter}"


class CcTalkHopper(CcTalkDevice):
    """A payout hopper (address 3): enable, dispense with counters, emergency stop.

    :param coin_value: value of the hopper's coin in minor units (else read with header 171).
    :param security: what precedes the coin count in DISPENSE HOPPER COINS: ``"serial"`` (the
        3 serial-number bytes, the unencrypted hoppers' check) or ``"none"``.
    """

    default_address = HOPPER_ADDRESS
    expected_category = ("Payout", "Hopper")

    def __init__(self, bus: CcTalkBus, *, address: int | None = None, name: str = "",
                 coin_value: int | None = None, security: str = "serial",
                 dispense_timeout: float = 2.0) -> None:
        super().__init__(bus, address=address, name=name)
        if security not in ("serial", "none"):
            raise ConfigurationError("hopper security must be 'serial' or 'none'")
        self.security = security
        self.coin_value = coin_value or 0
        self.coin_id = ""
        self.dispense_timeout = dispense_timeout
        self.session = secrets.token_hex(4)
        self.last_counter: int | None = None
        self.active: Payout | None = None
        self.start_flags: list[str] = []

    def status_op(self) -> Op[HopperStatus]:
        data: bytes = yield self._req(Header.REQUEST_HOPPER_STATUS)
        return HopperStatus.parse(data)

    def dispense_count_op(self) -> Op[int | None]:
        data = yield from self._optional(Header.REQUEST_HOPPER_DISPENSE_COUNT)
        return int.from_bytes(data[:3], "little") if data and len(data) >= 3 else None

    def flags_op(self) -> Op[list[str]]:
        data = yield from self._optional(Header.TEST_HOPPER)
        return hopper_flags(data) if data else []

    def start_op(self) -> Op[None]:
        yield from self.identify_op()
        reply = yield from self._optional(Header.REQUEST_HOPPER_COIN)
        if reply:
            self.coin_id = _ascii(reply)
            country, value = parse_value_id(self.coin_id)
            self.currency = currency_of(country)
            if not self.coin_value and value:
                self.coin_value = value
        status = yield from self.status_op()
        self.last_counter = status.counter
        self.start_flags = yield from self.flags_op()  # also clears "power-up detected"
        yield self._req(Header.ENABLE_HOPPER, b"\x00")

    def start(self) -> None:
        self.run(self.start_op())

    def enable(self) -> None:
        self.run(self._single(Header.ENABLE_HOPPER, bytes((ENABLE_HOPPER_CODE,))))

    def disable(self) -> None:
        self.run(self._single(Header.ENABLE_HOPPER, b"\x00"))

    def _single(self, header: int, data: bytes = b"") -> Op[bytes]:
        reply: bytes = yield self._req(header, data)
        return reply

    def payout_op(self, amount: int) -> Op[Payout]:
        """Start paying ``amount``; never sends a dispense twice for one request.

        If the dispense reply is lost, the hopper's event counter tells whether it took the
        command: a resend happens only when the counter did not move.
        """
        if self.active is not None:
            raise ProtocolError(f"{self.name}: a payout is already in progress")
        if amount <= 0:
            raise ValueError("payout amount must be positive")
        if not self.coin_value:
            raise ConfigurationError(f"{self.name}: coin value unknown; pass coin_value=")
        coins, rest = divmod(amount, self.coin_value)
        if rest:
            raise ConfigurationError(f"{self.name}: {amount} is not a multiple of the coin "
                                     f"value {self.coin_value}")
        if coins > MAX_DISPENSE:
            raise ConfigurationError(f"{self.name}: at most {MAX_DISPENSE} coins per payout "
                                     f"({coins} asked)")
        baseline = yield from self.dispense_count_op()
        before = yield from self.status_op()
        if before.remaining:
            raise ProtocolError(f"{self.name}: hopper still paying {before.remaining} coins")
        yield self._req(Header.ENABLE_HOPPER, bytes((ENABLE_HOPPER_CODE,)))
        security = self.identity.serial_bytes if self.security == "serial" else b""
        if self.security == "serial" and len(security) != 3:
            raise ConfigurationError(f"{self.name}: no serial number for the dispense check; "
                                     f"use security='none'")
        expected = counter_advance(before.counter, 1)
        for attempt in range(2):
            try:
                reply: bytes = yield self._req(Header.DISPENSE_HOPPER_COINS,
                                               security + bytes((coins,)), retries=0,
                                               timeout=self.dispense_timeout)
            except (NoResponseError, FramingError) as exc:
                after = yield from self.status_op()
                if after.counter == expected:
                    break  # it was accepted; only its reply was lost
                if after.counter != before.counter or attempt:
                    raise ProtocolError(f"{self.name}: dispense not confirmed ({exc}); "
                                        f"counter {before.counter} -> {after.counter}") from exc
                continue
            if reply and reply[0] != expected:
                log.warning("%s: dispense counter %d, expected %d", self.name, reply[0],
                            expected)
                expected = reply[0]
            break
        payout = Payout(amount, coins, expected, baseline)
        self.active = payout
        self.last_counter = expected
        self._pending.append(CashEvent(
            K.PAYOUT_STARTED, self.name, 0, self.currency, route="customer",
            event_id=f"{self.ident_key}/{self.session}/{payout.key}/started", requested=amount,
            detail={"coins": coins, "coin_value": self.coin_value}))
        return payout

    def payout(self, amount: int) -> None:
        self.run(self.payout_op(amount))

    def emergency_stop(self) -> int:
        """Stop the motor now; returns the coins left unpaid (reported at the next poll)."""
        data: bytes = self.run(self._single(Header.EMERGENCY_STOP))
        return data[0] if data else 0

    def _payout_event(self, kind: CashEventKind, payout: Payout, paid: int, suffix: str,
                      reason: str | None = None, **detail: Any) -> CashEvent:
        return CashEvent(kind, self.name, paid * self.coin_value, self.currency,
                         route="customer", reason=reason,
                         event_id=f"{self.ident_key}/{self.session}/{payout.key}/{suffix}",
                         requested=payout.amount,
                         detail={"coins_paid": paid, "coins_requested": payout.coins,
                                 **detail})

    def poll_op(self) -> Op[list[CashEvent]]:
        """Hopper status: payout progress, its end, and a reset (counter back to 0)."""
        out: list[CashEvent] = yield from _drain(self._pending)
        status = yield from self.status_op()
        payout = self.active
        if status.counter == 0 and self.last_counter:
            event = CashEvent(K.DEVICE_RESET, self.name, reason="hopper event counter "
                              "restarted (power-up or reset)",
                              event_id=f"{self.ident_key}/{self.session}/reset")
            yield Deliver(event)
            out.append(event)
            if payout is not None:
                now = yield from self.dispense_count_op()
                flags = yield from self.flags_op()
                if now is not None and payout.baseline is not None:
                    paid = max(0, min(payout.coins, now - payout.baseline))
                    how = "by the lifetime dispense counter"
                else:
                    paid = payout.reported
                    how = "last reported before the reset (dispense count unavailable)"
                event = self._payout_event(
                    K.PAYOUT_INCOMPLETE, payout, paid, "incomplete",
                    f"hopper reset during payout: {paid} of {payout.coins} coins paid ({how})",
                    flags=flags)
                yield Deliver(event)
                out.append(event)
                self.active = None
            self.session = secrets.token_hex(4)
            self.last_counter = 0
            return out
        self.last_counter = status.counter
        if payout is None:
            return out
        if status.counter != payout.counter:
            raise ProtocolError(f"{self.name}: hopper counter {status.counter}, expected "
                                f"{payout.counter}: another host dispensed?")
        if status.paid > payout.reported and status.remaining:
            event = self._payout_event(K.PAYOUT_PROGRESS, payout, status.paid,
                                       f"paid{status.paid}")
            yield Deliver(event)
            out.append(event)
            payout.reported = status.paid
        if status.remaining:
            return out
        if status.paid >= payout.coins and not status.unpaid:
            event = self._payout_event(K.PAYOUT_DONE, payout, status.paid, "done")
        else:
            flags = yield from self.flags_op()
            why = ", ".join(flags) or "hopper empty or stopped"
            event = self._payout_event(
                K.PAYOUT_INCOMPLETE, payout, status.paid, "incomplete",
                f"{status.unpaid} coin(s) unpaid: {why}", coins_unpaid=status.unpaid,
                flags=flags)
        yield Deliver(event)
        out.append(event)
        self.active = None
        return out

    def poll(self, sink: EventSink | None = None) -> list[CashEvent]:
        return self.run(self.poll_op(), sink)

    def status(self) -> dict[str, Any]:
        st = self.run(self.status_op())
        count = self.run(self.dispense_count_op())
        flags = self.run(self.flags_op())
        return {"device": self.name, "address": self.address, **self.identity.to_dict(),
                "coin_id": self.coin_id, "coin_value": self.coin_value,
                "currency": self.currency, "counter": st.counter, "remaining": st.remaining,
                "last_paid": st.paid, "last_unpaid": st.unpaid, "dispense_count": count,
                "flags": flags, "payout_active": self.active is not None}


# --- opening ----------------------------------------------------------------------------------

_BUS_OPTIONS = ("checksum", "echo", "reply_timeout", "retries")


def open_bus(url: str, *, checksum: str = "simple", echo: bool | str = True,
             reply_timeout: float | str = REPLY_TIMEOUT, retries: int | str = RETRIES,
             **transport_options: Any) -> CcTalkBus:
    """Open a ccTalk line (``/dev/ttyUSB0``, ``sim://cctalk-coin``...) at 9600 baud."""
    if checksum not in ("simple", "crc16"):
        raise ConfigurationError(f"ccTalk checksum must be 'simple' or 'crc16', not {checksum!r}")
    if url.startswith("sim://"):
        transport_options.setdefault("checksum", checksum)  # the simulator must agree
    transport = open_transport(url, baudrate=BAUDRATE, **transport_options)
    return CcTalkBus(transport, checksum=checksum, echo=option_flag(echo),
                     reply_timeout=float(reply_timeout), retries=int(retries))


def _split(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    bus = {k: options.pop(k) for k in _BUS_OPTIONS if k in options}
    return bus, options


def open_coin_acceptor(url: str, *, address: int | str | None = None,
                       resume: dict[str, Any] | None = None,
                       coin_values: dict[int, int] | None = None,
                       channels: Iterable[int] | None = None,
                       **options: Any) -> CcTalkCoinAcceptor:
    """Open a coin acceptor (default address 2). Call ``start()`` next."""
    bus_options, transport_options = _split(options)
    bus = open_bus(url, **bus_options, **transport_options)
    return CcTalkCoinAcceptor(bus, address=None if address is None else int(address),
                              resume=resume, coin_values=coin_values, channels=channels)


def open_bill_validator(url: str, *, address: int | str | None = None,
                        resume: dict[str, Any] | None = None, escrow: bool | str = True,
                        bill_values: dict[int, int] | None = None,
                        channels: Iterable[int] | None = None,
                        **options: Any) -> CcTalkBillValidator:
    """Open a bill validator (default address 40) with escrow. Call ``start()`` next."""
    bus_options, transport_options = _split(options)
    bus = open_bus(url, **bus_options, **transport_options)
    return CcTalkBillValidator(bus, address=None if address is None else int(address),
                               resume=resume, escrow=option_flag(escrow), bill_values=bill_values,
                               channels=channels)


def open_hopper(url: str, *, address: int | str | None = None,
                coin_value: int | str | None = None, security: str = "serial",
                **options: Any) -> CcTalkHopper:
    """Open a payout hopper (default address 3). Call ``start()`` next."""
    bus_options, transport_options = _split(options)
    bus = open_bus(url, **bus_options, **transport_options)
    return CcTalkHopper(bus, address=None if address is None else int(address),
                        coin_value=None if coin_value is None else int(coin_value),
                        security=security)


_OPENERS: dict[str, Callable[..., CcTalkDevice]] = {
    "coin": open_coin_acceptor, "hopper": open_hopper, "bill": open_bill_validator,
}


def open_device(url: str, *, device: str | None = None, **options: Any) -> CcTalkDevice:
    """Open a ccTalk cash device: ``device`` is ``coin``, ``hopper`` or ``bill`` (guessed
    from ``sim://cctalk-<device>`` URLs)."""
    if device is None and url.startswith("sim://cctalk-"):
        device = url[len("sim://cctalk-"):].split("?")[0].split("/")[0]
    if device not in _OPENERS:
        raise ConfigurationError(f"ccTalk device must be one of {', '.join(_OPENERS)}; "
                                 f"got {device!r}")
    return _OPENERS[device](url, **options)


__all__ = [
    "BUFFER_EVENTS", "POLL_INTERVAL", "RECEIVE_GAP", "REPLY_TIMEOUT", "BufferRead",
    "CcTalkBillValidator", "CcTalkBus", "CcTalkCoinAcceptor", "CcTalkDevice", "CcTalkHopper",
    "CounterState", "Deliver", "HopperStatus", "Identity", "Payout", "Request",
    "counter_advance", "counter_distance", "hopper_flags", "open_bill_validator", "open_bus",
    "open_coin_acceptor", "open_device", "open_hopper", "parse_value_id", "read_buffer",
    "run_async",
]
