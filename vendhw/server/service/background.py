"""The background loop: due queries, refunds and purges."""

from __future__ import annotations

from sqlalchemy import delete, func, or_, select

from vendhw.server.models import (
    IdempotentResponse,
    Nonce,
    Order,
    Refund,
)
from vendhw.server.providers import (
    PaymentEvent,
    ProviderError,
)
from vendhw.server.service.core import (
    BackendCore,
    S,
    _Effects,
    log,
)


class BackgroundMixin(BackendCore):
    """The background loop: due queries, refunds and purges."""

    def run_due_work(self, limit: int = 200) -> float | None:
        """One pass: query unpaid orders, expire them, watch for late payers, retry refunds.

        Returns the seconds until something is next due (None: nothing is scheduled). The
        app runs it in a loop; tests call it directly with a fake clock.
        """
        now = self.clock.now()
        awaiting, watched = S.AWAITING_PAYMENT.value, (S.EXPIRED.value, S.CANCELLED.value)
        with self.db.tx() as s:
            order_ids = s.execute(select(Order.id).where(or_(
                (Order.state == awaiting) & or_(Order.next_query_at <= now,
                                                Order.expires_at <= now),
                Order.state.in_(watched) & (Order.watch_until > now)
                & (Order.next_query_at <= now),
            )).order_by(Order.next_query_at).limit(limit)).scalars().all()
            refund_ids = s.execute(select(Refund.id).where(
                Refund.status != "succeeded", Refund.next_attempt_at <= now)
                .order_by(Refund.next_attempt_at).limit(limit)).scalars().all()
        for order_id in order_ids:
            try:
                self._query_order(order_id)
            except Exception:
                log.exception("querying order %s failed", order_id)
        for refund_id in refund_ids:
            try:
                self.process_refund(refund_id)
            except Exception:
                log.exception("refund %s failed", refund_id)
        if now - self._last_purge > 60:
            self._last_purge = now
            with self.db.tx() as s:
                s.execute(delete(Nonce).where(Nonce.expires_at < now))
                s.execute(delete(IdempotentResponse).where(
                    IdempotentResponse.status_code != 0,  # in progress: the takeover rules
                    IdempotentResponse.created_at < now - self.settings.idempotency_keep))
                self._purge_instances(s, now)
        return self.next_due()

    def next_due(self) -> float | None:
        """Seconds until the background loop has work (0 when overdue, None when idle)."""
        now = self.clock.now()
        with self.db.read() as s:
            candidates = [
                s.execute(select(func.min(Order.next_query_at)).where(
                    Order.state == S.AWAITING_PAYMENT.value)).scalar(),
                s.execute(select(func.min(Order.expires_at)).where(
                    Order.state == S.AWAITING_PAYMENT.value)).scalar(),
                s.execute(select(func.min(Order.next_query_at)).where(
                    Order.state.in_((S.EXPIRED.value, S.CANCELLED.value)),
                    Order.watch_until > now)).scalar(),
                s.execute(select(func.min(Refund.next_attempt_at)).where(
                    Refund.status != "succeeded")).scalar(),
            ]
        due = [c for c in candidates if c is not None]
        return max(0.0, min(due) - now) if due else None

    def _query_order(self, order_id: str) -> None:
        with self.db.tx() as s:
            order = s.get(Order, order_id)
            if order is None:
                return
            provider_name = order.provider
        provider = self.providers.get(provider_name)
        event: PaymentEvent | None = None
        problem = ""
        if provider is not None:
            try:
                event = provider.query(order_id)
            except ProviderError as exc:
                problem = str(exc)
        effects = _Effects()
        now = self.clock.now()
        with self.db.tx() as s:
            order = self._lock_order(s, order_id)
            assert order is not None
            if event is not None:
                self._apply_payment(s, order, event, "query", effects)
            order.query_count += 1
            if order.state == S.AWAITING_PAYMENT.value:
                if now >= order.expires_at:
                    self._move(s, order, S.EXPIRED, "poller", problem or "last query: unpaid")
                    self._watch_late(order)
                    effects.close.append((provider_name, order.id))
                else:
                    order.next_query_at = min(now + self._backoff(order.query_count),
                                              order.expires_at)
            elif order.state in (S.EXPIRED.value, S.CANCELLED.value) and order.watch_until:
                if now >= order.watch_until:
                    order.watch_until = order.next_query_at = None
                else:
                    order.next_query_at = now + self._backoff(order.query_count)
            else:
                order.next_query_at = None
        self._after(effects)
