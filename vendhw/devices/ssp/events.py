"""Poll events to cash events (pure): :class:`EventMapper` and the tables it reads."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from vendhw.devices.cash import CashEvent, CashEventKind
from vendhw.devices.ssp.setup import Channel
from vendhw.devices.ssp.tables import ERROR_BYTES, ERROR_DURING_PAYOUT
from vendhw.framing.ssp import UNKNOWN_EVENT, Event

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
