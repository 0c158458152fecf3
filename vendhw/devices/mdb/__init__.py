"""MDB coin changer and bill validator hosts (the VMC side), reporting CashEvents.

Layers (sans-I/O core, thin runner; :mod:`vendhw.devices.engine`), as the cashless reader
(:mod:`vendhw.devices.mdb_cashless`) and ccTalk do it:

* **Core.** :func:`parse_changer_poll` and :func:`parse_bill_poll` turn a POLL reply into
  :class:`~vendhw.devices.cash.CashEvent` values, :func:`parse_changer_setup` and
  :func:`parse_bill_setup` read the SETUP replies. :class:`ChangerCore` and :class:`BillCore`
  hold what the VMC knows of the device (setup, tubes, a payout, the poll counter that names
  events) and its operations (``reset_op``, ``start_op``, ``poll_op``, ``payout_op``...) are
  generators: they yield a :class:`Request` per MDB command, a ``Deliver`` per event for the
  sink and a ``Wait`` for a pause, and never touch a port or read a clock.
* **Runner.** :class:`MdbCoinChanger` and :class:`MdbBillValidator` run those operations
  over :class:`MdbLink`, which sends a block in the 9-bit wire form, reads the reply within
  the response time, asks for a retransmission (RET) on a bad checksum, and ACKs peripheral
  data when the runner tells it to: at once, as soon as a reply is read.

Credit safety: a peripheral that gets no ACK within ``ACK_TIMEOUT`` (5 ms) of its reply sends
the same activity again at the next POLL, and MDB has no event counters to tell a repeat from
a new coin. A journal commit (an fsync, tens of ms on an SD card) cannot fit in 5 ms, so the
host ACKs a checksum-good POLL reply at once and hands the events to the sink right after.
Events the sink did not take (it raised) are kept and handed over again, with the same
``event_id`` values, before the next POLL. The crash window (ACKed, not yet journaled) is
described in ``protocols/mdb/README.md``.

Layouts and codes: ``protocols/mdb/README.md`` (temoto/vender ``hardware/mdb/coin``,
``hardware/mdb/bill``; Bouni's MDB write-up).
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
import threading
import time
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any, Generic, TypeVar

from vendhw.devices.cash import CashDevice, CashEvent, CashEventKind, EventSink
from vendhw.devices.engine import Deliver, Op, Wait, drive
from vendhw.errors import (
    ConfigurationError,
    FramingError,
    NakError,
    NoResponseError,
    NotSupportedError,
    UnexpectedReplyError,
)
from vendhw.framing.base import Frame, Garbage, Layout
from vendhw.framing.mdb import (
    ACK,
    BILL_SETUP,
    CHANGER_SETUP,
    IDENTIFICATION,
    MAX_BLOCK,
    NAK,
    RESPONSE_TIMEOUT,
    RET,
    SETUP_TIME,
    Address,
    BillCommand,
    BillEscrow,
    BillExpansion,
    ChangerCommand,
    ChangerExpansion,
    MdbFramer,
)
from vendhw.options import option_flag
from vendhw.transport import Transport, open_transport

log = logging.getLogger(__name__)

T = TypeVar("T")


POLL_INTERVAL = 0.2
"""Seconds between POLLs (vender ``DefaultDelayNext``; 100-200 ms is usual)."""
JUST_RESET_WAIT = 2.0
"""How long to POLL after RESET for the 'was reset' status (changer non-response time, DK)."""
RETRANSMISSIONS = 1
"""RET requests on a bad peripheral checksum before the VMC gives up with NAK."""
MAX_DISPENSE = 15
"""Coins of one type per DISPENSE command (the count is a nibble)."""
PAYOUT_BUSY, CHANGER_BUSY = b"\x02", b"\x0a"
FEATURE_ALTERNATIVE_PAYOUT = 0x00000001
"""Optional feature bit 0 of the changer's IDENTIFICATION: EXPANSION PAYOUT / PAYOUT STATUS /
PAYOUT VALUE POLL (vender ``FeatureAlternativePayout``)."""
FEATURE_EXTENDED_DIAGNOSTIC = 0x00000002
"""Optional feature bit 1: extended diagnostic (not enabled by vendhw: its POLL format is not
parsed; SEND DIAGNOSTIC STATUS works without it)."""
FEATURE_CONTROLLED_MANUAL_FILL = 0x00000004
"""Optional feature bit 2: controlled manual fill and payout (not enabled by vendhw)."""
FEATURE_FTL = 0x00000008
"""Optional feature bit 3: file transport layer (not enabled by vendhw)."""
CHANGER_DIAGNOSTICS: dict[tuple[int, int], str] = {
    (0x01, 0x00): "powering up",
    (0x02, 0x00): "powering down",
    (0x03, 0x00): "OK",
    (0x04, 0x00): "keypad shifted",
    (0x05, 0x10): "manual fill / payout active",
    (0x05, 0x20): "new inventory information available",
    (0x06, 0x00): "inhibited by VMC",
    (0x10, 0x00): "general changer error",
    (0x10, 0x01): "check sum error #1",
    (0x10, 0x02): "check sum error #2",
    (0x10, 0x03): "low line voltage detected",
    (0x11, 0x00): "discriminator module error",
    (0x11, 0x10): "flight deck open",
    (0x11, 0x11): "escrow return stuck open",
    (0x11, 0x30): "coin jam in sensor",
    (0x11, 0x41): "discrimination below specified standard",
    (0x11, 0x50): "validation sensor A out of range",
    (0x11, 0x51): "validation sensor B out of range",
    (0x11, 0x52): "validation sensor C out of range",
    (0x11, 0x53): "operating temperature exceeded",
    (0x11, 0x54): "sizing optics failure",
    (0x12, 0x00): "accept gate module error",
    (0x12, 0x30): "coins entered gate, but did not exit",
    (0x12, 0x31): "accept gate alarm active",
    (0x12, 0x40): "accept gate open, but no coin detected",
    (0x12, 0x50): "post gate sensor covered before gate opened",
    (0x13, 0x00): "separator module error",
    (0x13, 0x10): "sort sensor error",
    (0x14, 0x00): "dispenser module error",
    (0x15, 0x00): "coin cassette / tube module error",
    (0x15, 0x02): "cassette removed",
    (0x15, 0x03): "cash box sensor error",
    (0x15, 0x04): "sunlight on tube sensors",
}
"""SEND DIAGNOSTIC STATUS codes (MDB 4.2, coin changer, EXPANSION 0F 05): (main, sub) -> name.
An unknown sub code falls back to its main code's name (``(main, 0)``)."""
PAYOUT_CHUNK = 200
"""Scaled units per EXPANSION PAYOUT (one byte; Zzzzipper's master pays in steps of 200)."""
TOKEN_CREDIT = 0xFF
"""A coin type credit byte of 0xFF in the changer SETUP reply marks a vend token
(Zzzzipper/projects ``firmware-usbhost/common/mdb/MdbProtocolCoinChanger.h``
``MDB_CC_TOKEN_VALUE``, used by ``master/coin_changer/MdbCoin.cpp``)."""

