"""MDB coin changer and bill validator hosts (the VMC side), reporting CashEvents.

The protocol core is pure: :func:`parse_changer_poll` and :func:`parse_bill_poll` turn a POLL
reply into :class:`~vendhw.devices.cash.CashEvent` values, :func:`parse_changer_setup` and
:func:`parse_bill_setup` read the SETUP replies. :class:`MdbLink` is the thin runner: it sends
a block in the 9-bit wire form, reads the reply within the response time, asks for a
retransmission (RET) on a bad checksum, and ACKs peripheral data only when told to.

Credit safety: a peripheral repeats unacknowledged POLL data at the next POLL, so the device
classes call the sink for every event *before* they ACK; if the sink fails, no ACK is sent and
the same data comes again. MDB has no event counters, so ``event_id`` is a per-session poll
sequence; the journal's commit must fit in the peripheral's ACK window (the spec's 5 ms
response time), so keep the journal on fast storage.

Layouts and codes: ``protocols/mdb/README.md`` (temoto/vender ``hardware/mdb/coin``,
``hardware/mdb/bill``; Bouni's MDB write-up).
"""

from __future__ import annotations

import logging
import secrets
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

from vendhw.devices.cash import CashDevice, CashEvent, CashEventKind, EventSink
from vendhw.errors import (
    ConfigurationError,
    FramingError,
    NakError,
    NoResponseError,
    NotSupportedError,
    UnexpectedReplyError,
)
from vendhw.framing.base import Frame, Garbage
from vendhw.framing.mdb import ACK, MAX_BLOCK, NAK, RESPONSE_TIMEOUT, RET, SETUP_TIME, MdbFramer
from vendhw.transport import Transport, open_transport

log = logging.getLogger(__name__)

CHANGER = 0x08
BILL_VALIDATOR = 0x30
RESET, SETUP, POLL = 0, 1, 3
CHANGER_TUBE_STATUS, CHANGER_COIN_TYPE, CHANGER_DISPENSE, EXPANSION = 2, 4, 5, 7
BILL_SECURITY, BILL_TYPE, BILL_ESCROW, BILL_STACKER = 2, 4, 5, 6

POLL_INTERVAL = 0.2
"""Seconds between POLLs (vender ``DefaultDelayNext``; 100-200 ms is usual)."""
JUST_RESET_WAIT = 2.0
"""How long to POLL after RESET for the 'was reset' status (changer non-response time, DK)."""
RETRANSMISSIONS = 1
"""RET requests on a bad peripheral checksum before the VMC gives up with NAK."""

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
    """The 23-byte changer SETUP reply (coin values already scaled, minor units)."""

    level: int
    country: int
    scaling: int
    decimals: int
    routing: int
    coin_values: tuple[int, ...]


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


def parse_changer_setup(data: bytes) -> ChangerSetup:
    if len(data) < 7:
        raise UnexpectedReplyError(f"changer SETUP reply has {len(data)} bytes, need >= 7")
    scaling = data[3]
    credits = data[7:23]
    values = tuple(c * scaling for c in credits) + (0,) * (16 - len(credits))
    return ChangerSetup(data[0], int.from_bytes(data[1:3], "big"), scaling, data[4],
                        int.from_bytes(data[5:7], "big"), values)


