"""What operators do to a running fleet, beside :class:`Backend`: partial refunds, code lists
and revocation, a machine's state, and order exports.

:class:`Operators` wraps a :class:`Backend` (same database, same locks, same refund loop):
nothing here moves an order through the state machine, so :mod:`vendhw.server.states` is
untouched.

Partial refunds keep the order ``delivered``. A partial refund is money handed back for a
sale that happened (a product past its date, a short measure); the goods did leave the
machine, which is what the state says, and ``delivered`` is final for the machine, the
query loop and reports. The order instead carries its refunds: one row each (id, amount,
status, reason, operator) and the totals ``refunded`` / ``refund_pending``. Each refund has
its own audit trail (entity ``refund``, id ``out_refund_no``), as the whole refund has.
Whole refunds (``orders refund`` / ``resolve --refund`` / failed dispenses) still move the
order to ``refunding`` -> ``refunded`` and are only possible before delivery, so the two never
meet on one order.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from vendhw.server import codes as codemod
from vendhw.server.models import (
    Code,
    Instruction,
    Machine,
    Order,
    Payment,
    Product,
    Refund,
    Slot,
)
from vendhw.server.service import MAX_AMOUNT, ApiError, Backend, _Effects, iso
from vendhw.server.states import FINAL_STATES, OrderState

S = OrderState
ONLINE_WINDOW_S = 60.0
"""A machine seen this recently is online (it long-polls every <= 25 s; last_seen is written
at most every 5 s). Another process (the CLI) cannot see the server's open long polls."""
MAX_REASON = 200
MAX_REQUEST_KEY = 64
EXPORT_COLUMNS = ("id", "created_at", "updated_at", "machine_id", "slot", "product_id",
                  "product_name", "kind", "provider", "state", "outcome", "currency", "amount",
                  "paid", "refunded", "refund_pending", "paid_at", "transaction_id")
"""The CSV header; money columns are major units ("3.50"), times ISO 8601 UTC."""


def money(amount: int | None, currency: str = "") -> str:
    """``350, "CNY"`` -> ``"3.50 CNY"``; minor units are hundredths (CNY, USD, EUR)."""
    if amount is None:
        return ""
    sign = "-" if amount < 0 else ""
    text = f"{sign}{abs(amount) // 100}.{abs(amount) % 100:02d}"
    return f"{text} {currency}" if currency else text


def parse_money(text: str) -> int:
    """``"1.50"`` / ``"1.5"`` / ``"2"`` -> minor units; anything else is a ValueError with a
    sentence for the operator."""
    try:
        if "_" in text:
            raise InvalidOperation
        value = Decimal(text.strip())
    except (InvalidOperation, AttributeError):
        raise ValueError(f"not an amount: {text!r} (use major units, e.g. 1.50)") from None
    if not value.is_finite() or value <= 0:
        raise ValueError(f"the amount must be positive: {text!r}")
    minor = value * 100
    if minor != minor.to_integral_value():
        raise ValueError(f"at most two decimals: {text!r}")
    if minor > MAX_AMOUNT:
        raise ValueError(f"too large: {text!r}")
    return int(minor)


def _whole_refund_no(order_id: str) -> str:
    return "R" + order_id


def refund_json(refund: Refund) -> dict[str, Any]:
    """One refund as operators see it (money in minor units, like orders)."""
    return {
        "id": refund.id, "order_id": refund.order_id, "out_refund_no": refund.out_refund_no,
        "kind": "whole" if refund.out_refund_no == _whole_refund_no(refund.order_id)
        else "partial",
        "amount": refund.amount, "total": refund.total, "currency": refund.currency,
        "status": refund.status, "reason": refund.reason, "operator": refund.operator,
        "provider": refund.provider, "attempts": refund.attempts,
        "last_error": refund.last_error, "created_at": iso(refund.created_at),
        "completed_at": iso(refund.completed_at)}


def refund_summary(s: Session, order_id: str) -> dict[str, Any]:
    """``refunds`` (every row), ``refunded`` (succeeded) and ``refund_pending`` (asked, not
    yet confirmed) of one order, in minor units: added to the order's detail."""
    rows = s.execute(select(Refund).where(Refund.order_id == order_id)
                     .order_by(Refund.id)).scalars().all()
    return {"refunds": [refund_json(r) for r in rows],
            "refunded": sum(r.amount for r in rows if r.status == "succeeded"),
            "refund_pending": sum(r.amount for r in rows if r.status != "succeeded")}