CHANGER_STATUS = {
    0x01: (CashEventKind.RETURNED, "escrow request (return lever)"),
    0x02: (None, "payout busy"),
    0x03: (None, "no credit"),
    0x04: (CashEventKind.FAULT, "defective tube sensor"),
    0x05: (None, "double arrival"),
    0x06: (CashEventKind.FAULT, "acceptor unplugged"),
    0x07: (CashEventKind.JAM, "tube jam"),
    0x08: (CashEventKind.FAULT, "ROM checksum error"),
    0x09: (CashEventKind.FAULT, "coin routing error"),
    0x0A: (None, "changer busy"),
    0x0B: (CashEventKind.DEVICE_RESET, "changer was reset"),
    0x0C: (CashEventKind.JAM, "coin jam"),
    0x0D: (CashEventKind.FRAUD, "possible credited coin removal"),
}
BILL_STATUS = {
    0x01: (CashEventKind.FAULT, "defective motor"),
    0x02: (CashEventKind.FAULT, "sensor problem"),
    0x03: (None, "validator busy"),
    0x04: (CashEventKind.FAULT, "ROM checksum error"),
    0x05: (CashEventKind.JAM, "validator jammed"),
    0x06: (CashEventKind.DEVICE_RESET, "validator was reset"),
    0x07: (CashEventKind.FRAUD, "bill removed"),
    0x08: (CashEventKind.CASHBOX_REMOVED, "cash box out of position"),
    0x09: (CashEventKind.DISABLED, "validator disabled"),
    0x0A: (CashEventKind.FAULT, "invalid escrow request"),
    0x0B: (CashEventKind.REJECTED, "bill rejected"),
    0x0C: (CashEventKind.FRAUD, "possible credited bill removal"),
}
COIN_ROUTES = {0: "cashbox", 1: "tubes", 2: "not used", 3: "reject"}
BILL_ROUTES = ("stacked", "escrow", "returned", "recycler", "disabled bill rejected",
               "recycler (manual fill)", "manual dispense", "recycler to cashbox")


@dataclass(frozen=True)
class ChangerSetup:
    """The 23-byte changer SETUP reply (coin values already scaled, minor units; ``scaling``
    and ``decimals`` as the device sent them)."""

    level: int
    country: int
    scaling: int
    decimals: int
    routing: int
    coin_values: tuple[int, ...]
    """Value of each coin type; 0 for an unused type and for a vend token."""
    tokens: frozenset[int] = frozenset()
    """Coin types whose credit byte is ``TOKEN_CREDIT``: vend tokens, never money."""


@dataclass(frozen=True)
class BillSetup:
    """The 27-byte bill validator SETUP reply (bill values scaled, minor units)."""

    level: int
    country: int
    scaling: int
    decimals: int
    stacker_capacity: int
    security: int
    escrow: bool
    bill_values: tuple[int, ...]


ZERO_DECIMAL_CURRENCIES = frozenset({"JPY", "KRW", "HUF"})
"""Currencies vendhw counts in whole units (as ``vendhw cash`` prints them); others in 1/100."""


def minor_unit_factor(country: int, decimals: int) -> int:
    """Multiplier from the device's units (``decimals`` places) to vendhw's minor units.

    MDB values are credit x scaling with the device's own decimal places; vender and
    Zzzzipper's masters both convert them to the currency's minor units (a bill validator with
    scaling 10 and 0 decimals reports 1000 for credit 1 in a two-decimal currency)."""
    digits = 0 if currency_of(country) in ZERO_DECIMAL_CURRENCIES else 2
    if decimals > digits:
        raise UnexpectedReplyError(
            f"MDB device reports {decimals} decimal places, more than the {digits} of its "
            "currency: values would need fractions of a minor unit")
    return int(10 ** (digits - decimals))


def _parse(layout: Layout, data: bytes) -> Any:
    """A reply by its declared layout, or one line saying how short it is."""
    if len(data) < layout.fixed_size:
        raise UnexpectedReplyError(f"{layout.name} has {len(data)} bytes, "
                                   f"need >= {layout.fixed_size}")
    return layout.parse(data, "mdb")


def parse_changer_setup(data: bytes) -> ChangerSetup:
    """A credit byte of ``TOKEN_CREDIT`` marks a vend token: value 0, listed in ``tokens``.
    Coin values are in the currency's minor units (see :func:`minor_unit_factor`)."""
    reply = _parse(CHANGER_SETUP, data)
    scaling = reply["scaling"] * minor_unit_factor(reply["country"], reply["decimals"])
    credits = reply["credits"][:16]
    tokens = frozenset(i for i, c in enumerate(credits) if c == TOKEN_CREDIT)
    values = tuple(0 if i in tokens else c * scaling for i, c in enumerate(credits)) \
        + (0,) * (16 - len(credits))
    return ChangerSetup(reply["level"], reply["country"], reply["scaling"], reply["decimals"],
                        reply["routing"], values, tokens)


def parse_bill_setup(data: bytes) -> BillSetup:
    reply = _parse(BILL_SETUP, data)
    factor = minor_unit_factor(reply["country"], reply["decimals"])
    credits = reply["credits"][:16]
    values = tuple(c * reply["scaling"] * factor for c in credits) + (0,) * (16 - len(credits))
    return BillSetup(reply["level"], reply["country"], reply["scaling"], reply["decimals"],
                     reply["stacker_capacity"], reply["security"], reply["escrow"] == 0xFF,
                     values)


