"""The sans-I/O cashless core: what the VMC knows of a reader, its operations as generators."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from vendhw.devices.engine import Op, Wait
from vendhw.devices.mdb_cashless.polls import CashlessEvent, ReaderConfig, parse_config, parse_poll
from vendhw.devices.mdb_cashless.tables import (
    ADDRESSES,
    CASHLESS_1,
    DEFAULT_MAX_RESPONSE,
    END_SESSION_POLLS,
    EVENT_NAMES,
    JUST_RESET_POLLS,
    POLL_INTERVAL,
    RESET_TO_POLL,
    VMC_FEATURE_LEVEL,
    VMC_ID,
)
from vendhw.errors import (
    ConfigurationError,
    NoResponseError,
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

log = logging.getLogger("vendhw.devices.mdb_cashless")


@dataclass(frozen=True)
class Request:
    """One MDB command to the reader (``command`` is 0..7, added to the address)."""

    command: int
    data: bytes = b""


Step = Request | Wait
"""Cashless operations yield commands and waits (:mod:`vendhw.devices.engine`)."""


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
