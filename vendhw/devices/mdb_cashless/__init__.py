"""MDB cashless readers (card terminals) at 0x10 (#1) and 0x60 (#2): the VMC side.

Layers (sans-I/O core, thin runner), as :mod:`vendhw.devices.cctalk` does it:

* **Core.** :class:`CashlessCore` holds what the VMC knows of the reader (negotiated feature
  level, scale factor, session, pending vend) and its operations are generators that yield
  :class:`Request` steps (one MDB command each) and receive the reply back (``None`` for a
  plain ACK, the data otherwise). :func:`parse_poll` walks a POLL reply into
  :class:`CashlessEvent` values. Nothing here touches a port or reads a clock: where a wait
  is bounded, the core yields a :class:`Wait` step with the deadline's length and the
  runner decides how to spend it.
* **Runner.** :class:`MdbCashlessReader` runs operations over
  :class:`~vendhw.devices.mdb.MdbLink` (the 9-bit link of the coin/bill hosts, used as it
  is) and ACKs reply data after the core has taken it.

The sale (:meth:`MdbCashlessReader.sell`): wait for BEGIN SESSION (a card), VEND REQUEST,
wait for VEND APPROVED/DENIED, and only when approved run the dispense callback. A definite
failure is reported as VEND FAILURE (the reader refunds); a delivered product as VEND
SUCCESS; an **unknown** outcome is never reported as a failure: it is reported as VEND
SUCCESS and the sale is marked ``needs_review`` for an operator. SESSION COMPLETE then ends
the session (the reader answers END SESSION).

Facts and sources: ``protocols/mdb-cashless/README.md`` (MDB 4.2 §7 as implemented by
``Zzzzipper/projects firmware-usbhost/common/mdb`` and the research note
``payment-protocols.md``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from vendhw.devices.engine import Op, Wait, drive
from vendhw.errors import (
    ConfigurationError,
    FramingError,
    NakError,
    NoResponseError,
    SequenceError,
    UnexpectedReplyError,
)
from vendhw.framing.mdb import (
    PERIPHERAL_ID,
    READER_CONFIG,
    RESPONSE_TIMEOUT,
    SETUP_TIME,
    Address,
)
from vendhw.framing.mdb import (
    CashlessCommand as Command,
)
from vendhw.framing.mdb import (
    CashlessExpansion as Expansion,
)
from vendhw.framing.mdb import (
    CashlessPoll as Poll,
)
from vendhw.framing.mdb import (
    CashlessReader as Reader,
)
from vendhw.framing.mdb import (
    CashlessRevalue as Revalue,
)
from vendhw.framing.mdb import (
    CashlessSetup as Setup,
)
from vendhw.framing.mdb import (
    CashlessVend as Vend,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

CASHLESS_1 = Address.CASHLESS_1
CASHLESS_2 = Address.CASHLESS_2
ADDRESSES = (CASHLESS_1, CASHLESS_2)

EVENT_NAMES = {int(code): code.name.lower() for code in Poll}
"""POLL reply code -> the event kind a CashlessEvent carries."""

# -- timing (MDB 4.2; named, never inline) ------------------------------------------------
RESPONSE_TIME = RESPONSE_TIMEOUT
"""t-response: a peripheral answers every block within 5 ms (framing constant)."""
RESET_TO_POLL = SETUP_TIME
"""After RESET the reader needs up to 200 ms before it answers POLL with JUST RESET."""
DEFAULT_MAX_RESPONSE = 5.0
"""Seconds the VMC allows for a reader's answer (an approval) until the reader's own
"application maximum response time" is known from its SETUP reply."""
POLL_INTERVAL = 0.1
"""Seconds between POLLs while a session is open (readers expect 100-200 ms)."""
JUST_RESET_POLLS = 20
"""POLLs after RESET that may go by before JUST RESET must have come (20 x 100 ms)."""
END_SESSION_POLLS = 50
"""POLLs after SESSION COMPLETE that may go by before END SESSION must have come."""
COMMAND_RETRIES = 3
"""Times a command is sent again after a lost or corrupt reply before the reader is
declared gone (a reader takes a repeated command as the same one)."""

VMC_FEATURE_LEVEL = 3
"""The level the VMC offers in SETUP CONFIG; the reader's answer sets the level used."""
VMC_ID = (b"VHW", b"000000000001", b"vendhw VMC  ", b"\x01\x00")
"""EXPANSION REQUEST ID: manufacturer (3), serial (12), model (12), software version (2)."""
UNKNOWN_FUNDS = 0xFFFF
"""BEGIN SESSION funds available 0xFFFF: the reader does not know (a credit card)."""

