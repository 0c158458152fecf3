"""Cash and card sales the machine made on its own (a locked sale path)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from vendhw.server.models import (
    Machine,
    Order,
    Payment,
    Product,
    Slot,
)
from vendhw.server.service.core import (
    CASH_PROVIDER,
    MACHINE_METHODS,
    MAX_AMOUNT,
    BackendCore,
    S,
    order_json,
)
from vendhw.server.service.errors import ApiError
from vendhw.server.states import (
    OUTCOMES,
)


class SalesMixin(BackendCore):
    """Cash and card sales the machine made on its own (a locked sale path)."""

    def record_cash_sale(self, machine_id: str, reference: str, slot: str, amount: int,
                         outcome: str, details: Mapping[str, Any] | None = None,
                         method: str = CASH_PROVIDER) -> dict[str, Any]:
        """Book a sale the machine made with cash it took itself, after the dispense.

        Cash needs no approval: the machine spends the customer's inserted credit, vends, and
        reports here through its outbox. The order id derives from the machine and its
        ``reference``, so a repeated report finds the same order. A definite failure is
        "refunded" at once: the machine already gave the credit back to the customer.
        ``method="card"`` books a sale paid at the machine's own card reader the same way
        (a failure was refunded by the reader itself, told VEND FAILURE).
        """
        if method not in MACHINE_METHODS:
            raise ApiError(422, "bad_method", f"method must be one of {sorted(MACHINE_METHODS)}")
        if outcome not in OUTCOMES:
            raise ApiError(422, "bad_outcome", f"outcome must be one of {sorted(OUTCOMES)}")
        if (isinstance(amount, bool) or not isinstance(amount, int)
                or not 0 <= amount <= MAX_AMOUNT or not reference):
            raise ApiError(422, "bad_sale", "a cash sale needs a reference and an amount "
                           f"of 0..{MAX_AMOUNT} minor units")
        try:
            return self._record_cash_sale(machine_id, reference, slot, amount, outcome, details,
                                          method)
        except IntegrityError:  # the same sale booked at this instant by another request
            return self._record_cash_sale(machine_id, reference, slot, amount, outcome, details,
                                          method)

    def _record_cash_sale(self, machine_id: str, reference: str, slot: str, amount: int,
                          outcome: str, details: Mapping[str, Any] | None,
                          method: str) -> dict[str, Any]:
        order_id = "vc" + hashlib.sha256(f"{machine_id}:{reference}".encode()).hexdigest()[:24]
        actor = f"machine:{machine_id}"
        now = self.clock.now()
        with self.db.tx() as s:
            existing = self._lock_order(s, order_id)
            if existing is not None:
                if existing.outcome not in (None, outcome):
                    raise ApiError(409, "outcome_conflict", f"sale already reported "
                                   f"{existing.outcome}", state=existing.state)
                return order_json(existing)
            row = s.execute(select(Slot, Product).join(Product, Slot.product_id == Product.id)
                            .where(Slot.machine_id == machine_id, Slot.slot == str(slot))
                            ).first()
            if row is None:
                raise ApiError(404, "unknown_slot", f"machine {machine_id} sells nothing "
                               f"in slot {slot!r}")
            slot_row, product = row
            machine = s.get(Machine, machine_id)
            assert machine is not None
            order = Order(id=order_id, machine_id=machine_id, slot=slot_row.slot,
                          product_id=product.id, product_name=product.name, amount=amount,
                          currency=machine.currency, kind=method, provider=method,
                          state=S.CREATED.value, created_at=now, updated_at=now,
                          expires_at=now)
            s.add(order)
            s.add(Payment(order_id=order_id, provider=method, transaction_id=reference,
                          amount=amount, currency=machine.currency, paid_at=now,
                          source="machine"))
            self._audit(s, "order", order_id, None, S.CREATED.value,
                        f"{method} sale {reference} for slot {slot_row.slot}", actor)
            self._move(s, order, S.PAID, actor,
                       f"{amount} in cash taken by the machine" if method == CASH_PROVIDER
                       else f"{amount} paid by card at the machine's reader")
            self._move(s, order, S.DISPENSING, actor,
                       "the machine vended on its own cash" if method == CASH_PROVIDER
                       else "the machine vended after the reader approved")
        return self.report_result(machine_id, order_id, outcome, details)
