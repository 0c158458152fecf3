"""The one interface every payment provider implements, and the values it trades in.

The service never sees a provider's wire format: it asks for a QR, hands over a raw
notification to be verified and parsed, queries, closes and refunds, always by the order id
(which is the provider's ``out_trade_no``). Providers do no database work for the service and
are always called *between* two transactions, never inside one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from enum import Enum
from typing import Any

from vendhw.errors import VendhwError


class ProviderError(VendhwError):
    """The provider refused a call or could not be reached; ``retryable`` says if later helps."""

    def __init__(self, message: str, *, provider: str = "", code: str = "",
                 retryable: bool = True) -> None:
        self.provider = provider
        self.code = code
        self.retryable = retryable
        prefix = f"{provider}: " if provider else ""
        super().__init__(prefix + message + (f" [{code}]" if code else ""))


class NotificationError(ProviderError):
    """A notification that fails verification (signature, timestamp, decryption, merchant)."""

    def __init__(self, message: str, *, provider: str = "") -> None:
        super().__init__(message, provider=provider, retryable=False)


class TradeStatus(str, Enum):
    """What the provider knows about the trade of one order."""

    PENDING = "pending"
    """Not paid yet (NOTPAY, WAIT_BUYER_PAY, or no trade until the QR is scanned)."""
    PAID = "paid"
    CLOSED = "closed"
    """Closed unpaid: declined, closed by us, or timed out at the provider."""
    REFUNDED = "refunded"


@dataclass(frozen=True)
class OrderInfo:
    """What a provider needs to issue a QR for an order."""

    out_trade_no: str
    amount: int
    currency: str
    description: str
    expires_at: float


@dataclass(frozen=True)
class QrCode:
    """The text the machine renders as a QR (a URL or a provider scheme)."""

    qr_text: str


@dataclass(frozen=True)
class PaymentEvent:
    """The state of a trade, learned from a notification or a query: the same type for both,
    so the two paths converge on one transition."""

    out_trade_no: str
    status: TradeStatus
    transaction_id: str = ""
    amount: int | None = None
    currency: str = ""
    paid_at: float | None = None
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RefundRequest:
    """One refund, identified by its ``out_refund_no`` across every retry."""

    out_trade_no: str
    out_refund_no: str
    amount: int
    total: int
    currency: str
    reason: str


class RefundState(str, Enum):
    SUCCEEDED = "succeeded"
    PROCESSING = "processing"
    """Accepted, not yet final: query later."""
    FAILED = "failed"
    """Refused this time; retried later with the same ``out_refund_no``."""


@dataclass(frozen=True)
class RefundResult:
    state: RefundState
    refund_id: str = ""
    detail: str = ""


@dataclass(frozen=True)
class RefundEvent:
    """A refund notification (WeChat sends them); the refund loop treats it like a query."""

    out_refund_no: str
    state: RefundState


@dataclass(frozen=True)
class NotificationReply:
    """What the provider expects back (WeChat: 204; Alipay: the word ``success``)."""

    status_code: int
    body: bytes = b""
    media_type: str = "text/plain"


class PaymentProvider(ABC):
    """Create QR, verify+parse notification, query, close, refund: one shape for all."""

    name: str = ""

    @abstractmethod
    def create_qr(self, order: OrderInfo) -> QrCode:
        """Ask the provider for a payment QR for the order (a new trade)."""

    @abstractmethod
    def parse_notification(self, headers: Mapping[str, str], body: bytes
                           ) -> list[PaymentEvent | RefundEvent]:
        """Verify a notification's signature and return what it says; raise NotificationError."""

    @abstractmethod
    def query(self, out_trade_no: str) -> PaymentEvent:
        """Ask the provider for the trade's current state (the fallback for lost notifications)."""

    @abstractmethod
    def close(self, out_trade_no: str) -> None:
        """Close an unpaid trade (best effort: a payment may still race it)."""

    @abstractmethod
    def refund(self, request: RefundRequest) -> RefundResult:
        """Ask for a refund; the same ``out_refund_no`` never refunds twice."""

    @abstractmethod
    def query_refund(self, request: RefundRequest) -> RefundResult:
        """Ask how a refund that was accepted is going."""

    def accept_reply(self) -> NotificationReply:
        """The answer that tells the provider to stop retrying."""
        return NotificationReply(204)

    def reject_reply(self, reason: str) -> NotificationReply:
        """The answer that tells the provider to retry later (or that the message was bad)."""
        return NotificationReply(400, reason.encode("utf-8"))


def yuan_to_fen(text: str) -> int:
    """``"3.50"`` -> ``350``; Alipay's amounts are decimal strings in the major unit."""
    try:
        value = Decimal(text)
    except (InvalidOperation, TypeError) as exc:
        raise ProviderError(f"not an amount: {text!r}", retryable=False) from exc
    return int((value * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def fen_to_yuan(amount: int) -> str:
    """``350`` -> ``"3.50"``."""
    return f"{Decimal(amount) / 100:.2f}"


__all__ = [
    "NotificationError",
    "NotificationReply",
    "OrderInfo",
    "PaymentEvent",
    "PaymentProvider",
    "ProviderError",
    "QrCode",
    "RefundEvent",
    "RefundRequest",
    "RefundResult",
    "RefundState",
    "TradeStatus",
    "fen_to_yuan",
    "yuan_to_fen",
]