OPTION_REFUNDS = 0x01
OPTION_MULTIVEND = 0x02
OPTION_DISPLAY = 0x04
OPTION_CASH_SALE = 0x08
"""Reader config options (level 1/2 meaning): refunds possible, multivend, own display,
VEND/CASH SALE supported."""


@dataclass(frozen=True)
class Request:
    """One MDB command to the reader (``command`` is 0..7, added to the address)."""

    command: int
    data: bytes = b""


Step = Request | Wait
"""Cashless operations yield commands and waits (:mod:`vendhw.devices.engine`)."""


@dataclass(frozen=True)
class CashlessEvent:
    """Something the reader reported at a POLL."""

    kind: str
    code: int
    amount: int | None = None
    """Minor units (scaled) where the event carries money: funds, approved amount, limits."""
    raw: bytes = b""
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "code": self.code, "amount": self.amount,
                "raw": self.raw.hex(), "detail": self.detail}


@dataclass(frozen=True)
class ReaderConfig:
    """READER CONFIG DATA (``01`` + 7 bytes)."""

    level: int
    country: int
    scale: int
    decimals: int
    max_response: int
    """Application maximum response time, seconds."""
    options: int

    @property
    def refunds(self) -> bool:
        return bool(self.options & OPTION_REFUNDS)

    @property
    def cash_sale(self) -> bool:
        return bool(self.options & OPTION_CASH_SALE)

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "country": f"{self.country:04X}", "scale": self.scale,
                "decimals": self.decimals, "max_response_s": self.max_response,
                "options": self.options, "refunds": self.refunds,
                "cash_sale": self.cash_sale}


def parse_config(data: bytes) -> ReaderConfig:
    if len(data) < 8 or data[0] != Poll.READER_CONFIG:
        raise UnexpectedReplyError(f"reader config needs 8 bytes starting 01, got {data.hex()}")
    reply = READER_CONFIG.parse(data, "mdb")
    return ReaderConfig(reply["level"], reply["country"], reply["scale"] or 1,
                        reply["decimals"], reply["max_response"], reply["options"])


def parse_peripheral_id(data: bytes) -> dict[str, Any]:
    """PERIPHERAL ID (``09`` + manufacturer 3, serial 12, model 12, version 2 [, features 4])."""
    if len(data) < 30:
        raise UnexpectedReplyError(f"peripheral id needs 30 bytes, got {len(data)}")
    reply = PERIPHERAL_ID.parse(data, "mdb")
    out: dict[str, Any] = {
        "manufacturer": reply["manufacturer"].decode("ascii", "replace").strip(),
        "serial": reply["serial"].decode("ascii", "replace").strip(),
        "model": reply["model"].decode("ascii", "replace").strip(),
        "version": reply["software_version"].hex(),
    }
    if len(reply["rest"]) >= 4:
        out["features"] = int.from_bytes(reply["rest"][:4], "big")
    return out


_FIXED_LENGTHS: dict[int, int] = {
    Poll.JUST_RESET: 1, Poll.READER_CONFIG: 8, Poll.SESSION_CANCEL_REQUEST: 1,
    Poll.VEND_APPROVED: 3, Poll.VEND_DENIED: 1, Poll.END_SESSION: 1, Poll.CANCELLED: 1,
    Poll.MALFUNCTION: 2, Poll.REVALUE_APPROVED: 1, Poll.REVALUE_DENIED: 1,
    Poll.REVALUE_LIMIT: 3, Poll.TIME_DATE_REQUEST: 1, Poll.DATA_ENTRY_REQUEST: 2,
    Poll.DATA_ENTRY_CANCEL: 1}