@dataclass(frozen=True)
class Identification:
    """EXPANSION IDENTIFICATION: ASCII manufacturer code, serial and model, BCD software
    version, and (changer; bill validator level 2) the optional-feature bits."""

    manufacturer: str
    serial: str
    model: str
    software_version: str
    features: int | None = None


def parse_diagnostic_status(data: bytes) -> list[dict[str, Any]]:
    """A changer's SEND DIAGNOSTIC STATUS reply: one ``{"code", "status", "known"}`` per
    two-byte code (``code`` as hex, ``"1130"``); an odd last byte is ignored."""
    out: list[dict[str, Any]] = []
    for i in range(0, len(data) - 1, 2):
        main, sub = data[i], data[i + 1]
        name = CHANGER_DIAGNOSTICS.get((main, sub))
        known = name is not None
        if name is None:
            general = CHANGER_DIAGNOSTICS.get((main, 0))
            name = f"{general} (sub code 0x{sub:02X})" if general else (
                f"unknown status 0x{main:02X}{sub:02X}")
        out.append({"code": f"{main:02X}{sub:02X}", "status": name, "known": known})
    return out


def parse_identification(data: bytes) -> Identification:
    reply = _parse(IDENTIFICATION, data)
    rest = reply["rest"]
    return Identification(_text(reply["manufacturer"]), _text(reply["serial"]),
                          _text(reply["model"]), reply["software_version"].hex(),
                          int.from_bytes(rest[:4], "big") if len(rest) >= 4 else None)


def _text(raw: bytes) -> str:
    return raw.decode("ascii", "replace").strip()


def currency_of(country: int) -> str:
    """MDB country codes: 0x1nnn is an ISO 4217 numeric code in BCD (0x1978 = EUR)."""
    known = {978: "EUR", 840: "USD", 826: "GBP", 156: "CNY", 392: "JPY", 643: "RUB",
             756: "CHF", 36: "AUD", 124: "CAD"}
    if country >> 12 == 1:
        digits = f"{country & 0x0FFF:03X}"
        if digits.isdigit():
            return known.get(int(digits), digits)
    return ""


def parse_changer_poll(data: bytes, setup: ChangerSetup, device: str,
                       id_prefix: str) -> list[CashEvent]:
    """Changer POLL reply -> events (two-byte coin reports, one-byte statuses)."""
    events: list[CashEvent] = []
    currency = currency_of(setup.country)
    i = 0
    while i < len(data):
        b = data[i]
        eid = f"{id_prefix}.{i}"
        if b & 0x80:  # 1yyyxxxx zzzzzzzz: coins dispensed manually
            count, coin = (b >> 4) & 0x07, b & 0x0F
            left = data[i + 1] if i + 1 < len(data) else 0
            events.append(CashEvent(CashEventKind.PAYOUT_PROGRESS, device,
                                    count * setup.coin_values[coin], currency, coin,
                                    "customer", "manual dispense", eid,
                                    detail={"count": count, "in_tube": left}))
            i += 2
        elif b & 0x40:  # 01yyxxxx zzzzzzzz: coin deposited
            route, coin = (b >> 4) & 0x03, b & 0x0F
            left = data[i + 1] if i + 1 < len(data) else 0
            if route == 3:
                kind, reason = CashEventKind.REJECTED, "coin routed to reject"
            elif coin in setup.tokens:
                kind, reason = CashEventKind.TOKEN, "vend token"
            else:
                kind, reason = CashEventKind.CREDIT, None
            events.append(CashEvent(kind, device, setup.coin_values[coin], currency, coin,
                                    COIN_ROUTES[route], reason, eid,
                                    detail={"in_tube": left}))
            i += 2
        elif b & 0x20:  # 001xxxxx: slugs
            events.append(CashEvent(CashEventKind.REJECTED, device, reason="slug",
                                    event_id=eid, detail={"count": b & 0x1F}))
            i += 1
        else:
            status, text = CHANGER_STATUS.get(b, (CashEventKind.FAULT, f"status 0x{b:02X}"))
            if status is not None:
                events.append(CashEvent(status, device, reason=text, event_id=eid,
                                        detail={"code": b}))
            i += 1
    return events


def parse_bill_poll(data: bytes, setup: BillSetup, device: str,
                    id_prefix: str) -> list[CashEvent]:
    """Bill validator POLL reply -> events (one byte each)."""
    events: list[CashEvent] = []
    currency = currency_of(setup.country)
    for i, b in enumerate(data):
        eid = f"{id_prefix}.{i}"
        if b & 0x80:  # 1yyyxxxx: bill routing
            route, bill = (b >> 4) & 0x07, b & 0x0F
            value = setup.bill_values[bill]
            kind = {0: CashEventKind.CREDIT, 1: CashEventKind.ESCROW, 2: CashEventKind.RETURNED,
                    3: CashEventKind.CREDIT, 4: CashEventKind.REJECTED}.get(route)
            if kind is None:
                continue  # recycler housekeeping (manual fill/dispense/transfer)
            events.append(CashEvent(kind, device, value, currency, bill, BILL_ROUTES[route],
                                    "bill inserted while disabled" if route == 4 else None,
                                    eid))
        elif b & 0xE0 == 0x40:  # 010xxxxx: attempts while disabled
            events.append(CashEvent(CashEventKind.REJECTED, device,
                                    reason="insert attempts while disabled", event_id=eid,
                                    detail={"count": b & 0x1F}))
        else:
            status, text = BILL_STATUS.get(b, (CashEventKind.FAULT, f"status 0x{b:02X}"))
            if status is not None:
                events.append(CashEvent(status, device, reason=text, event_id=eid,
                                        detail={"code": b}))
    return events