def parse_bill_setup(data: bytes) -> BillSetup:
    if len(data) < 11:
        raise UnexpectedReplyError(f"bill SETUP reply has {len(data)} bytes, need >= 11")
    scaling = int.from_bytes(data[3:5], "big")
    credits = data[11:27]
    values = tuple(c * scaling for c in credits) + (0,) * (16 - len(credits))
    return BillSetup(data[0], int.from_bytes(data[1:3], "big"), scaling, data[5],
                     int.from_bytes(data[6:8], "big"), int.from_bytes(data[8:10], "big"),
                     data[10] == 0xFF, values)


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
            kind = CashEventKind.REJECTED if route == 3 else CashEventKind.CREDIT
            events.append(CashEvent(kind, device, setup.coin_values[coin], currency, coin,
                                    COIN_ROUTES[route], "coin routed to reject"
                                    if route == 3 else None, eid,
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
        self.framer = MdbFramer(wire="9bit")
        self._ack = self.framer.build(direction="host", control="ACK")
        self._ret = self.framer.build(direction="host", control="RET")

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

        Call :meth:`ack` after handling returned data; without it the peripheral repeats it.
        """
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
        reply = self.transact(address, command, data)
        if reply is not None:
            self.ack()
        return reply


@dataclass
class _PollState:
    """Event ids for POLL data. A peripheral repeats unacknowledged data, so the id depends
    on the polls delivered (and ACKed) so far and on the data itself: a repeat after a failed
    sink gets the same ids (the journal keeps one of each), new data always gets new ones."""

    session: str = field(default_factory=lambda: secrets.token_hex(4))
    delivered: int = 0
    last: bytes = b""
    """The data the previous POLL delivered (b"" when it had none)."""

    def prefix(self, data: bytes) -> str:
        return f"{self.session}:{self.delivered}:{zlib.crc32(data):08x}"

    def repeat(self, data: bytes) -> bool:
        """The same data right after we ACKed it: the ACK was lost on the way and the
        peripheral sends it again (MDB has no sequence number to tell)."""
        return bool(data) and data == self.last and self.delivered > 0


class _MdbCashDevice(CashDevice):
    address: int

    def __init__(self, link: MdbLink, name: str) -> None:
        self.link = link
        self.name = name
        self._poll_state = _PollState()
        self._after_reset = b""
        """Activities that came with JUST RESET (a jam, a status): reported at the first poll."""
        self._resumed = False
        self._held = b""
        """POLL data unacknowledged before a restart, read before RESET (which drops it)."""

    def checkpoint(self) -> dict[str, Any]:
        """The poll counter that names events; the cash journal stores it with them."""
        return {"session": self._poll_state.session, "delivered": self._poll_state.delivered}

    def restore(self, data: dict[str, Any]) -> None:
        """Continue from a :meth:`checkpoint` after a restart, before :meth:`start`: data the
        peripheral still repeats (unacknowledged when the host died) is read before RESET and
        delivered at the first poll with the ids it had, so it counts once."""
        self._poll_state = _PollState(str(data["session"]), int(data["delivered"]))
        self._resumed = True

    def _reset(self) -> None:
        if self._resumed:
            self._resumed = False
            self._held = self.link.transact(self.address, POLL) or b""  # not ACKed: RESET next
        self.link.command(self.address, RESET)
        reset = bytes((self._was_reset_code(),))
        deadline = time.monotonic() + JUST_RESET_WAIT
        while time.monotonic() < deadline:
            data = self.link.command(self.address, POLL)
            activities = self._activities(data or b"")
            if reset in activities:
                self._after_reset = b"".join(a for a in activities if a != reset)
                return
        raise NoResponseError("peripheral did not report 'was reset' after RESET",
                              port=self.link.transport.url, timeout=JUST_RESET_WAIT)

    def _was_reset_code(self) -> int:
        raise NotSupportedError(self.name)

    def _activities(self, data: bytes) -> list[bytes]:
        """POLL data split into its activities (one byte each unless a subclass says)."""
        return [data[i:i + 1] for i in range(len(data))]

    def _parse_poll(self, data: bytes, prefix: str) -> list[CashEvent]:
        raise NotSupportedError(self.name)

    def poll(self, sink: EventSink | None = None) -> list[CashEvent]:
        if self._held:  # the repeat read before RESET, named as it was before the restart
            held = self._held
            events = self._parse_poll(held, self._poll_state.prefix(held))
            if sink is not None:
                for event in events:
                    sink(event)
            self._held = b""
            self._poll_state.delivered += 1
            return events
        reply = self.link.transact(self.address, POLL)
        if reply is None and not self._after_reset:
            return []
        data = self._after_reset + (reply or b"")  # held ones first, in the order they came
        state = self._poll_state
        repeat = state.repeat(data)
        if repeat:
            # Named as last time, so the journal keeps one; an operator hears of it, since two
            # identical coins in two consecutive polls would read the same.
            prefix = f"{state.session}:{state.delivered - 1}:{zlib.crc32(data):08x}"
            # (delivered is not advanced below, so a third copy is named the same again)
            events = self._parse_poll(data, prefix)
            credit = sum(e.value for e in events if e.kind is CashEventKind.CREDIT)
            if credit:
                events.append(CashEvent(
                    CashEventKind.FAULT, self.name, credit, events[0].currency,
                    reason="the previous POLL data came again (our ACK was lost): counted "
                           "once; if the customer really inserted the same again, credit it "
                           "by hand", event_id=f"{prefix}/repeat"))
        else:
            events = self._parse_poll(data, state.prefix(data))
        if sink is not None:
            for event in events:
                sink(event)  # journal first; an exception here means no ACK, so MDB repeats
        self._after_reset = b""
        if reply is not None:
            self.link.ack()
        if not repeat:  # a repeat keeps the ids of the data it repeats, however often
            state.delivered += 1
        state.last = data
        return events

    def close(self) -> None:
        self.link.transport.close()


class MdbCoinChanger(_MdbCashDevice):
    """A coin changer at address 0x08: accepts coins into tubes/cashbox, pays out from tubes."""

    address = CHANGER

    def __init__(self, link: MdbLink, name: str = "mdb-changer") -> None:
        super().__init__(link, name)
        self.setup: ChangerSetup | None = None
        self.tubes: list[int] = [0] * 16

    def _was_reset_code(self) -> int:
        return 0x0B

    def _activities(self, data: bytes) -> list[bytes]:
        """Coin reports (1yyyxxxx or 01yyxxxx) are two bytes, the second a tube count that
        may equal a status code, so the reply is walked, not searched."""
        out, i = [], 0
        while i < len(data):
            size = 2 if data[i] & 0xC0 else 1
            out.append(data[i:i + size])
            i += size
        return out

    def start(self) -> None:
        self._reset()
        reply = self.link.command(CHANGER, SETUP)
        if reply is None:
            raise UnexpectedReplyError("changer SETUP answered ACK instead of data")
        self.setup = parse_changer_setup(reply)
        self.currency = currency_of(self.setup.country)
        self.tube_status()
        self.disable()

    def _setup(self) -> ChangerSetup:
        if self.setup is None:
            raise ConfigurationError(f"{self.name}: call start() first")
        return self.setup

    def tube_status(self) -> list[int]:
        reply = self.link.command(CHANGER, CHANGER_TUBE_STATUS)
        if reply is not None and len(reply) >= 2:
            counts = list(reply[2:18])
            self.tubes = counts + [0] * (16 - len(counts))
        return self.tubes

    def enable(self) -> None:
        mask = sum(1 << i for i, v in enumerate(self._setup().coin_values) if v)
        self.link.command(CHANGER, CHANGER_COIN_TYPE, mask.to_bytes(2, "big") + b"\xff\xff")

    def disable(self) -> None:
        self.link.command(CHANGER, CHANGER_COIN_TYPE, b"\x00\x00\xff\xff")

    def _parse_poll(self, data: bytes, prefix: str) -> list[CashEvent]:
        return parse_changer_poll(data, self._setup(), self.name, prefix)

    def payout(self, amount: int) -> None:
        """Pay ``amount`` from the tubes, largest coins first (DISPENSE, up to 15 per command).

        Raises :class:`DeviceFault`-free ConfigurationError when the tubes cannot make it,
        before any coin moves.
        """
        setup = self._setup()
        self.tube_status()
        plan: list[tuple[int, int]] = []
        left = amount
        for coin in sorted(range(16), key=lambda c: -setup.coin_values[c]):
            value = setup.coin_values[coin]
            if value <= 0 or left < value:
                continue
            count = min(left // value, self.tubes[coin])
            if count:
                plan.append((coin, count))
                left -= count * value
        if left:
            raise ConfigurationError(
                f"{self.name}: tubes cannot pay {amount} exactly ({left} short)")
        for coin, count in plan:
            while count:
                batch = min(count, 15)
                self.link.command(CHANGER, CHANGER_DISPENSE, bytes(((batch << 4) | coin,)))
                count -= batch

    def status(self) -> dict[str, Any]:
        setup = self._setup()
        return {"device": self.name, "level": setup.level, "currency": self.currency,
                "coin_values": list(setup.coin_values), "tubes": self.tube_status()}


class MdbBillValidator(_MdbCashDevice):
    """A bill validator at address 0x30 with escrow."""

    address = BILL_VALIDATOR

    def __init__(self, link: MdbLink, name: str = "mdb-bill") -> None:
        super().__init__(link, name)
        self.setup: BillSetup | None = None

    def _was_reset_code(self) -> int:
        return 0x06

    def start(self) -> None:
        self._reset()
        reply = self.link.command(BILL_VALIDATOR, SETUP)
        if reply is None:
            raise UnexpectedReplyError("bill validator SETUP answered ACK instead of data")
        self.setup = parse_bill_setup(reply)
        self.currency = currency_of(self.setup.country)
        self.link.command(BILL_VALIDATOR, BILL_SECURITY, b"\x00\x00")
        self.disable()

    def _setup(self) -> BillSetup:
        if self.setup is None:
            raise ConfigurationError(f"{self.name}: call start() first")
        return self.setup

    def enable(self) -> None:
        setup = self._setup()
        mask = sum(1 << i for i, v in enumerate(setup.bill_values) if v).to_bytes(2, "big")
        self.link.command(BILL_VALIDATOR, BILL_TYPE,
                          mask + (mask if setup.escrow else b"\x00\x00"))

    def disable(self) -> None:
        self.link.command(BILL_VALIDATOR, BILL_TYPE, b"\x00\x00\x00\x00")

    def stack(self) -> None:
        self.link.command(BILL_VALIDATOR, BILL_ESCROW, b"\x01")

    def reject(self) -> None:
        self.link.command(BILL_VALIDATOR, BILL_ESCROW, b"\x00")

    def stacker(self) -> tuple[int, bool]:
        """Bills in the stacker and whether it is full."""
        reply = self.link.command(BILL_VALIDATOR, BILL_STACKER) or b"\x00\x00"
        word = int.from_bytes(reply[:2], "big")
        return word & 0x7FFF, bool(word & 0x8000)

    def _parse_poll(self, data: bytes, prefix: str) -> list[CashEvent]:
        return parse_bill_poll(data, self._setup(), self.name, prefix)

    def status(self) -> dict[str, Any]:
        setup = self._setup()
        count, full = self.stacker()
        return {"device": self.name, "level": setup.level, "currency": self.currency,
                "bill_values": list(setup.bill_values), "escrow": setup.escrow,
                "stacker": count, "stacker_full": full}


def _open_link(url: str, response_timeout: float | None, options: dict[str, Any]) -> MdbLink:
    if not (url.startswith("sim://") or url.startswith("mdb9://")):
        raise ConfigurationError(
            f"{url}: MDB needs a 9-bit link: mdb9:///dev/ttyUSB0 (sticky parity) or sim://mdb-…")
    transport = open_transport(url, baudrate=9600, **options)
    timeout = response_timeout if response_timeout is not None else (
        RESPONSE_TIMEOUT if url.startswith("mdb9://") else 0.1)
    return MdbLink(transport, response_timeout=timeout)


def open_changer(url: str, *, response_timeout: float | None = None,
                 **options: Any) -> MdbCoinChanger:
    """Open an MDB coin changer (``mdb9://PORT`` or ``sim://mdb-changer``)."""
    return MdbCoinChanger(_open_link(url, response_timeout, options))


def open_bill_validator(url: str, *, response_timeout: float | None = None,
                        **options: Any) -> MdbBillValidator:
    """Open an MDB bill validator (``mdb9://PORT`` or ``sim://mdb-bill``)."""
    return MdbBillValidator(_open_link(url, response_timeout, options))


__all__ = [
    "ACK", "NAK", "RET", "SETUP_TIME", "BillSetup", "ChangerSetup", "MdbBillValidator",
    "MdbCoinChanger", "MdbLink", "open_bill_validator", "open_changer", "parse_bill_poll",
    "parse_bill_setup", "parse_changer_poll", "parse_changer_setup",
]