"""POLL activities of one length at every level (code included)."""


def _length(code: int, rest: int, level: int) -> int:
    """Bytes taken by the activity starting with ``code`` (``rest`` left in the reply)."""
    if code in _FIXED_LENGTHS:
        return _FIXED_LENGTHS[code]
    if code == Poll.BEGIN_SESSION:
        return 10 if level >= 2 and rest >= 10 else 3
    if code == Poll.PERIPHERAL_ID:
        return 34 if level >= 3 and rest >= 34 else 30
    if code == Poll.OUT_OF_SEQUENCE:
        return 2 if level >= 2 and rest >= 2 else 1
    return rest  # display request, user file data, diagnostics, unknown: the rest


def parse_poll(data: bytes, *, level: int = 1, scale: int = 1) -> list[CashlessEvent]:
    """Walk a POLL reply into events (a reply may carry several activities)."""
    events: list[CashlessEvent] = []
    i = 0
    while i < len(data):
        code = data[i]
        size = min(_length(code, len(data) - i, level), len(data) - i)
        chunk = data[i:i + size]
        kind = EVENT_NAMES.get(code, "unknown")
        amount: int | None = None
        detail: dict[str, Any] = {}
        if code == Poll.BEGIN_SESSION and len(chunk) >= 3:
            funds = int.from_bytes(chunk[1:3], "big")
            amount = None if funds == UNKNOWN_FUNDS else funds * scale
            if len(chunk) >= 10:
                detail = {"media_id": chunk[3:7].hex(), "payment_type": chunk[7],
                          "payment_data": chunk[8:10].hex()}
        elif code in (Poll.VEND_APPROVED, Poll.REVALUE_LIMIT) and len(chunk) >= 3:
            value = int.from_bytes(chunk[1:3], "big")
            amount = None if value == UNKNOWN_FUNDS else value * scale
        elif code == Poll.MALFUNCTION and len(chunk) >= 2:
            detail = {"error": chunk[1]}
        elif code == Poll.OUT_OF_SEQUENCE and len(chunk) >= 2:
            detail = {"reader_state": chunk[1]}
        elif code == Poll.READER_CONFIG and len(chunk) == 8:
            detail = parse_config(chunk).to_dict()
        elif code == Poll.PERIPHERAL_ID and len(chunk) >= 30:
            detail = parse_peripheral_id(chunk)
        elif code == Poll.DISPLAY_REQUEST and len(chunk) >= 2:
            detail = {"seconds": chunk[1] / 10,  # display time in 0.1 s units
                      "text": chunk[2:].decode("ascii", "replace").rstrip()}
        elif code == Poll.DATA_ENTRY_REQUEST and len(chunk) >= 2:
            detail = {"length_repeat": chunk[1]}
        events.append(CashlessEvent(kind, code, amount, chunk, detail))
        i += size
    return events


@dataclass
class CardSale:
    """What became of one card sale (:meth:`MdbCashlessReader.sell`)."""

    item: int
    price: int
    state: str = "waiting"
    """``no_card``, ``denied``, ``cancelled``, ``reader_reset`` (the reader restarted before
    approving: nothing vended, set it up again), ``delivered``, ``failed`` (VEND FAILURE
    sent, the reader refunds), ``needs_review`` (outcome unknown; VEND SUCCESS sent)."""
    approved: int | None = None
    outcome: str | None = None
    funds: int | None = None
    events: list[CashlessEvent] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"item": self.item, "price": self.price, "state": self.state,
                "approved": self.approved, "outcome": self.outcome, "funds": self.funds,
                "events": [e.kind for e in self.events]}


