"""Dispense results the machine reports."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select

from vendhw.server.models import (
    Code,
    Instruction,
    Payment,
)
from vendhw.server.service.core import (
    BackendCore,
    S,
    _Effects,
    crash_point,
    order_json,
)
from vendhw.server.service.errors import ApiError
from vendhw.server.states import (
    DELIVERED_OUTCOME,
    FAILURE_OUTCOMES,
    OUTCOMES,
    UNKNOWN_OUTCOME,
)


class ResultsMixin(BackendCore):
    """Dispense results the machine reports."""

    def report_result(self, machine_id: str, order_id: str, outcome: str,
                      details: Mapping[str, Any] | None = None,
                      instruction_id: str | None = None) -> dict[str, Any]:
        """Delivered -> delivered; definite failure -> refund; unknown -> needs_review."""
        if outcome not in OUTCOMES:
            raise ApiError(422, "bad_outcome", f"outcome must be one of {sorted(OUTCOMES)}")
        actor = f"machine:{machine_id}"
        effects = _Effects()
        with self.db.tx() as s:
            order = self._lock_order(s, order_id)
            if order is None or order.machine_id != machine_id:
                raise ApiError(404, "unknown_order")
            if order.outcome is not None:
                if order.outcome == outcome:
                    return order_json(order)
                raise ApiError(409, "outcome_conflict", f"order already reported "
                               f"{order.outcome}", state=order.state, outcome=order.outcome)
            if order.state == S.PAID.value:
                for ins in s.execute(select(Instruction).where(
                        Instruction.order_id == order.id, Instruction.status == "pending")
                        ).scalars():
                    ins.status = "acked"
                    ins.acked_at = self.clock.now()
                    self._audit(s, "instruction", ins.id, "pending", "acked",
                                "implied by the result report", actor)
                self._move(s, order, S.DISPENSING, actor, "implied by the result report")
            if order.state != S.DISPENSING.value:
                raise ApiError(409, "not_dispensing", f"order is {order.state}",
                               state=order.state)
            order.outcome = outcome
            order.outcome_details = dict(details or {}) or None
            note = f"outcome {outcome}" + (f" ({instruction_id})" if instruction_id else "")
            code = s.get(Code, order.code_id) if order.code_id is not None else None
            if outcome == DELIVERED_OUTCOME:
                self._move(s, order, S.DELIVERED, actor, note)
                if code is not None:
                    self._code_state(s, code, "consumed", actor, f"delivered {order.id}")
                    code.used_at = self.clock.now()
            elif outcome == UNKNOWN_OUTCOME:
                self._move(s, order, S.NEEDS_REVIEW, actor, note)
            else:
                assert outcome in FAILURE_OUTCOMES
                self._move(s, order, S.REFUNDING, actor, note)
                paid = s.execute(select(Payment.amount).where(Payment.order_id == order.id)
                                 ).scalar()
                effects.refunds.append(self._new_refund(
                    s, order, paid if paid is not None else order.amount,
                    f"dispense failed: {outcome}"))
            data = order_json(order)
            if not effects.refunds:  # else the answer is the order after its refund ran
                self._answer(s, 200, data)
        crash_point("backend:reported")
        self._after(effects)
        if effects.refunds:
            data = self.get_order(order_id)
        return data