class MdbLink:
    """One VMC on a 9-bit link (in-band mode bits: ``mdb9://`` or ``sim://mdb-…``).

    :param response_timeout: the peripheral's reply window (5 ms by the spec; allow more
        behind USB adapters and ptys).
    """

    def __init__(self, transport: Transport, *,
                 response_timeout: float = RESPONSE_TIMEOUT) -> None:
        self.transport = transport
        self.response_timeout = response_timeout
        self.lock = threading.RLock()
        """Held from a command to the ACK of its reply: a command from another thread (a
        payout while the poller polls) must not come between, or the ACK is late and the
        peripheral repeats its data."""
        self.framer = MdbFramer(wire="9bit")
        self._ack = self.framer.build(direction="host", control="ACK")
        self._ret = self.framer.build(direction="host", control="RET")
        self.bus_key: str | None = None
        """Set when the link is the shared bus of a port (:func:`shared_link`)."""
        self.users = 0
        """Devices holding this shared link; the port closes when the last one releases it."""

    def release(self) -> None:
        """A device is done with the link: close the port, or, on a shared bus, when the
        last device on it is done."""
        if self.bus_key is None:
            self.transport.close()
            return
        with _BUSES_LOCK:
            self.users -= 1
            if self.users > 0:
                return
            if _BUSES.get(self.bus_key) is self:
                del _BUSES[self.bus_key]
        self.transport.close()

    def _read_reply(self) -> Frame | Garbage:
        deframer = self.framer.deframer("device")
        deadline = time.monotonic() + self.response_timeout
        buf = b""
        while True:
            remaining = deadline - time.monotonic()
            chunk = self.transport.read(max(remaining, 0.0))  # back as soon as a block is whole
            if not chunk:
                if buf:
                    leftovers = deframer.flush()
                    return leftovers[0] if leftovers else Garbage("mdb", buf, "incomplete")
                raise NoResponseError("no MDB reply", port=self.transport.url,
                                      baudrate=self.transport.baudrate,
                                      timeout=self.response_timeout)
            buf += chunk
            items = deframer.feed(chunk)
            if items:
                frames = [x for x in items if isinstance(x, Frame)]
                return frames[0] if frames else items[0]
            if len(buf) > 3 * MAX_BLOCK:
                return Garbage("mdb", buf, "reply too long")

    def transact(self, address: int, command: int, data: bytes = b"") -> bytes | None:
        """Send one command; ``None`` for ACK, the reply data otherwise (not yet ACKed).

        Call :meth:`ack` after handling returned data (holding :attr:`lock` across both);
        without it the peripheral repeats it.
        """
        with self.lock:
            return self._transact(address, command, data)

    def _transact(self, address: int, command: int, data: bytes) -> bytes | None:
        block = self.framer.build(direction="host", address=address, command=command,
                                  data=data)
        self.transport.discard_input()
        self.transport.write(block)
        for attempt in range(RETRANSMISSIONS + 1):
            reply = self._read_reply()
            if isinstance(reply, Frame):
                if reply["command"] == "ACK":
                    return None
                if reply["command"] == "NAK":
                    raise NakError(f"MDB 0x{address | command:02X}: peripheral answered NAK")
                return bytes(reply["data"])
            log.info("%s: bad MDB reply (%s), attempt %d", self.transport.url, reply.reason,
                     attempt + 1)
            if attempt < RETRANSMISSIONS:
                self.transport.write(self._ret)
        self.transport.write(self.framer.build(direction="host", control="NAK"))
        raise FramingError("peripheral reply still corrupt after RET", protocol="mdb")

    def ack(self) -> None:
        """Acknowledge the data of the last reply."""
        self.transport.write(self._ack)

    def command(self, address: int, command: int, data: bytes = b"") -> bytes | None:
        """Send a command whose reply data needs no journaling, and ACK it at once."""
        with self.lock:
            reply = self.transact(address, command, data)
            if reply is not None:
                self.ack()
        return reply


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
        self._held = b""
        """POLL data unacknowledged before a restart, read before RESET (which drops it)."""

    def checkpoint(self) -> dict[str, Any]:
        """The poll counter that names events; the cash journal stores it with them."""
        return {"session": self._poll_state.session, "delivered": self._poll_state.delivered}

    def restore(self, data: dict[str, Any]) -> None:
        """Continue from a :meth:`checkpoint`, before :meth:`reset_op`: data the peripheral
        still repeats is read before RESET and delivered at the first poll with its old ids."""
        self._poll_state = _PollState(str(data["session"]), int(data["delivered"]))
        self._resumed = True

    def activities(self, data: bytes) -> list[bytes]:
        """POLL data split into its activities (one byte each unless a subclass says)."""
        return [data[i:i + 1] for i in range(len(data))]

    def parse_poll(self, data: bytes, prefix: str) -> list[CashEvent]:
        raise NotSupportedError(self.name)

    def reset_op(self) -> Op[None]:
        """RESET, then POLL until 'was reset' comes (found activity by activity); what came
        with it is kept for the first poll. After a restore, the data the peripheral still
        holds is read first, unacknowledged (RESET comes next)."""
        if self._resumed:
            self._resumed = False
            self._held = (yield Request(self.commands.POLL, ack=False)) or b""
        yield Request(self.commands.RESET)
        reset = bytes((self.was_reset,))
        for attempt in range(JUST_RESET_POLLS):
            if attempt:
                yield Wait(JUST_RESET_PAUSE)
            data = yield Request(self.commands.POLL)
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
        if self._held:  # the repeat read before RESET, named as it was before the restart
            held, self._held = self._held, b""
            resumed = self.parse_poll(held, state.prefix(held))
            state.delivered += 1
            state.last = b""
            self._undelivered = resumed
            yield from self._deliver_op(resumed)
            self._undelivered = []
            return undelivered + resumed
        instead = yield from self._poll_instead_op()
        if instead is not None:
            self._undelivered = instead
            yield from self._deliver_op(instead)
            self._undelivered = []
            return undelivered + instead
        reply = yield Request(self.commands.POLL)  # ACKed by the runner as soon as it is read
        data = self._after_reset + (reply or b"")  # held ones first, in the order they came
        self._after_reset = b""
        events: list[CashEvent] = []
        if data and state.repeat(data):
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
        elif data:
            events = self.parse_poll(data, state.prefix(data))
            state.delivered += 1
            state.repeats = 0
        state.last = data  # b"" after an empty poll: a repeat can only come at the next POLL
        self._undelivered = events  # ACKed: from here on only this host has them
        events = events + (yield from self._after_poll_op(data, events))  # may fail: kept
        if not events:
            return undelivered
        self._undelivered = events
        yield from self._deliver_op(events)
        self._undelivered = []
        return undelivered + events

    def _after_poll_op(self, data: bytes, events: list[CashEvent]) -> Op[list[CashEvent]]:
        """Events the host derives after a POLL (a changer's finished payout)."""
        return []
        yield  # pragma: no cover  (a generator)

    def _poll_instead_op(self) -> Op[list[CashEvent] | None]:
        """Another exchange that takes this poll's place (a level-3 payout), or None."""
        return None
        yield  # pragma: no cover  (a generator)