class Operators:
    """Operator actions over one :class:`Backend` (HTTP routes and the CLI share them)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.db = backend.db

    # --- partial refunds -----------------------------------------------------------------

    def refund_part(self, order_id: str, amount: int, reason: str = "", *,
                    operator: str = "operator", request_key: str | None = None
                    ) -> dict[str, Any]:
        """Refund ``amount`` (minor units) of a delivered, provider-paid order.

        The order row is locked (as for every refund), so two operators refunding at once
        are serialised and the refunds of an order never add up to more than was paid
        (pending ones count). ``request_key``: a retried request (same key, same amount)
        gets the first refund back instead of a second one.
        """
        if isinstance(amount, bool) or not isinstance(amount, int) \
                or not 0 < amount <= MAX_AMOUNT:
            raise ApiError(422, "bad_amount", f"amount is 1..{MAX_AMOUNT} minor units")
        reason = reason.strip()
        if len(reason) > MAX_REASON:
            raise ApiError(422, "bad_reason", f"a reason is at most {MAX_REASON} characters")
        if request_key is not None and not 0 < len(request_key) <= MAX_REQUEST_KEY:
            raise ApiError(422, "bad_request_key",
                           f"a request key is 1..{MAX_REQUEST_KEY} characters")
        operator = (operator or "operator").strip()[:80] or "operator"
        backend = self.backend
        effects = _Effects()
        now = backend.clock.now()
        with self.db.tx() as s:
            order = backend._lock_order(s, order_id)
            if order is None:
                raise ApiError(404, "unknown_order", f"no order {order_id!r}")
            if request_key is not None:
                earlier = s.execute(select(Refund).where(
                    Refund.order_id == order_id, Refund.request_key == request_key)
                    ).scalar_one_or_none()
                if earlier is not None:
                    if earlier.amount != amount:
                        done = money(earlier.amount, earlier.currency)
                        raise ApiError(409, "request_key_reused", f"request key {request_key!r}"
                                       f" already refunded {done} of this order",
                                       refund=refund_json(earlier))
                    return refund_json(earlier)
            if order.state != S.DELIVERED.value:
                raise ApiError(409, "not_partially_refundable", f"order is {order.state}: "
                               "only delivered orders are refunded in part (a paid or "
                               "needs_review order is refunded whole: orders refund/resolve)",
                               state=order.state)
            payment = s.execute(select(Payment).where(Payment.order_id == order_id)
                                ).scalar_one_or_none()
            if order.kind != "qr" or payment is None:
                raise ApiError(409, "not_partially_refundable",
                               f"a {order.kind} order has no provider payment to refund",
                               state=order.state)
            asked = s.execute(select(func.coalesce(func.sum(Refund.amount), 0), func.count())
                              .where(Refund.order_id == order_id)).one()
            already, count = int(asked[0]), int(asked[1])
            left = payment.amount - already
            if amount > left:
                raise ApiError(409, "refund_exceeds_payment",
                               f"{money(amount, payment.currency)} asked, "
                               f"{money(left, payment.currency)} of "
                               f"{money(payment.amount, payment.currency)} left to refund",
                               paid=payment.amount, refunded=already, left=left)
            refund = Refund(order_id=order.id, out_refund_no=f"R{order.id}_{count + 1}",
                            provider=order.provider, amount=amount, total=payment.amount,
                            currency=payment.currency,
                            reason=reason or "partial refund", status="pending",
                            next_attempt_at=now, created_at=now, operator=operator,
                            request_key=request_key)
            s.add(refund)
            s.flush()
            backend._audit(s, "refund", refund.out_refund_no, None, "pending",
                           f"partial refund {money(amount, refund.currency)} of order "
                           f"{order.id} ({money(already + amount, refund.currency)} of "
                           f"{money(payment.amount, refund.currency)} refunded in all)"
                           + (f": {reason}" if reason else ""), f"operator:{operator}")
            refund_id = refund.id
            effects.refunds.append(refund_id)
        backend._after(effects)  # first attempt now; the background loop retries
        return self.refund(refund_id)

    def refund(self, refund_id: int) -> dict[str, Any]:
        with self.db.read() as s:
            refund = s.get(Refund, refund_id)
            if refund is None:
                raise ApiError(404, "unknown_refund")
            return refund_json(refund)

    def list_refunds(self, order_id: str | None = None, status: str | None = None,
                     limit: int = 100) -> list[dict[str, Any]]:
        with self.db.read() as s:
            query = select(Refund).order_by(Refund.created_at.desc(), Refund.id.desc())
            if order_id:
                query = query.where(Refund.order_id == order_id)
            if status:
                query = query.where(Refund.status == status)
            return [refund_json(r) for r in s.execute(query.limit(limit)).scalars()]

    # --- codes (list and revoke: Backend.list_codes / revoke_code) ----------------------

    def find_code(self, code: str) -> int | None:
        """The id of the code whose digits these are (spaces and dashes ignored), or None."""
        code = codemod.normalize(code)
        if not (code.isascii() and code.isdigit()):
            return None
        with self.db.read() as s:
            candidates = s.execute(select(Code.id, Code.code_hash).where(
                Code.selector == codemod.selector(code))).all()
        return codemod.find_match(code, [(r[0], r[1]) for r in candidates])

    def batch_code_ids(self, batch_id: str) -> list[int]:
        """The ids of one ``codes create`` batch (empty: no such batch)."""
        with self.db.read() as s:
            return list(s.execute(select(Code.id).where(Code.batch_id == batch_id)
                                  .order_by(Code.id)).scalars())

    def revoke_batch(self, batch_id: str, note: str = "") -> list[dict[str, Any]]:
        """:meth:`Backend.revoke_code` for every code of a batch, one transaction each: the
        codes in a running vend or used are reported (``error``), the others revoked."""
        ids = self.batch_code_ids(batch_id)
        if not ids:
            raise ApiError(404, "unknown_batch", f"no codes in batch {batch_id!r}")
        results: list[dict[str, Any]] = []
        for code_id in ids:
            try:
                results.append(self.backend.revoke_code(code_id, note))
            except ApiError as exc:
                results.append({"id": code_id, "error": exc.code, "detail": exc.detail})
        return results

    # --- machines ------------------------------------------------------------------------

    def machines(self) -> list[dict[str, Any]]:
        """:meth:`Backend.machines` plus online (long poll open here, or seen within
        :data:`ONLINE_WINDOW_S`), ``seen_ago_s`` and what each machine holds."""
        rows = self.backend.machines()
        now = self.backend.clock.now()
        with self.db.read() as s:
            seen = dict(s.execute(select(Machine.id, Machine.last_seen)).all())
            pending = dict(s.execute(select(Instruction.machine_id, func.count()).where(
                Instruction.status == "pending").group_by(Instruction.machine_id)).all())
            open_orders = dict(s.execute(select(Order.machine_id, func.count()).where(
                Order.state.not_in(_closed_states())).group_by(Order.machine_id)).all())
            slots = dict(s.execute(select(Slot.machine_id, func.count()).where(
                Slot.enabled.is_(True)).group_by(Slot.machine_id)).all())
        for row in rows:
            last = seen.get(row["id"])
            row["online"] = bool(row["online"]) or (
                last is not None and now - last <= ONLINE_WINDOW_S)
            row["seen_ago_s"] = None if last is None else round(max(0.0, now - last), 1)
            row["pending_instructions"] = int(pending.get(row["id"], 0))
            row["open_orders"] = int(open_orders.get(row["id"], 0))
            row["slots"] = int(slots.get(row["id"], 0))
        return rows

    def machine(self, machine_id: str) -> dict[str, Any]:
        """One machine: the list's keys plus its slots, pending instructions, open orders
        and reserved codes."""
        found = [m for m in self.machines() if m["id"] == machine_id]
        if not found:
            raise ApiError(404, "unknown_machine", f"no machine {machine_id!r}")
        data = found[0]
        with self.db.read() as s:
            data["slot_list"] = [
                {"slot": sl.slot, "product_id": p.id, "product_name": p.name,
                 "price": sl.price, "enabled": sl.enabled}
                for sl, p in s.execute(select(Slot, Product).join(
                    Product, Slot.product_id == Product.id).where(
                    Slot.machine_id == machine_id).order_by(Slot.slot)).all()]
            data["instructions"] = [
                {"id": i.id, "type": i.type, "order_id": i.order_id,
                 "deliveries": i.deliveries, "created_at": iso(i.created_at)}
                for i in s.execute(select(Instruction).where(
                    Instruction.machine_id == machine_id, Instruction.status == "pending")
                    .order_by(Instruction.created_at)).scalars()]
            data["orders"] = [
                {"id": o.id, "state": o.state, "slot": o.slot, "amount": o.amount,
                 "currency": o.currency, "kind": o.kind, "created_at": iso(o.created_at)}
                for o in s.execute(select(Order).where(
                    Order.machine_id == machine_id, Order.state.not_in(_closed_states()))
                    .order_by(Order.created_at)).scalars()]
            data["reserved_codes"] = [
                {"id": c.id, "order_id": c.order_id}
                for c in s.execute(select(Code).where(
                    Code.reserved_by == machine_id, Code.status == "reserved")).scalars()]
        return data

    # --- orders export -------------------------------------------------------------------

    def export_orders(self, since: float | None = None, until: float | None = None,
                      state: str | None = None, machine_id: str | None = None,
                      limit: int | None = None, batch: int = 500
                      ) -> Iterator[dict[str, Any]]:
        """Orders created in ``[since, until)``, oldest first, with payment and refund
        totals (minor units); read in batches so a large export does not hold the database."""
        if state is not None and state not in {s.value for s in OrderState}:
            raise ApiError(422, "bad_state", "state is one of "
                           + ", ".join(s.value for s in OrderState))
        after: tuple[float, str] | None = None
        left = limit
        while left is None or left > 0:
            size = batch if left is None else min(batch, left)
            with self.db.read() as s:
                query = select(Order, Payment).outerjoin(
                    Payment, Payment.order_id == Order.id).order_by(
                    Order.created_at, Order.id).limit(size)
                if machine_id:
                    query = query.where(Order.machine_id == machine_id)
                if since is not None:
                    query = query.where(Order.created_at >= since)
                if until is not None:
                    query = query.where(Order.created_at < until)
                if state:
                    query = query.where(Order.state == state)
                if after is not None:
                    query = query.where(or_(Order.created_at > after[0],
                                            (Order.created_at == after[0])
                                            & (Order.id > after[1])))
                rows = s.execute(query).all()
                ids = [o.id for o, _ in rows]
                refunds: dict[str, list[tuple[int, str]]] = {}
                for oid, amount, status in s.execute(select(
                        Refund.order_id, Refund.amount, Refund.status).where(
                        Refund.order_id.in_(ids))).all():
                    refunds.setdefault(oid, []).append((amount, status))
            for order, payment in rows:
                done = refunds.get(order.id, [])
                yield {
                    "id": order.id, "created_at": iso(order.created_at),
                    "updated_at": iso(order.updated_at), "machine_id": order.machine_id,
                    "slot": order.slot, "product_id": order.product_id,
                    "product_name": order.product_name, "kind": order.kind,
                    "provider": order.provider, "state": order.state,
                    "outcome": order.outcome, "currency": order.currency,
                    "amount": order.amount,
                    "paid": None if payment is None else payment.amount,
                    "refunded": sum(a for a, st in done if st == "succeeded"),
                    "refund_pending": sum(a for a, st in done if st != "succeeded"),
                    "paid_at": None if payment is None else iso(payment.paid_at),
                    "transaction_id": None if payment is None else payment.transaction_id}
            if len(rows) < size:
                return
            left = None if left is None else left - len(rows)
            after = (rows[-1][0].created_at, rows[-1][0].id)


def _closed_states() -> list[str]:
    return [s.value for s in FINAL_STATES]


def csv_rows(orders: Iterator[Mapping[str, Any]]) -> Iterator[str]:
    """The export as CSV text, header first: money in major units ("3.50"), the currency in
    its own column, ISO 8601 UTC times, empty cells for what does not apply."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    yield buffer.getvalue()
    for row in orders:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow([
            money(row[c]) if c in ("amount", "paid", "refunded", "refund_pending")
            else ("" if row[c] is None else row[c]) for c in EXPORT_COLUMNS])
        yield buffer.getvalue()


__all__ = ["EXPORT_COLUMNS", "ONLINE_WINDOW_S", "Operators", "csv_rows", "money",
           "parse_money", "refund_json", "refund_summary"]
