"""The operator's views and decisions: orders, audit, resolve, refund."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from vendhw.server.models import (
    AuditEntry,
    Code,
    Instruction,
    Order,
    Payment,
    Refund,
)
from vendhw.server.service.core import (
    BackendCore,
    S,
    _Effects,
    iso,
    order_json,
)
from vendhw.server.service.errors import ApiError


class OperatorMixin(BackendCore):
    """The operator's views and decisions: orders, audit, resolve, refund."""

    def list_orders(self, state: str | None = None, machine_id: str | None = None,
                    limit: int = 100) -> list[dict[str, Any]]:
        with self.db.read() as s:
            query = select(Order).order_by(Order.created_at.desc()).limit(limit)
            if state:
                query = query.where(Order.state == state)
            if machine_id:
                query = query.where(Order.machine_id == machine_id)
            return [order_json(o) for o in s.execute(query).scalars()]

    def order_detail(self, order_id: str) -> dict[str, Any]:
        """An order with its payment, refund, instructions and audit trail."""
        from vendhw.server.operators import refund_summary

        with self.db.read() as s:
            order = s.get(Order, order_id)
            if order is None:
                raise ApiError(404, "unknown_order")
            data = order_json(order)
            data["outcome_details"] = order.outcome_details
            payment = s.execute(select(Payment).where(Payment.order_id == order_id)
                                ).scalar_one_or_none()
            data["payment"] = None if payment is None else {
                "provider": payment.provider, "transaction_id": payment.transaction_id,
                "amount": payment.amount, "currency": payment.currency,
                "paid_at": iso(payment.paid_at), "source": payment.source,
                "late": payment.late}
            refund = s.execute(select(Refund).where(Refund.out_refund_no == "R" + order_id)
                               ).scalar_one_or_none()
            data["refund"] = None if refund is None else {
                "out_refund_no": refund.out_refund_no, "provider": refund.provider,
                "amount": refund.amount, "status": refund.status,
                "attempts": refund.attempts, "last_error": refund.last_error,
                "completed_at": iso(refund.completed_at)}
            data["instructions"] = [
                {"id": i.id, "status": i.status, "deliveries": i.deliveries}
                for i in s.execute(select(Instruction).where(Instruction.order_id == order_id)
                                   ).scalars()]
            data.update(refund_summary(s, order_id))  # partial refunds (operators.py)
            data["audit"] = self._audit_rows(s, order_id)
            return data

    def _audit_rows(self, s: Session, entity_id: str) -> list[dict[str, Any]]:
        rows = s.execute(select(AuditEntry).where(AuditEntry.entity_id == entity_id)
                         .order_by(AuditEntry.id)).scalars()
        return [{"at": iso(a.at), "entity": a.entity, "from": a.from_state, "to": a.to_state,
                 "reason": a.reason, "actor": a.actor} for a in rows]

    def audit(self, entity_id: str) -> list[dict[str, Any]]:
        with self.db.read() as s:
            return self._audit_rows(s, entity_id)

    def resolve(self, order_id: str, decision: str, note: str = "") -> dict[str, Any]:
        """An operator settles a needs_review order: ``delivered`` or ``refund``."""
        if decision not in ("delivered", "refund"):
            raise ApiError(422, "bad_decision", "decision is delivered or refund")
        effects = _Effects()
        with self.db.tx() as s:
            order = self._lock_order(s, order_id)
            if order is None:
                raise ApiError(404, "unknown_order")
            if order.state != S.NEEDS_REVIEW.value:
                raise ApiError(409, "not_in_review", f"order is {order.state}",
                               state=order.state)
            if decision == "delivered":
                self._move(s, order, S.DELIVERED, "operator", note)
                if order.code_id is not None:
                    code = s.get(Code, order.code_id)
                    if code is not None:
                        self._code_state(s, code, "consumed", "operator", note or "resolved")
                        code.used_at = self.clock.now()
            else:
                self._refund_by_operator(s, order, note, effects)
        self._after(effects)
        return self.get_order(order_id)

    def operator_refund(self, order_id: str, note: str = "") -> dict[str, Any]:
        """Refund a paid order whose machine never took it (or one in review)."""
        effects = _Effects()
        with self.db.tx() as s:
            order = self._lock_order(s, order_id)
            if order is None:
                raise ApiError(404, "unknown_order")
            if order.state not in (S.PAID.value, S.NEEDS_REVIEW.value):
                raise ApiError(409, "not_refundable", f"order is {order.state}",
                               state=order.state)
            for ins in s.execute(select(Instruction).where(
                    Instruction.order_id == order.id, Instruction.status == "pending")
                    ).scalars():
                self._audit(s, "instruction", ins.id, ins.status, "cancelled",
                            "order refunded by an operator", "operator")
                ins.status = "cancelled"
            self._refund_by_operator(s, order, note, effects)
        self._after(effects)
        return self.get_order(order_id)

    def _refund_by_operator(self, s: Session, order: Order, note: str,
                            effects: _Effects) -> None:
        self._move(s, order, S.REFUNDING, "operator", note)
        paid = s.execute(select(Payment.amount).where(Payment.order_id == order.id)).scalar()
        effects.refunds.append(self._new_refund(
            s, order, paid if paid is not None else order.amount, note or "operator refund"))
