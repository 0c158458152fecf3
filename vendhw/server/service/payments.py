"""Payments: provider notifications, applying a payment, shipping the vend."""

from __future__ import annotations

import secrets
from collections.abc import Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from vendhw.server.models import (
    Instruction,
    Order,
    Payment,
    Refund,
)
from vendhw.server.pgnotify import notify_in
from vendhw.server.providers import (
    NotificationError,
    NotificationReply,
    PaymentEvent,
    RefundEvent,
    TradeStatus,
)
from vendhw.server.service.core import (
    BackendCore,
    S,
    _Effects,
    crash_point,
    iso,
    log,
)
from vendhw.server.service.errors import ApiError


class PaymentsMixin(BackendCore):
    """Payments: provider notifications, applying a payment, shipping the vend."""

    def handle_notification(self, provider_name: str, headers: Mapping[str, str],
                            body: bytes) -> NotificationReply:
        """Verify and apply a provider notification; duplicates change nothing."""
        provider = self.providers.get(provider_name)
        if provider is None:
            raise ApiError(404, "unknown_provider")
        try:
            events = provider.parse_notification(headers, body)
        except NotificationError as exc:
            log.warning("rejected %s notification: %s", provider_name, exc)
            return provider.reject_reply(str(exc))
        for event in events:
            if isinstance(event, RefundEvent):
                self._refund_event(provider_name, event)
            else:
                self.apply_payment(provider_name, event, "notify")
        return provider.accept_reply()

    def apply_payment(self, provider_name: str, event: PaymentEvent, source: str) -> str:
        """The one place a payment fact reaches an order (notification or query)."""
        effects = _Effects()
        with self.db.tx() as s:
            order = self._lock_order(s, event.out_trade_no)
            if order is None or order.provider != provider_name:
                log.warning("%s %s for unknown order %s", provider_name, source,
                            event.out_trade_no)
                return "unknown_order"
            result = self._apply_payment(s, order, event, source, effects)
        crash_point("backend:paid")
        self._after(effects)
        return result

    def _apply_payment(self, s: Session, order: Order, event: PaymentEvent, source: str,
                       effects: _Effects) -> str:
        actor = f"provider:{order.provider}:{source}"
        if event.status is TradeStatus.CLOSED:
            if order.state == S.AWAITING_PAYMENT.value:
                self._move(s, order, S.CANCELLED, actor, "closed unpaid at the provider")
                self._watch_late(order)
                return "cancelled"
            return "ignored"
        if event.status is not TradeStatus.PAID:
            return "pending"
        existing = s.execute(select(Payment).where(Payment.order_id == order.id)
                             ).scalar_one_or_none()
        if existing is not None:
            return "duplicate"
        now = self.clock.now()
        amount = event.amount
        payment = Payment(order_id=order.id, provider=order.provider,
                          transaction_id=event.transaction_id, amount=amount or 0,
                          currency=event.currency or order.currency,
                          paid_at=event.paid_at or now, source=source, raw=event.raw or None)
        s.add(payment)
        if order.state == S.CREATED.value:
            self._move(s, order, S.AWAITING_PAYMENT, actor, "paid before the QR was stored")
        if order.state == S.AWAITING_PAYMENT.value:
            order.next_query_at = None
            if amount != order.amount or payment.currency != order.currency:
                self._move(s, order, S.NEEDS_REVIEW, actor,
                           f"paid {amount} {payment.currency}, order is "
                           f"{order.amount} {order.currency}")
                return "needs_review"
            self._move(s, order, S.PAID, actor, f"transaction {event.transaction_id}")
            self._ship(s, order, effects)
            return "paid"
        if order.state in (S.EXPIRED.value, S.CANCELLED.value):
            payment.late = True
            was = order.state
            self._move(s, order, S.REFUNDING, actor, f"paid {amount} after the order was {was}")
            order.next_query_at = None
            order.watch_until = None
            effects.refunds.append(self._new_refund(
                s, order, amount or 0, f"payment after the order was {was}"))
            return "late_refund"
        log.warning("payment for order %s in state %s recorded only", order.id, order.state)
        return "recorded"

    def _ship(self, s: Session, order: Order, effects: _Effects, *,
              inline: bool = False) -> None:
        """Queue the ship instruction; ``inline`` = it goes out in this answer already, so
        the push channel only repeats it if the machine does not acknowledge it in time."""
        now = self.clock.now()
        instruction_id = "ins_" + secrets.token_hex(10)
        payload = {"id": instruction_id, "type": "ship", "order_id": order.id,
                   "slot": order.slot, "product_id": order.product_id,
                   "product_name": order.product_name, "quantity": 1, "kind": order.kind,
                   "amount": order.amount, "currency": order.currency, "issued_at": iso(now)}
        s.add(Instruction(id=instruction_id, machine_id=order.machine_id, order_id=order.id,
                          type="ship", payload=payload, status="pending", created_at=now,
                          deliveries=1 if inline else 0,
                          next_delivery_at=now + self.settings.redeliver_after if inline
                          else now))
        self._audit(s, "instruction", instruction_id, None, "pending",
                    f"ship order {order.id} from slot {order.slot}", "system")
        notify_in(s, order.machine_id)  # other processes' long-polls (PostgreSQL)
        effects.instructions.append((order.machine_id, payload))

    def _new_refund(self, s: Session, order: Order, amount: int, reason: str) -> int:
        now = self.clock.now()
        is_code = order.kind == "code"
        refund = Refund(order_id=order.id, out_refund_no="R" + order.id,
                        provider="code" if is_code else order.provider,
                        amount=0 if is_code else amount, total=0 if is_code else amount,
                        currency=order.currency, reason=reason, status="pending",
                        next_attempt_at=now, created_at=now)
        s.add(refund)
        s.flush()
        self._audit(s, "refund", refund.out_refund_no, None, "pending", reason, "system")
        return refund.id
