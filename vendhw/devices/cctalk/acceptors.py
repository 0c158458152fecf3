"""ccTalk coin acceptor (address 2) and bill validator (address 40, with escrow)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from vendhw.devices.cash import CashEvent, EventSink
from vendhw.devices.cctalk.bus import CcTalkBus
from vendhw.devices.cctalk.device import Unanswered, _BufferedAcceptor
from vendhw.devices.cctalk.tables import (
    BARCODE_TICKET,
    BILL_STATUS,
    BILL_VALIDATOR_ADDRESS,
    COIN_ACCEPTOR_ADDRESS,
    COIN_ERRORS,
    ROUTE_ERRORS,
    ROUTE_RETURN,
    ROUTE_STACK,
    K,
    currency_of,
    parse_reply,
    parse_value_id,
    reply_id,
)
from vendhw.devices.engine import Op
from vendhw.errors import DeviceFault, FramingError, NoResponseError
from vendhw.framing.cctalk import (
    BILL_ID_REPLY,
    COIN_ID_REPLY,
    COUNTRY_SCALING_FACTOR_REPLY,
    ROUTE_BILL_REPLY,
    Header,
)


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
        self.unread.clear()
        for channel in range(1, 17):
            try:
                reply = yield from self._ask_op(Header.REQUEST_COIN_ID, bytes((channel,)))
            except Unanswered as exc:
                self._unread(channel, exc)
                continue
            if reply is None:
                continue
            text = reply_id(COIN_ID_REPLY, reply)
            country, value = parse_value_id(text)
            if text and not text.startswith(".."):
                self.ids[channel] = text
            if value:
                self.values[channel] = value
                self.currency = self.currency or currency_of(country)
        self.values.update(self.overrides)
        yield from self.baseline_op()
        yield from self.mask_op(False)

    def start(self, sink: EventSink | None = None) -> None:
        """Identify, read the channel ids, take the event counter's baseline; left
        inhibited. Nothing is reset: unread events stay in the buffer for the first poll."""
        self.run(self.start_op(), sink)

    def _inhibited(self, a: int, b: int) -> bool:
        return a == 0 and (b == 2 or 128 <= b <= 159)

    def _event(self, a: int, b: int, event_id: str) -> CashEvent | None:
        if a in self.unread and a not in self.values:
            return self._unvalued(a, event_id, {"sorter_path": b})
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
        self.unread.clear()
        for channel in range(1, 17):
            try:
                reply = yield from self._ask_op(Header.REQUEST_BILL_ID, bytes((channel,)))
            except Unanswered as exc:
                self._unread(channel, exc)
                continue
            if reply is None:
                continue
            text = reply_id(BILL_ID_REPLY, reply)
            if not text or text.startswith(".."):
                continue
            self.ids[channel] = text
            country = text[:2]
            if country not in self.scaling and country.isalpha():
                try:
                    factor = yield from self._ask_op(Header.REQUEST_COUNTRY_SCALING_FACTOR,
                                                     country.encode("ascii"))
                except Unanswered as exc:
                    # Asked again for the next note of this country; this one's value
                    # would be read without its scaling, perhaps wrongly.
                    self._unread(channel, exc)
                    continue
                # A short reply, like factor 0 (country not supported), leaves no scaling.
                if factor and len(factor) >= COUNTRY_SCALING_FACTOR_REPLY.fixed_size:
                    scale = parse_reply(COUNTRY_SCALING_FACTOR_REPLY, factor)
                    if scale["factor"]:
                        self.scaling[country] = (scale["factor"], scale["decimals"])
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

    def start(self, sink: EventSink | None = None) -> None:
        """Identify, read the channel ids, take the event counter's baseline; left
        inhibited. Nothing is reset: unread events stay in the buffer for the first poll."""
        self.run(self.start_op(), sink)

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
        if a in self.unread and a not in self.values:
            return self._unvalued(a, event_id, {"code": b, "escrow": b == 1})
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
            error = parse_reply(ROUTE_BILL_REPLY, reply)["error"]
            if error == 254 and not first:
                return  # the first attempt did route it; its ACK was lost
            raise DeviceFault(f"{self.name}: route bill failed: "
                              f"{ROUTE_ERRORS.get(error, 'error')}", code=error)

    def stack(self) -> None:
        self.run(self.route_op(ROUTE_STACK))

    def reject(self) -> None:
        self.run(self.route_op(ROUTE_RETURN))
