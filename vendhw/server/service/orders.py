"""Orders: create, read and cancel."""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import select

from vendhw.server.models import (
    Machine,
    Order,
    Product,
    Slot,
)
from vendhw.server.providers import (
    OrderInfo,
    ProviderError,
)
from vendhw.server.service.core import (
    BackendCore,
    S,
    _Effects,
    crash_point,
    order_json,
)
from vendhw.server.service.errors import ApiError


class OrdersMixin(BackendCore):
    """Orders: create, read and cancel."""

    def create_order(self, machine_id: str, slot: str, provider: str | None = None
                     ) -> dict[str, Any]:
        """Order the product of ``slot`` and get its payment QR (state awaiting_payment)."""
        name = provider or self.settings.provider
        chosen = self.providers.get(name)
        if chosen is None:
            raise ApiError(422, "unknown_provider",
                           f"provider {name!r} is not enabled here: {sorted(self.providers)}")
        now = self.clock.now()
        actor = f"machine:{machine_id}"
        with self.db.read() as s:
            self._refuse_replay(s)
            row = s.execute(select(Slot, Product).join(Product, Slot.product_id == Product.id)
                            .where(Slot.machine_id == machine_id, Slot.slot == str(slot))
                            ).first()
            if row is None or not row[0].enabled:
                raise ApiError(404, "unknown_slot", f"machine {machine_id} sells nothing "
                               f"in slot {slot!r}")
            slot_row, product = row
            currency = s.execute(select(Machine.currency).where(Machine.id == machine_id)
                                 ).scalar_one()
            order = Order(
                id="vo" + secrets.token_hex(12), machine_id=machine_id, slot=slot_row.slot,
                product_id=product.id, product_name=product.name, amount=slot_row.price,
                currency=currency, kind="qr", provider=name,
                state=S.CREATED.value, created_at=now, updated_at=now,
                expires_at=now + self.settings.order_ttl)
        info = OrderInfo(order.id, order.amount, order.currency, order.product_name,
                         order.expires_at)
        # The provider first, then one transaction for the order, its QR, the request's
        # nonce and Idempotency-Key and the answer. The QR reaches nobody before that
        # transaction commits, so nobody can pay an order that does not exist yet; a
        # process dying in between leaves an unused trade at the provider, nothing here.
        try:
            qr = chosen.create_qr(info)
        except ProviderError as exc:
            with self.db.tx() as s:
                s.add(order)
                self._audit(s, "order", order.id, None, S.CREATED.value,
                            f"order for slot {order.slot}", actor)
                self._move(s, order, S.CANCELLED, f"provider:{name}", str(exc))
            raise ApiError(502, "provider_error", str(exc)) from exc
        with self.db.tx() as s:
            self._claim_key(s)
            order.qr_text = qr.qr_text
            s.add(order)
            self._audit(s, "order", order.id, None, S.CREATED.value,
                        f"order for slot {order.slot}", actor)
            self._move(s, order, S.AWAITING_PAYMENT, f"provider:{name}")
            order.next_query_at = min(now + self.settings.query_interval, order.expires_at)
            data = order_json(order)
            self._answer(s, 201, data)
        crash_point("backend:order-created")
        return data

    def get_order(self, order_id: str, machine_id: str | None = None) -> dict[str, Any]:
        with self.db.read() as s:
            order = s.get(Order, order_id)
            if order is None or (machine_id is not None and order.machine_id != machine_id):
                raise ApiError(404, "unknown_order")
            return order_json(order)

    def cancel_order(self, machine_id: str, order_id: str) -> dict[str, Any]:
        """The machine gives up on an unpaid order (customer walked away, pressed cancel)."""
        effects = _Effects()
        with self.db.tx() as s:
            order = self._lock_order(s, order_id)
            if order is None or order.machine_id != machine_id:
                raise ApiError(404, "unknown_order")
            if order.state == S.AWAITING_PAYMENT.value:
                self._move(s, order, S.CANCELLED, f"machine:{machine_id}")
                self._watch_late(order)
                effects.close.append((order.provider, order.id))
            elif order.state != S.CANCELLED.value:
                raise ApiError(409, "not_cancellable",
                               f"order is {order.state}; only unpaid orders can be cancelled",
                               state=order.state)
            data = order_json(order)
        self._after(effects)
        return data

    def _watch_late(self, order: Order) -> None:
        now = self.clock.now()
        order.watch_until = now + self.settings.late_window
        order.next_query_at = now + self.settings.query_interval
