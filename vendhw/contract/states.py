"""The order state machine: every allowed transition is a row of one table.

Nothing moves an order except :func:`check_transition`, so a transition that is not in
:data:`TRANSITIONS` cannot happen, whoever asks (a notification, the query loop, the machine,
an operator). The table is also what ``docs/backend.md`` prints for backend teams.
"""

from __future__ import annotations

from enum import Enum

from vendhw.errors import VendhwError


class OrderState(str, Enum):
    """Where an order is; the values are the strings used in JSON and in the database."""

    CREATED = "created"
    AWAITING_PAYMENT = "awaiting_payment"
    PAID = "paid"
    DISPENSING = "dispensing"
    DELIVERED = "delivered"
    REFUNDING = "refunding"
    REFUNDED = "refunded"
    NEEDS_REVIEW = "needs_review"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


S = OrderState

TRANSITIONS: dict[tuple[OrderState, OrderState], str] = {
    (S.CREATED, S.AWAITING_PAYMENT): "the provider issued the payment QR",
    (S.CREATED, S.PAID): "a pickup or lottery code was verified and reserved, or "
                        "the machine took cash for it",
    (S.CREATED, S.CANCELLED): "the provider refused to create the QR",
    (S.AWAITING_PAYMENT, S.PAID): "payment confirmed (notification or query), amount matches",
    (S.AWAITING_PAYMENT, S.NEEDS_REVIEW): "payment confirmed but the amount does not match",
    (S.AWAITING_PAYMENT, S.EXPIRED): "no payment before expires_at (last query said unpaid)",
    (S.AWAITING_PAYMENT, S.CANCELLED): "the machine cancelled, or the customer declined",
    (S.PAID, S.DISPENSING): "the machine acknowledged the ship instruction (or vended "
                           "a cash sale)",
    (S.PAID, S.REFUNDING): "an operator refunded before the machine took the instruction",
    (S.DISPENSING, S.DELIVERED): "the machine reported delivered",
    (S.DISPENSING, S.REFUNDING): "the machine reported a definite failure",
    (S.DISPENSING, S.NEEDS_REVIEW): "the machine reported unknown (never auto-refund/re-ship)",
    (S.REFUNDING, S.REFUNDED): "the provider confirmed the refund (code orders: code released)",
    (S.EXPIRED, S.REFUNDING): "a payment arrived after expiry: refunded automatically",
    (S.CANCELLED, S.REFUNDING): "a payment arrived after cancellation: refunded automatically",
    (S.NEEDS_REVIEW, S.DELIVERED): "an operator decided the product was delivered",
    (S.NEEDS_REVIEW, S.REFUNDING): "an operator decided to refund",
}
"""(from, to) -> why. The only transitions that exist."""

FINAL_STATES = frozenset({S.DELIVERED, S.REFUNDED, S.EXPIRED, S.CANCELLED})
"""States nothing leaves on its own (expired/cancelled only by a late payment's refund)."""

DELIVERED_OUTCOME = "delivered"
UNKNOWN_OUTCOME = "unknown"
FAILURE_OUTCOMES = frozenset(
    {"empty", "jammed", "motor_fault", "not_dropped", "sensor_fault", "timeout"})
"""Definite failures: the product did not leave the machine, so the customer is refunded."""
OUTCOMES = frozenset({DELIVERED_OUTCOME, UNKNOWN_OUTCOME}) | FAILURE_OUTCOMES


class TransitionError(VendhwError):
    """A state change the table does not allow (a bug or a late, stale request)."""

    def __init__(self, order_id: str, current: OrderState, wanted: OrderState) -> None:
        self.order_id = order_id
        self.current = current
        self.wanted = wanted
        super().__init__(f"order {order_id}: no transition {current.value} -> {wanted.value}")


def check_transition(order_id: str, current: OrderState | str,
                     wanted: OrderState | str) -> str:
    """Return the reason of ``current -> wanted`` or raise :class:`TransitionError`."""
    a, b = OrderState(current), OrderState(wanted)
    reason = TRANSITIONS.get((a, b))
    if reason is None:
        raise TransitionError(order_id, a, b)
    return reason


def transition_table_markdown() -> str:
    """The table as Markdown, for ``docs/backend.md`` (kept in sync by a test)."""
    lines = ["| from | to | when |", "| --- | --- | --- |"]
    for (a, b), why in TRANSITIONS.items():
        lines.append(f"| `{a.value}` | `{b.value}` | {why} |")
    return "\n".join(lines)


__all__ = [
    "DELIVERED_OUTCOME",
    "FAILURE_OUTCOMES",
    "FINAL_STATES",
    "OUTCOMES",
    "TRANSITIONS",
    "UNKNOWN_OUTCOME",
    "OrderState",
    "TransitionError",
    "check_transition",
    "transition_table_markdown",
]
