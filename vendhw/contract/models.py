"""What the backend client returns: small frozen dataclasses parsed from the JSON contract."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

OUTCOMES = ("delivered", "empty", "jammed", "motor_fault", "not_dropped", "sensor_fault",
            "timeout", "unknown")
"""Dispense outcomes the backend accepts (definite failures are refunded; unknown is
reviewed by a person)."""

FINAL_STATES = ("delivered", "refunded", "needs_review", "expired", "cancelled")


def _time(text: Any) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(str(text).replace("Z", "+00:00"))


@dataclass(frozen=True)
class Order:
    """An order as the backend sees it; ``qr_text`` is what the machine shows as a QR."""

    id: str
    state: str
    slot: str
    product_id: str
    product_name: str
    amount: int
    currency: str
    kind: str
    provider: str
    qr_text: str | None
    expires_at: datetime | None
    created_at: datetime | None
    outcome: str | None
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Order:
        return cls(id=str(data["id"]), state=str(data["state"]), slot=str(data["slot"]),
                   product_id=str(data["product_id"]),
                   product_name=str(data.get("product_name", "")),
                   amount=int(data["amount"]), currency=str(data["currency"]),
                   kind=str(data.get("kind", "qr")), provider=str(data.get("provider", "")),
                   qr_text=data.get("qr_text"), expires_at=_time(data.get("expires_at")),
                   created_at=_time(data.get("created_at")), outcome=data.get("outcome"),
                   raw=dict(data))

    @property
    def final(self) -> bool:
        """True once nothing will change without a person (or a late payment's refund)."""
        return self.state in FINAL_STATES


@dataclass(frozen=True)
class Instruction:
    """A ship instruction; acknowledge it by ``id`` once it is in the vend journal."""

    id: str
    type: str
    order_id: str
    slot: str
    product_id: str
    quantity: int
    kind: str
    delivery: int
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Instruction:
        return cls(id=str(data["id"]), type=str(data.get("type", "ship")),
                   order_id=str(data["order_id"]), slot=str(data["slot"]),
                   product_id=str(data.get("product_id", "")),
                   quantity=int(data.get("quantity", 1)), kind=str(data.get("kind", "qr")),
                   delivery=int(data.get("delivery", 1)), raw=dict(data))


@dataclass(frozen=True)
class Redemption:
    """An accepted code: its order (state ``paid``) and the ship instruction."""

    order: Order
    instruction: Instruction | None


@dataclass(frozen=True)
class ReportReceipt:
    """What became of a dispense report: sent (with the order's new state) or queued."""

    order_id: str
    idempotency_key: str
    queued: bool
    order: Order | None = None


__all__ = ["FINAL_STATES", "OUTCOMES", "Instruction", "Order", "Redemption", "ReportReceipt"]
