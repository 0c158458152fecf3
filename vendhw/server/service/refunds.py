"""Refunds: running them at the provider and recording the outcome."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from vendhw.server.models import (
    Code,
    Refund,
)
from vendhw.server.providers import (
    ProviderError,
    RefundEvent,
    RefundRequest,
    RefundResult,
    RefundState,
)
from vendhw.server.service.core import (
    MACHINE_METHODS,
    BackendCore,
    S,
    crash_point,
)


class RefundsMixin(BackendCore):
    """Refunds: running them at the provider and recording the outcome."""

    def process_refund(self, refund_id: int) -> str:
        """One attempt at a refund (or one query of an accepted one); returns its status."""
        now = self.clock.now()
        with self.db.tx() as s:
            refund = self._lock_refund(s, refund_id)
            if refund is None or refund.status == "succeeded":
                return "succeeded" if refund is not None else "unknown"
            refund.attempts += 1
            refund.next_attempt_at = now + self._backoff(refund.attempts,
                                                         self.settings.refund_retry)
            request = RefundRequest(refund.order_id, refund.out_refund_no, refund.amount,
                                    refund.total, refund.currency, refund.reason)
            phase, provider_name = refund.status, refund.provider
        result: RefundResult
        if provider_name == "code":
            result = RefundResult(RefundState.SUCCEEDED, detail="code released")
        elif provider_name in MACHINE_METHODS:
            result = RefundResult(RefundState.SUCCEEDED, detail=MACHINE_METHODS[provider_name])
        else:
            provider = self.providers.get(provider_name)
            if provider is None:
                result = RefundResult(RefundState.FAILED,
                                      detail=f"provider {provider_name} is not enabled")
            else:
                try:
                    result = (provider.refund(request) if phase == "pending"
                              else provider.query_refund(request))
                except ProviderError as exc:
                    result = RefundResult(RefundState.FAILED, detail=str(exc))
        crash_point("backend:refund-sent")
        with self.db.tx() as s:
            # Lock order: the order first (as every order transition does), then the refund.
            order_id = s.execute(select(Refund.order_id).where(Refund.id == refund_id)
                                 ).scalar_one()
            self._lock_order(s, order_id)
            refund = self._lock_refund(s, refund_id)
            assert refund is not None
            return self._finish_refund(s, refund, result)

    def _lock_refund(self, s: Session, refund_id: int) -> Refund | None:
        return s.execute(select(Refund).where(Refund.id == refund_id).with_for_update()
                         .execution_options(populate_existing=True)).scalar_one_or_none()

    def _finish_refund(self, s: Session, refund: Refund, result: RefundResult) -> str:
        if refund.status == "succeeded":
            return "succeeded"
        now = self.clock.now()
        if result.state is RefundState.SUCCEEDED:
            self._audit(s, "refund", refund.out_refund_no, refund.status, "succeeded",
                        result.detail or "provider confirmed", f"provider:{refund.provider}")
            refund.status = "succeeded"
            refund.completed_at = now
            refund.provider_refund_id = result.refund_id
            order = self._lock_order(s, refund.order_id)
            if order is not None and order.state == S.REFUNDING.value:
                self._move(s, order, S.REFUNDED, f"provider:{refund.provider}",
                           result.detail)
                if order.code_id is not None:
                    code = s.get(Code, order.code_id)
                    if code is not None and code.status == "reserved":
                        self._code_state(s, code, "active", "system",
                                         f"vend {order.id} failed: code usable again")
                        code.reserved_by = None
                        code.order_id = None
        elif result.state is RefundState.PROCESSING:
            if refund.status != "processing":
                self._audit(s, "refund", refund.out_refund_no, refund.status, "processing",
                            result.detail or "accepted", f"provider:{refund.provider}")
            refund.status = "processing"
        else:
            refund.last_error = result.detail
            refund.status = "pending"
        return refund.status

    def _refund_event(self, provider_name: str, event: RefundEvent) -> None:
        with self.db.tx() as s:
            found = s.execute(select(Refund.id, Refund.order_id).where(
                Refund.out_refund_no == event.out_refund_no)).first()
            if found is not None:
                self._lock_order(s, found[1])
            refund = None if found is None else self._lock_refund(s, found[0])
            if refund is not None and refund.provider == provider_name:
                if event.state is RefundState.FAILED:
                    refund.next_attempt_at = self.clock.now()
                self._finish_refund(s, refund, RefundResult(event.state, detail="notified"))
