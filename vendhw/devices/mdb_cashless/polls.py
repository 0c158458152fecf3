"""MDB cashless POLL replies and setup data: parsed into events and reader config."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from vendhw.devices.mdb_cashless.tables import (
    EVENT_NAMES,
    OPTION_CASH_SALE,
    OPTION_REFUNDS,
    UNKNOWN_FUNDS,
)
from vendhw.errors import (
    UnexpectedReplyError,
)
from vendhw.framing.mdb import (
    PERIPHERAL_ID,
    READER_CONFIG,
)
from vendhw.framing.mdb import (
    CashlessPoll as Poll,
)

log = logging.getLogger("vendhw.devices.mdb_cashless")


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