class ChangerCore(_CashCore):
    """A coin changer at address 0x08, sans-I/O: setup, tubes, payouts and their operations."""

    address = Address.CHANGER
    commands = ChangerCommand
    was_reset = 0x0B

    def __init__(self, name: str = "mdb-changer", *, accept_tokens: bool = False) -> None:
        super().__init__(name)
        self.setup: ChangerSetup | None = None
        self.tubes: list[int] = [0] * 16
        self.accept_tokens = accept_tokens
        """Enable the token coin types too (they are reported as TOKEN events, value 0)."""
        self._payout: _Payout | None = None
        self._payouts = 0
        self.identity: Identification | None = None
        self.alternative_payout = False
        """Level 3 with the optional feature: pay by EXPANSION PAYOUT, count by PAYOUT STATUS."""

    def activities(self, data: bytes) -> list[bytes]:
        """Coin reports (1yyyxxxx or 01yyxxxx) are two bytes, the second a tube count that
        may equal a status code, so the reply is walked, not searched."""
        out, i = [], 0
        while i < len(data):
            size = 2 if data[i] & 0xC0 else 1
            out.append(data[i:i + size])
            i += size
        return out

    def require_setup(self) -> ChangerSetup:
        if self.setup is None:
            raise ConfigurationError(f"{self.name}: call start() first")
        return self.setup

    def parse_poll(self, data: bytes, prefix: str) -> list[CashEvent]:
        return parse_changer_poll(data, self.require_setup(), self.name, prefix)

    def start_op(self) -> Op[None]:
        yield from self.reset_op()
        reply = yield Request(ChangerCommand.SETUP)
        if reply is None:
            raise UnexpectedReplyError("changer SETUP answered ACK instead of data")
        self.setup = parse_changer_setup(reply)
        self.currency = currency_of(self.setup.country)
        if self.setup.level >= 3:  # EXPANSION commands are level 3
            self.identity = yield from self.identify_op()
            self.alternative_payout = bool(
                self.identity and (self.identity.features or 0) & FEATURE_ALTERNATIVE_PAYOUT)
            if self.alternative_payout:
                yield from self.expansion_op(ChangerExpansion.FEATURE_ENABLE,
                                             FEATURE_ALTERNATIVE_PAYOUT.to_bytes(4, "big"))
        yield from self._read_tubes_op()
        yield from self.disable_op()

    def expansion_op(self, sub: ChangerExpansion, data: bytes = b"") -> Op[bytes | None]:
        """One EXPANSION (``0F``) subcommand; its reply data, None for a lone ACK."""
        reply: bytes | None = yield Request(ChangerCommand.EXPANSION, bytes((sub,)) + data)
        return reply

    def identify_op(self) -> Op[Identification | None]:
        """EXPANSION IDENTIFICATION (``0F 00``); None when the changer only ACKs."""
        reply = yield from self.expansion_op(ChangerExpansion.IDENTIFICATION)
        return parse_identification(reply) if reply is not None else None

    def diagnostic_status_op(self) -> Op[list[dict[str, Any]] | None]:
        """EXPANSION SEND DIAGNOSTIC STATUS (``0F 05``, level 3); None below level 3 or when
        the changer only ACKs."""
        if self.require_setup().level < 3:
            return None
        reply = yield from self.expansion_op(ChangerExpansion.SEND_DIAGNOSTIC_STATUS)
        return parse_diagnostic_status(reply) if reply is not None else None

    def _read_tubes_op(self) -> Op[list[int]]:
        """The tube counts now, in the middle of another operation (:class:`TubeCounts`)."""
        counts = yield TubeCounts()
        self.tubes = list(counts)
        return self.tubes

    def tube_status_op(self) -> Op[list[int]]:
        reply = yield Request(ChangerCommand.TUBE_STATUS)
        if reply is not None and len(reply) >= 2:
            counts = list(reply[2:18])
            self.tubes = counts + [0] * (16 - len(counts))
        return self.tubes

    def enable_op(self) -> Op[None]:
        setup = self.require_setup()
        mask = sum(1 << i for i, v in enumerate(setup.coin_values)
                   if v or (self.accept_tokens and i in setup.tokens))
        yield Request(ChangerCommand.COIN_TYPE, mask.to_bytes(2, "big") + self._manual_dispense())

    def disable_op(self) -> Op[None]:
        """Accept no coins; the tube buttons (manual dispense) stay on for the operator."""
        yield Request(ChangerCommand.COIN_TYPE, b"\x00\x00" + self._manual_dispense())

    def _manual_dispense(self) -> bytes:
        """Manual dispense is enabled for the coin types that can go to a tube (the SETUP
        routing bits), as Zzzzipper/projects' master does."""
        return self.require_setup().routing.to_bytes(2, "big")

    def payout_op(self, amount: int) -> Op[None]:
        """Start paying ``amount`` from the tubes (see :meth:`MdbCoinChanger.payout`)."""
        if self._payout is not None:
            raise ConfigurationError(f"{self.name}: a payout of {self._payout.requested} "
                                     "is still running")
        setup = self.require_setup()
        before = list((yield from self._read_tubes_op()))
        batches: list[tuple[int, int]] = []
        left = amount
        for coin in sorted(range(16), key=lambda c: -setup.coin_values[c]):
            value = setup.coin_values[coin]
            if value <= 0 or left < value:
                continue  # tokens and unused types have value 0: never change
            count = min(left // value, before[coin])
            left -= count * value
            while count:
                batch = min(count, MAX_DISPENSE)
                batches.append((coin, batch))
                count -= batch
        if left:
            raise ConfigurationError(
                f"{self.name}: tubes cannot pay {amount} exactly ({left} short)")
        self._payouts += 1
        event_id = f"{self._poll_state.session}:payout:{self._payouts}"
        if self.alternative_payout:
            unit = setup.scaling * minor_unit_factor(setup.country, setup.decimals)
            units = amount // unit  # exact: every coin value is a multiple of the unit
            chunks = [min(PAYOUT_CHUNK, units - i) for i in range(0, units, PAYOUT_CHUNK)]
            self._payout = _Payout(amount, [], before, event_id, chunks=chunks,
                                   expansion=True)
            yield from self._expansion_payout_next()
            return
        self._payout = _Payout(amount, batches, before, event_id)
        yield from self._dispense_next()

    def _expansion_payout_next(self) -> Op[None]:
        payout = self._payout
        assert payout is not None
        units = payout.chunks.pop(0)
        yield from self.expansion_op(ChangerExpansion.PAYOUT, bytes((units,)))

    def _poll_instead_op(self) -> Op[list[CashEvent] | None]:
        """During a level-3 payout: PAYOUT VALUE POLL until the changer only ACKs (done),
        then PAYOUT STATUS for the coins of each type paid (ACK only: still busy)."""
        payout = self._payout
        if payout is None or not payout.expansion:
            return None
        if (yield from self.expansion_op(ChangerExpansion.PAYOUT_VALUE_POLL)) is not None:
            return []  # data: the value paid so far; the payout goes on
        status = yield from self.expansion_op(ChangerExpansion.PAYOUT_STATUS)
        if status is None:
            return []  # payout busy
        for coin, count in enumerate(status[:16]):
            if count:
                payout.paid[coin] = payout.paid.get(coin, 0) + count
        if payout.chunks:
            yield from self._expansion_payout_next()
            return []
        setup = self.require_setup()
        yield from self._read_tubes_op()
        paid = sum(n * setup.coin_values[c] for c, n in payout.paid.items())
        self._payout = None
        done = paid == payout.requested
        return [CashEvent(
            CashEventKind.PAYOUT_DONE if done else CashEventKind.PAYOUT_INCOMPLETE, self.name,
            paid, self.currency, route="customer",
            reason=None if done else "PAYOUT STATUS reports less than was asked",
            event_id=payout.event_id, requested=payout.requested,
            detail={"coins": {str(c): n for c, n in payout.paid.items() if n},
                    "measured_by": "payout status"})]

    def _dispense_next(self) -> Op[None]:
        payout = self._payout
        assert payout is not None
        coin, count = payout.batches.pop(0)
        payout.sent[coin] = payout.sent.get(coin, 0) + count
        yield Request(ChangerCommand.DISPENSE, bytes(((count << 4) | coin,)))

    def _after_poll_op(self, data: bytes, events: list[CashEvent]) -> Op[list[CashEvent]]:
        """A payout ends when POLL stops saying "payout busy" after the last DISPENSE (or the
        changer resets): TUBE STATUS then tells how many coins of each type really left."""
        payout = self._payout
        if payout is None or payout.expansion:
            return []
        activities = self.activities(data)
        reset = any(e.kind is CashEventKind.DEVICE_RESET for e in events)
        if not reset and (PAYOUT_BUSY in activities or CHANGER_BUSY in activities):
            return []
        if payout.batches and not reset:
            yield from self._dispense_next()
            return []
        setup = self.require_setup()
        after = yield from self._read_tubes_op()
        paid_coins = {coin: min(sent, max(0, payout.tubes_before[coin] - after[coin]))
                      for coin, sent in payout.sent.items()}
        paid = sum(n * setup.coin_values[c] for c, n in paid_coins.items())
        self._payout = None
        done = paid == payout.requested and not payout.batches
        return [CashEvent(
            CashEventKind.PAYOUT_DONE if done else CashEventKind.PAYOUT_INCOMPLETE, self.name,
            paid, self.currency, route="customer",
            reason=None if done else ("changer reset during payout" if reset else
                                      "tube counts confirm less than was asked"),
            event_id=payout.event_id, requested=payout.requested,
            detail={"coins": {str(c): n for c, n in paid_coins.items() if n},
                    "measured_by": "tube status"})]


class BillCore(_CashCore):
    """A bill validator at address 0x30 with escrow, sans-I/O."""

    address = Address.BILL_VALIDATOR
    commands = BillCommand
    was_reset = 0x06

    def __init__(self, name: str = "mdb-bill") -> None:
        super().__init__(name)
        self.setup: BillSetup | None = None
        self.identity: Identification | None = None

    def require_setup(self) -> BillSetup:
        if self.setup is None:
            raise ConfigurationError(f"{self.name}: call start() first")
        return self.setup

    def parse_poll(self, data: bytes, prefix: str) -> list[CashEvent]:
        return parse_bill_poll(data, self.require_setup(), self.name, prefix)

    def start_op(self) -> Op[None]:
        yield from self.reset_op()
        reply = yield Request(BillCommand.SETUP)
        if reply is None:
            raise UnexpectedReplyError("bill validator SETUP answered ACK instead of data")
        self.setup = parse_bill_setup(reply)
        self.currency = currency_of(self.setup.country)
        self.identity = yield from self.identify_op()
        yield Request(BillCommand.SECURITY, b"\x00\x00")
        yield from self.disable_op()

    def identify_op(self) -> Op[Identification | None]:
        """EXPANSION LEVEL 1 IDENTIFICATION (``37 00``); None when the validator only ACKs."""
        reply = yield Request(BillCommand.EXPANSION,
                              bytes((BillExpansion.LEVEL_1_IDENTIFICATION,)))
        return parse_identification(reply) if reply is not None else None

    def enable_op(self) -> Op[None]:
        setup = self.require_setup()
        mask = sum(1 << i for i, v in enumerate(setup.bill_values) if v).to_bytes(2, "big")
        yield Request(BillCommand.BILL_TYPE, mask + (mask if setup.escrow else b"\x00\x00"))

    def disable_op(self) -> Op[None]:
        yield Request(BillCommand.BILL_TYPE, b"\x00\x00\x00\x00")

    def stack_op(self) -> Op[None]:
        yield Request(BillCommand.ESCROW, bytes((BillEscrow.STACK_BILL,)))

    def reject_op(self) -> Op[None]:
        yield Request(BillCommand.ESCROW, bytes((BillEscrow.RETURN_BILL,)))

    def stacker_op(self) -> Op[tuple[int, bool]]:
        """Bills in the stacker and whether it is full."""
        reply = (yield Request(BillCommand.STACKER)) or b"\x00\x00"
        word = int.from_bytes(reply[:2], "big")
        return word & 0x7FFF, bool(word & 0x8000)


CoreT = TypeVar("CoreT", bound=_CashCore)
V = TypeVar("V")


class _CoreAttr(Generic[V]):
    """A device attribute kept in its core (one state under the names the hosts always had)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.attr = name

    def __get__(self, device: Any, owner: type | None = None) -> V:
        value: V = getattr(device.core, self.attr)
        return value

    def __set__(self, device: Any, value: V) -> None:
        setattr(device.core, self.attr, value)


class _MdbCashDevice(CashDevice, Generic[CoreT]):
    """The thread runner of a changer or bill core over an :class:`MdbLink`."""

    address: int
    name: _CoreAttr[str] = _CoreAttr()
    currency: _CoreAttr[str] = _CoreAttr()

    def __init__(self, link: MdbLink, core: CoreT) -> None:
        self.link = link
        self.core = core
        core.port = link.transport.url

    def run(self, op: Op[T], sink: EventSink | None = None) -> T:
        """Drive one operation. Reply data is ACKed as soon as it is read, inside the bus
        hold that spans a command and its ACK (another device's command in between would make
        the ACK late, and the peripheral would repeat its data); events go to ``sink`` only
        after that, outside the hold."""
        return drive(op, self._transact, sink=sink, hold=lambda: self.link.lock, throw=False)

    def _transact(self, request: Request | TubeCounts) -> Any:
        if isinstance(request, TubeCounts):
            return self._tube_counts()
        reply = self.link.transact(self.core.address, request.command, request.data)
        if reply is not None and request.ack:
            self.link.ack()  # now, not after the journal: a late ACK means a repeat
        return reply

    def _tube_counts(self) -> list[int]:
        raise NotSupportedError(f"{self.name} has no tubes")

    def _activities(self, data: bytes) -> list[bytes]:
        return self.core.activities(data)

    def checkpoint(self) -> dict[str, Any]:
        """The poll counter that names events; the cash journal stores it with them."""
        return self.core.checkpoint()

    def restore(self, data: dict[str, Any]) -> None:
        """Continue from a :meth:`checkpoint` after a restart, before :meth:`start`: data the
        peripheral still repeats (unacknowledged when the host died) is read before RESET and
        delivered at the first poll with the ids it had, so it counts once."""
        self.core.restore(data)

    def poll(self, sink: EventSink | None = None) -> list[CashEvent]:
        """POLL once; ACK data at once (within ``ACK_TIMEOUT``), then give events to ``sink``.

        If ``sink`` raises, the events stay here and go to the sink again, same ids, at the
        next call, before anything new is polled. Data equal to what the previous POLL
        delivered is taken as a repeat after a lost ACK: counted once, and an operator is told
        (two identical coins in two consecutive polls would read the same).
        """
        return self.run(self.core.poll_op(), sink)

    def close(self) -> None:
        self.link.release()


class MdbCoinChanger(_MdbCashDevice[ChangerCore]):
    """A coin changer at address 0x08: accepts coins into tubes/cashbox, pays out from tubes."""

    address = Address.CHANGER
    commands = ChangerCommand
    setup: _CoreAttr[ChangerSetup | None] = _CoreAttr()
    tubes: _CoreAttr[list[int]] = _CoreAttr()
    accept_tokens: _CoreAttr[bool] = _CoreAttr()
    """Enable the token coin types too (they are reported as TOKEN events, value 0)."""
    identity: _CoreAttr[Identification | None] = _CoreAttr()
    alternative_payout: _CoreAttr[bool] = _CoreAttr()
    """Level 3 with the optional feature: pay by EXPANSION PAYOUT, count by PAYOUT STATUS."""

    def __init__(self, link: MdbLink, name: str = "mdb-changer", *,
                 accept_tokens: bool = False) -> None:
        super().__init__(link, ChangerCore(name, accept_tokens=accept_tokens))

    def _tube_counts(self) -> list[int]:
        return self.tube_status()

    def start(self) -> None:
        self.run(self.core.start_op())

    def identify(self) -> Identification | None:
        """EXPANSION IDENTIFICATION (``0F 00``); None when the changer only ACKs."""
        return self.run(self.core.identify_op())

    def diagnostic_status(self) -> list[dict[str, Any]] | None:
        """EXPANSION SEND DIAGNOSTIC STATUS (``0F 05``, level 3): the changer's status codes
        named (:data:`CHANGER_DIAGNOSTICS`); None below level 3 or when it only ACKs."""
        return self.run(self.core.diagnostic_status_op())

    def tube_status(self) -> list[int]:
        return self.run(self.core.tube_status_op())

    def enable(self) -> None:
        self.run(self.core.enable_op())

    def disable(self) -> None:
        """Accept no coins; the tube buttons (manual dispense) stay on for the operator."""
        self.run(self.core.disable_op())

    def payout(self, amount: int) -> None:
        """Start paying ``amount`` from the tubes; :meth:`poll` drives it to the end and then
        reports ``payout_done`` (or ``payout_incomplete``) with the value really paid.

        Level 3 with alternative payout: EXPANSION PAYOUT in steps of ``PAYOUT_CHUNK`` units,
        counted by PAYOUT STATUS. Otherwise one DISPENSE (up to 15 coins of one type, largest
        first) at a time, the next when POLL no longer says "payout busy", counted by the
        TUBE STATUS difference. Raises ConfigurationError when the tubes cannot make the
        amount, before any coin moves.
        """
        self.run(self.core.payout_op(amount))

    def status(self) -> dict[str, Any]:
        setup = self.core.require_setup()
        out = {"device": self.name, "level": setup.level, "currency": self.currency,
               "coin_values": list(setup.coin_values), "tubes": self.tube_status()}
        if setup.tokens:
            out["token_coin_types"] = sorted(setup.tokens)
        if self.identity is not None:
            out["identity"] = asdict(self.identity)
        if setup.level >= 3:
            out["diagnostics"] = self.diagnostic_status()
        return out


class MdbBillValidator(_MdbCashDevice[BillCore]):
    """A bill validator at address 0x30 with escrow."""

    address = Address.BILL_VALIDATOR
    commands = BillCommand
    setup: _CoreAttr[BillSetup | None] = _CoreAttr()
    identity: _CoreAttr[Identification | None] = _CoreAttr()

    def __init__(self, link: MdbLink, name: str = "mdb-bill") -> None:
        super().__init__(link, BillCore(name))

    def start(self) -> None:
        self.run(self.core.start_op())

    def identify(self) -> Identification | None:
        """EXPANSION LEVEL 1 IDENTIFICATION (``37 00``); None when the validator only ACKs."""
        return self.run(self.core.identify_op())

    def enable(self) -> None:
        self.run(self.core.enable_op())

    def disable(self) -> None:
        self.run(self.core.disable_op())

    def stack(self) -> None:
        self.run(self.core.stack_op())

    def reject(self) -> None:
        self.run(self.core.reject_op())

    def stacker(self) -> tuple[int, bool]:
        """Bills in the stacker and whether it is full."""
        return self.run(self.core.stacker_op())

    def status(self) -> dict[str, Any]:
        setup = self.core.require_setup()
        count, full = self.stacker()
        out = {"device": self.name, "level": setup.level, "currency": self.currency,
               "bill_values": list(setup.bill_values), "escrow": setup.escrow,
               "stacker": count, "stacker_full": full}
        if self.identity is not None:
            out["identity"] = asdict(self.identity)
        return out


SIM_RESPONSE_TIMEOUT = 0.1
"""Reply window of an in-process simulator or a replay (no UART, no 5 ms)."""
PTY_RESPONSE_TIMEOUT = 0.5
"""Reply window on a pty: the simulator is another process on a possibly busy machine."""
PTY_MAJORS = range(136, 144)
"""Linux device majors of Unix98 pty slaves (``/dev/pts/N``; devices.txt)."""


def is_pty(path: str) -> bool:
    """Whether ``path`` is a pseudo-terminal slave, such as the port ``vendhw sim`` prints."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) in PTY_MAJORS


def _link_url(url: str) -> tuple[str, float]:
    """The transport URL for an MDB link and its default reply window.

    A pty carries bytes, not 9-bit words: its parity settings do nothing, so the in-band
    form (``FF 00 b`` for a mode-bit byte) goes through it as plain bytes, which is what
    vendhw's simulators speak. ``/dev/pts/N`` and ``mdb9:///dev/pts/N`` both open that way.
    """
    if url.startswith(("sim://", "replay://")):
        return url, SIM_RESPONSE_TIMEOUT
    if url.startswith("mdbascii://"):  # vendhw.transport.mdbascii: adapter round trip
        return url, PTY_RESPONSE_TIMEOUT
    path = url[len("mdb9://"):] if url.startswith("mdb9://") else url
    if is_pty(path):
        return path, PTY_RESPONSE_TIMEOUT
    if url.startswith("mdb9://"):
        return url, RESPONSE_TIMEOUT
    raise ConfigurationError(
        f"{url}: MDB needs a 9-bit link: mdb9:///dev/ttyUSB0 (sticky parity), a simulator's "
        "pty (vendhw sim mdb-changer) or sim://mdb-…")


_BUSES: dict[str, MdbLink] = {}
"""The open MDB buses of this process, by port (:func:`bus_key`)."""
_BUSES_LOCK = threading.Lock()
SHARED_SIMULATORS = ("mdb-bus",)
"""``sim://`` simulators that are one bus for every device opened on the same URL. Other
``sim://`` URLs stay one simulator per device (tests open ``sim://mdb-changer`` often)."""


def bus_key(url: str) -> str | None:
    """What identifies the physical bus of ``url`` (the real path of its port), or None for
    a URL that is never shared (a ``replay://`` capture, a one-device ``sim://``)."""
    if url.startswith("sim://"):
        name = url[len("sim://"):].split("?", 1)[0].split("/", 1)[0]
        return url if name in SHARED_SIMULATORS else None
    if url.startswith("replay://"):
        return None
    path = url[len("mdb9://"):] if url.startswith("mdb9://") else url
    return os.path.realpath(path)


def _open_link(url: str, response_timeout: float | None, options: dict[str, Any]) -> MdbLink:
    return shared_link(url, response_timeout=response_timeout, **options)


def shared_link(url: str, *, response_timeout: float | None = None,
                **options: Any) -> MdbLink:
    """The one :class:`MdbLink` of the bus on ``url``: a changer, a bill validator and a card
    reader on one serial port share it (and its lock, which spans a command and its ACK).

    The first device opens the port (with its transport options and reply window; a later
    device's longer ``response_timeout`` widens the window); each device's ``close()``
    releases it and the last one closes the port.
    """
    key = bus_key(url)
    timeout = float(response_timeout) if response_timeout is not None else None
    with _BUSES_LOCK:
        link = _BUSES.get(key) if key is not None else None
        if link is None or link.transport.closed:
            target, default_timeout = _link_url(url)
            transport = open_transport(target, baudrate=9600, **options)
            link = MdbLink(transport, response_timeout=(
                timeout if timeout is not None else default_timeout))
            if key is not None:
                link.bus_key = key
                _BUSES[key] = link
        elif timeout is not None and timeout > link.response_timeout:
            link.response_timeout = timeout
        link.users += 1
    return link


def open_changer(url: str, *, response_timeout: float | None = None,
                 accept_tokens: bool | str = False, **options: Any) -> MdbCoinChanger:
    """Open an MDB coin changer (``mdb9://PORT``, a simulator's pty, ``sim://mdb-changer``
    or a ``replay://`` capture of the in-band form)."""
    return MdbCoinChanger(_open_link(url, response_timeout, options),
                          accept_tokens=option_flag(accept_tokens))


def open_bill_validator(url: str, *, response_timeout: float | None = None,
                        **options: Any) -> MdbBillValidator:
    """Open an MDB bill validator (``mdb9://PORT``, a simulator's pty, ``sim://mdb-bill``
    or a ``replay://`` capture of the in-band form)."""
    return MdbBillValidator(_open_link(url, response_timeout, options))


__all__ = [
    "ACK",
    "NAK",
    "RET",
    "SETUP_TIME",
    "BillCore",
    "BillSetup",
    "ChangerCore",
    "ChangerSetup",
    "Identification",
    "MdbBillValidator",
    "MdbCoinChanger",
    "MdbLink",
    "Request",
    "TubeCounts",
    "bus_key",
    "open_bill_validator",
    "open_changer",
    "parse_bill_poll",
    "parse_bill_setup",
    "parse_changer_poll",
    "parse_changer_setup",
    "parse_identification",
    "shared_link",
]