DEFINITE_FAILURES = frozenset(
    {"empty", "jammed", "motor_fault", "not_dropped", "sensor_fault", "timeout",
     "not_started"})
"""Vend outcomes that mean the product surely stayed in the machine (VEND FAILURE)."""


class CashlessCore:
    """What the VMC knows of one reader, and the protocol's operations as generators."""

    def __init__(self, address: int = CASHLESS_1, *, vmc_level: int = VMC_FEATURE_LEVEL,
                 max_price: int = 0xFFFF, min_price: int = 0) -> None:
        if address not in ADDRESSES:
            raise ConfigurationError(f"cashless address must be 0x10 or 0x60, not 0x{address:02X}")
        if not 1 <= vmc_level <= 3:
            raise ConfigurationError(f"VMC feature level must be 1..3, not {vmc_level}")
        self.address = address
        self.vmc_level = vmc_level
        self.max_price = max_price
        self.min_price = min_price
        self.config: ReaderConfig | None = None
        self.identity: dict[str, Any] = {}
        self.time_requested = False
        """The reader sent TIME/DATE REQUEST; :meth:`time_date_op` answers it."""
        self.level = 1
        self.session_open = False
        self.funds: int | None = None
        self.enabled = False
        self.pending: list[CashlessEvent] = []
        """Events seen while an operation waited for something else (for :meth:`poll_op`)."""
        self._backlog: list[CashlessEvent] = []

    # -- scaling ---------------------------------------------------------------------------

    @property
    def scale(self) -> int:
        return self.config.scale if self.config else 1

    @property
    def max_response(self) -> float:
        if self.config is not None and self.config.max_response:
            return float(self.config.max_response)
        return DEFAULT_MAX_RESPONSE

    def to_wire(self, amount: int) -> bytes:
        """A price in minor units -> the 2-byte scaled value (refused if not a multiple)."""
        if amount < 0 or amount % self.scale:
            raise ConfigurationError(f"price {amount} is not a multiple of the reader's scale "
                                     f"factor {self.scale}")
        value = amount // self.scale
        if value > 0xFFFF:
            raise ConfigurationError(f"price {amount} is too large for the reader")
        return value.to_bytes(2, "big")

    # -- operations --------------------------------------------------------------------------

    def _poll(self) -> Op[list[CashlessEvent]]:
        reply = yield Request(Command.POLL)
        if not reply:
            return []
        events = parse_poll(reply, level=self.level, scale=self.scale)
        for event in events:
            self._track(event)
        return events

    def _track(self, event: CashlessEvent) -> None:
        if event.code == Poll.BEGIN_SESSION:
            self.session_open = True
            self.funds = event.amount
        elif event.code in (Poll.END_SESSION, Poll.JUST_RESET):
            self.session_open = False
            self.funds = None
            if event.code == Poll.JUST_RESET:
                self.enabled = False
        elif event.code == Poll.READER_CONFIG:
            self._configure(event.raw)
        elif event.code == Poll.PERIPHERAL_ID:
            self.identity = dict(event.detail)
        elif event.code == Poll.TIME_DATE_REQUEST:
            self.time_requested = True

    def _configure(self, raw: bytes) -> None:
        self.config = parse_config(raw)
        self.level = max(1, min(self.vmc_level, self.config.level))

    def time_date_op(self, when: datetime) -> Op[None]:
        """EXPANSION WRITE TIME/DATE: year (2 digits), month, day, hour, minute, second, day
        of week (1 = Monday), week number, summertime (1 when ``when`` says DST), holiday
        (0: not known as one), each BCD."""
        self.time_requested = False
        week = when.isocalendar()
        fields = (when.year % 100, when.month, when.day, when.hour, when.minute, when.second,
                  week.weekday, week.week, 1 if when.dst() else 0, 0)
        yield Request(Command.EXPANSION, bytes((Expansion.WRITE_TIME_DATE,))
                      + bytes(int(f"{n:02d}", 16) for n in fields))

    def poll_op(self) -> Op[list[CashlessEvent]]:
        """One POLL; the events (held ones from earlier waits first)."""
        events = yield from self._poll()
        held = self.pending + self._backlog
        self.pending, self._backlog = [], []
        return held + events

    def start_op(self) -> Op[ReaderConfig]:
        """RESET, JUST RESET, SETUP config + prices, EXPANSION ID; the reader stays disabled."""
        self.level, self.config, self.enabled, self._backlog = 1, None, False, []
        yield Request(Command.RESET)
        yield Wait(RESET_TO_POLL)
        for _ in range(JUST_RESET_POLLS):
            events = yield from self._poll()
            if any(e.code == Poll.JUST_RESET for e in events):
                self.pending += [e for e in events if e.code != Poll.JUST_RESET]
                break
            self.pending += events
            yield Wait(POLL_INTERVAL)
        else:
            # It answers POLL (a silent reader raised already) but never said JUST RESET:
            # some readers do not after a RESET command; set it up all the same.
            log.warning("cashless 0x%02X: no JUST RESET after RESET; setting up anyway",
                        self.address)
        reply = yield Request(Command.SETUP, bytes((Setup.CONFIG_DATA, self.vmc_level, 0, 0, 0)))
        for _ in range(JUST_RESET_POLLS):
            if reply:  # the config comes in the reply or at a later POLL
                for event in parse_poll(reply, level=self.level, scale=self.scale):
                    if event.code == Poll.READER_CONFIG:
                        self._configure(event.raw)
                    else:
                        self.pending.append(event)
            if self.config is not None:
                break
            yield Wait(POLL_INTERVAL)
            reply = yield Request(Command.POLL)
        if self.config is None:
            raise NoResponseError(f"cashless 0x{self.address:02X} sent no READER CONFIG")
        yield Request(Command.SETUP, bytes((Setup.MAX_MIN_PRICES,))
                      + self.to_wire_clamped(self.max_price) + self.to_wire_clamped(self.min_price))
        manufacturer, serial, model, version = VMC_ID
        reply = yield Request(Command.EXPANSION, bytes((Expansion.REQUEST_ID,)) + manufacturer
                              + serial + model + version)
        if reply:
            for event in parse_poll(reply, level=self.level, scale=self.scale):
                self._track(event)
                if event.code != Poll.PERIPHERAL_ID:
                    self.pending.append(event)
        return self.config

    def to_wire_clamped(self, amount: int) -> bytes:
        return min(amount // self.scale, 0xFFFF).to_bytes(2, "big")

    def reader_op(self, sub: int) -> Op[None]:
        yield Request(Command.READER, bytes((sub,)))
        if sub == Reader.READER_ENABLE:
            self.enabled = True
        elif sub == Reader.READER_DISABLE:
            self.enabled = False

    def vend_op(self, sub: int, data: bytes = b"") -> Op[None]:
        yield Request(Command.VEND, bytes((sub,)) + data)

    def revalue_op(self, amount: int) -> Op[CashlessEvent]:
        """REVALUE REQUEST; waits for REVALUE APPROVED/DENIED (max response time)."""
        if self.level < 2:
            raise ConfigurationError("revalue needs feature level 2 or higher")
        yield Request(Command.REVALUE, bytes((Revalue.REVALUE_REQUEST,)) + self.to_wire(amount))
        return (yield from self._await({Poll.REVALUE_APPROVED, Poll.REVALUE_DENIED}))

    def revalue_limit_op(self) -> Op[CashlessEvent]:
        if self.level < 2:
            raise ConfigurationError("revalue needs feature level 2 or higher")
        yield Request(Command.REVALUE, bytes((Revalue.REVALUE_LIMIT_REQUEST,)))
        return (yield from self._await({Poll.REVALUE_LIMIT}))

    def _next_events(self) -> Op[list[CashlessEvent]]:
        """Events not yet looked at (left in an earlier reply), else a new POLL's."""
        if self._backlog:
            events, self._backlog = self._backlog, []
            return events
        return (yield from self._poll())

    def _await(self, codes: set[int], seconds: float | None = None,
               sale: CardSale | None = None) -> Op[CashlessEvent]:
        """POLL until one of ``codes`` comes; raises NoResponseError after ``seconds``.

        Events after the one awaited in the same reply stay in the backlog for the next
        wait, so a BEGIN SESSION and a SESSION CANCEL REQUEST in one reply are both seen.
        """
        limit = self.max_response if seconds is None else seconds
        polls = max(1, int(limit / POLL_INTERVAL))
        for _ in range(polls):
            events = yield from self._next_events()
            for index, event in enumerate(events):
                if sale is not None:
                    sale.events.append(event)
                if event.code in codes:
                    self._backlog = events[index + 1:]
                    return event
                if event.code == Poll.MALFUNCTION:
                    log.warning("cashless 0x%02X: malfunction %s", self.address, event.detail)
                if sale is None:
                    self.pending.append(event)
            yield Wait(POLL_INTERVAL)
        names = ", ".join(sorted(EVENT_NAMES.get(c, hex(c)) for c in codes))
        raise NoResponseError(f"cashless 0x{self.address:02X}: no {names} within {limit:g} s")

    def _take(self, code: int, sale: CardSale) -> bool:
        """Whether an event ``code`` is waiting in the backlog (consumed if so)."""
        for index, event in enumerate(self._backlog):
            if event.code == code:
                sale.events += self._backlog[:index + 1]
                self._backlog = self._backlog[index + 1:]
                return True
        return False

    def sell_op(self, item: int, price: int, dispense: Callable[[], str], *,
                session_timeout: float) -> Op[CardSale]:
        """One card sale; ``dispense`` runs only after VEND APPROVED and returns the outcome."""
        sale = CardSale(item, price)
        wire_price = self.to_wire(price)
        if not self.session_open:
            try:
                event = yield from self._await({Poll.BEGIN_SESSION, Poll.SESSION_CANCEL_REQUEST,
                                                Poll.JUST_RESET}, session_timeout, sale)
            except NoResponseError:
                sale.state = "no_card"
                return sale
            if event.code == Poll.JUST_RESET:  # the reader restarted: set it up again first
                sale.state = "reader_reset"
                return sale
            if event.code == Poll.SESSION_CANCEL_REQUEST:
                yield from self.vend_op(Vend.SESSION_COMPLETE)
                yield from self._end_session(sale)
                sale.state = "cancelled"
                return sale
        if self._take(Poll.SESSION_CANCEL_REQUEST, sale):  # came in the same reply as the card
            yield from self.vend_op(Vend.SESSION_COMPLETE)
            yield from self._end_session(sale)
            sale.state = "cancelled"
            return sale
        from vendhw.crash import crash_point  # tests' power cut (an env var)

        crash_point("card:session")
        sale.funds = self.funds
        yield from self.vend_op(Vend.VEND_REQUEST, wire_price + item.to_bytes(2, "big"))
        try:
            answer = yield from self._await({Poll.VEND_APPROVED, Poll.VEND_DENIED,
                                             Poll.SESSION_CANCEL_REQUEST, Poll.JUST_RESET},
                                            None, sale)
        except NoResponseError:
            # No answer within the reader's own limit: VEND CANCEL, which it must answer
            # with VEND DENIED. Nothing is dispensed either way.
            yield from self.vend_op(Vend.VEND_CANCEL)
            try:
                answer = yield from self._await({Poll.VEND_DENIED, Poll.VEND_APPROVED}, None, sale)
            except NoResponseError:
                answer = CashlessEvent("vend_denied", Poll.VEND_DENIED)
            if answer.code == Poll.VEND_APPROVED:  # approved at the last moment: still ours to end
                yield from self.vend_op(Vend.VEND_FAILURE)
                answer = CashlessEvent("vend_denied", Poll.VEND_DENIED)
        if answer.code == Poll.JUST_RESET:  # the session died with the reader: nothing vended
            sale.state = "reader_reset"
            return sale
        if answer.code != Poll.VEND_APPROVED:
            sale.state = "denied" if answer.code == Poll.VEND_DENIED else "cancelled"
            yield from self.vend_op(Vend.SESSION_COMPLETE)
            yield from self._end_session(sale)
            return sale
        sale.approved = price if answer.amount is None else answer.amount
        yield Wait(0.0)  # the runner ACKs VEND APPROVED now, before the motor turns
        outcome = "unknown"
        try:
            outcome = dispense()
        finally:
            sale.outcome = outcome
            if outcome == "delivered":
                sale.state = "delivered"
                yield from self.vend_op(Vend.VEND_SUCCESS, item.to_bytes(2, "big"))
            elif outcome in DEFINITE_FAILURES:
                sale.state = "failed"
                yield from self.vend_op(Vend.VEND_FAILURE)
            else:  # unknown: never a failure automatically; an operator settles it
                sale.state = "needs_review"
                yield from self.vend_op(Vend.VEND_SUCCESS, item.to_bytes(2, "big"))
            yield from self.vend_op(Vend.SESSION_COMPLETE)
            yield from self._end_session(sale)
        return sale

    def _end_session(self, sale: CardSale) -> Op[None]:
        try:
            yield from self._await({Poll.END_SESSION}, END_SESSION_POLLS * POLL_INTERVAL, sale)
        except NoResponseError:
            log.warning("cashless 0x%02X: no END SESSION after SESSION COMPLETE", self.address)
        self.session_open = False


class MdbCashlessReader:
    """A cashless reader on an MDB link (the thread runner of :class:`CashlessCore`).

    :param link: a :class:`vendhw.devices.mdb.MdbLink` (shared with the changer and the
        validator on the same bus is fine, one caller at a time).
    """

    def __init__(self, link: Any, address: int = CASHLESS_1, *,
                 vmc_level: int = VMC_FEATURE_LEVEL, name: str | None = None,
                 sleep: Callable[[float], object] | None = None) -> None:
        self.link = link
        self.core = CashlessCore(address, vmc_level=vmc_level)
        self.name = name or f"mdb-cashless@0x{address:02X}"
        self._closed = threading.Event()
        self._sleep = sleep or self._closed.wait
        self.poll_seconds: list[float] = []
        """How long each POLL transaction took (reply within the response budget?)."""
        self.retries = 0
        """Commands sent again after a lost or corrupt reply."""
        self.clock: Callable[[], datetime] = lambda: datetime.now().astimezone()
        """The time a TIME/DATE REQUEST is answered with."""

    def run(self, op: Op[T]) -> T:
        """Drive one operation; reply data is ACKed once the core has taken it. A command and
        the ACK of its reply hold the bus (on a shared MDB bus another device's command
        between them would make the ACK late, and the data would come again); a Wait does
        not (the changer polls meanwhile)."""
        return drive(op, self._transact, wait=self._wait, hold=lambda: self.link.lock,
                     taken=self._ack_data, throw=False)

    def _wait(self, seconds: float) -> None:
        if seconds > 0:
            self._sleep(seconds)

    def _ack_data(self, request: Request, reply: bytes | None) -> None:
        if reply is not None:
            self.link.ack()  # the core has taken the data: the reader may drop it

    def _transact(self, step: Request) -> bytes | None:
        """One command; sent again when the reply is lost or corrupt (readers must take a
        repeated command as the same one), up to :data:`COMMAND_RETRIES` times."""
        for attempt in range(COMMAND_RETRIES + 1):
            started = time.perf_counter()
            try:
                reply = self.link.transact(self.core.address, step.command, step.data)
            except (NoResponseError, FramingError, NakError) as exc:
                if attempt == COMMAND_RETRIES:
                    raise
                self.retries += 1
                log.info("%s: command %d: %s; sending it again", self.name, step.command, exc)
                continue
            if step.command == Command.POLL:
                self.poll_seconds.append(time.perf_counter() - started)
            return reply
        raise AssertionError("unreachable")  # pragma: no cover

    # -- the API ------------------------------------------------------------------------------

    def start(self) -> ReaderConfig:
        return self.run(self.core.start_op())

    def poll(self) -> list[CashlessEvent]:
        """One POLL; a TIME/DATE REQUEST among its events (or held from a sale) is answered
        at once with EXPANSION WRITE TIME/DATE (the local time of ``clock``)."""
        events = self.run(self.core.poll_op())
        if self.core.time_requested:
            self.write_time_date()
        return events

    def write_time_date(self, when: datetime | None = None) -> None:
        """EXPANSION WRITE TIME/DATE (``when``: default the local time now)."""
        self.run(self.core.time_date_op(when or self.clock()))

    def enable(self) -> None:
        self.run(self.core.reader_op(Reader.READER_ENABLE))

    def disable(self) -> None:
        self.run(self.core.reader_op(Reader.READER_DISABLE))

    def cancel(self) -> None:
        self.run(self.core.reader_op(Reader.READER_CANCEL))

    def cash_sale(self, price: int, item: int) -> None:
        """Tell the reader about a sale paid in cash (its audit), if it supports it."""
        self.run(self.core.vend_op(Vend.CASH_SALE,
                                   self.core.to_wire(price) + item.to_bytes(2, "big")))

    def revalue(self, amount: int) -> CashlessEvent:
        return self.run(self.core.revalue_op(amount))

    def revalue_limit(self) -> CashlessEvent:
        return self.run(self.core.revalue_limit_op())

    def sell(self, item: int, price: int, dispense: Callable[[], str], *,
             session_timeout: float = 30.0) -> CardSale:
        """Wait for a card, have the vend approved, dispense, settle with the reader."""
        if self.core.config is None:
            raise SequenceError(f"{self.name}: call start() first")
        return self.run(self.core.sell_op(item, price, dispense,
                                          session_timeout=session_timeout))

    def status(self) -> dict[str, Any]:
        core = self.core
        return {"device": self.name, "address": f"0x{core.address:02X}", "level": core.level,
                "config": core.config.to_dict() if core.config else None,
                "identity": core.identity, "enabled": core.enabled,
                "session_open": core.session_open}

    def close(self) -> None:
        self._closed.set()  # a POLL pause in another thread ends at once
        release = getattr(self.link, "release", None)
        if release is not None:
            release()  # a shared bus closes with its last device
        else:
            self.link.transport.close()


def open_cashless(url: str, *, address: int = CASHLESS_1, response_timeout: float | None = None,
                  vmc_level: int = VMC_FEATURE_LEVEL, **options: Any) -> MdbCashlessReader:
    """Open a cashless reader on ``mdb9://PORT``, a simulator's pty, ``sim://mdb-cashless``
    or ``sim://mdb-bus``; on a port a changer or a bill validator already uses, the reader
    shares that bus (:func:`vendhw.devices.mdb.shared_link`)."""
    from vendhw.devices.mdb import shared_link

    if not (url.startswith("sim://") or url.startswith("mdb9://")):
        from vendhw.devices.mdb import is_pty

        if not is_pty(url):
            raise ConfigurationError(
                f"{url}: MDB needs a 9-bit link: mdb9:///dev/ttyUSB0 (sticky parity) or "
                f"sim://mdb-cashless")
    if response_timeout is None and url.startswith("mdb9://"):
        response_timeout = RESPONSE_TIME
    return MdbCashlessReader(shared_link(url, response_timeout=response_timeout, **options),
                             address, vmc_level=vmc_level)


__all__ = ["ADDRESSES", "CASHLESS_1", "CASHLESS_2", "CardSale", "CashlessCore",
           "CashlessEvent", "MdbCashlessReader", "ReaderConfig", "Request", "Wait",
           "open_cashless", "parse_config", "parse_peripheral_id", "parse_poll"]
