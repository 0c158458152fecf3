"""POLL replies of a changer and a bill validator turned into CashEvents (pure functions)."""

from __future__ import annotations

from vendhw.devices.cash import CashEvent, CashEventKind
from vendhw.devices.mdb.setup import BillSetup, ChangerSetup, currency_of
from vendhw.devices.mdb.tables import BILL_ROUTES, BILL_STATUS, CHANGER_STATUS, COIN_ROUTES


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
