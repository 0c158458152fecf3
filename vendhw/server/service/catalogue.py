"""Products, machines, slots and prices: loading and serving the catalogue."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, select

from vendhw.errors import ConfigurationError
from vendhw.server.models import (
    Machine,
    Product,
    Slot,
)
from vendhw.server.service.core import (
    MAX_AMOUNT,
    MIN_SECRET_LENGTH,
    BackendCore,
    iso,
)
from vendhw.server.service.errors import ApiError


class CatalogueMixin(BackendCore):
    """Products, machines, slots and prices: loading and serving the catalogue."""

    def load_catalogue(self, doc: Mapping[str, Any]) -> dict[str, int]:
        """Upsert products and machines (with their whole slot lists) from one document.

        ``{"currency": "CNY", "products": [{"id", "name", "price"}], "machines": [{"id",
        "secret", "name", "currency", "slots": [{"slot", "product", "price"}]}]}``; a
        machine listed here gets exactly the slots listed (others are removed).
        """
        if not isinstance(doc, Mapping):
            raise ConfigurationError("the catalogue must be a JSON object")
        currency = str(doc.get("currency", "CNY")).upper()
        products = doc.get("products", [])
        machines = doc.get("machines", [])
        if not isinstance(products, list) or not isinstance(machines, list):
            raise ConfigurationError("'products' and 'machines' must be lists")
        now = self.clock.now()
        counts = {"products": 0, "machines": 0, "slots": 0}
        with self.db.tx() as s:
            for item in products:
                pid = _required(item, "id", "product")
                product = s.get(Product, pid) or Product(id=pid, name=pid)
                product.name = str(item.get("name", product.name))
                if item.get("price") is not None:
                    product.price = _price(item["price"], f"product {pid}")
                if "image_url" in item:
                    product.image_url = _image_url(item["image_url"], f"product {pid}")
                s.add(product)
                counts["products"] += 1
            s.flush()
            for item in machines:
                mid = _required(item, "id", "machine")
                machine = s.get(Machine, mid)
                secret = item.get("secret")
                if machine is None:
                    if not secret:
                        raise ConfigurationError(f"machine {mid}: a new machine needs a secret")
                    machine = Machine(id=mid, secret="", created_at=now)
                if secret:
                    self._secrets.pop(mid, None)
                    if len(str(secret)) < MIN_SECRET_LENGTH:
                        raise ConfigurationError(
                            f"machine {mid}: the secret needs {MIN_SECRET_LENGTH}+ characters")
                    machine.secret = str(secret)
                machine.name = str(item.get("name", machine.name or ""))
                machine.currency = str(item.get("currency", machine.currency or currency)
                                       ).upper()
                s.add(machine)
                counts["machines"] += 1
                if "slots" in item:
                    s.flush()
                    s.execute(delete(Slot).where(Slot.machine_id == mid))
                    for slot_item in item["slots"]:
                        slot = _required(slot_item, "slot", f"machine {mid} slot")
                        pid = _required(slot_item, "product", f"machine {mid} slot {slot}")
                        slot_product = s.get(Product, pid)
                        if slot_product is None:
                            raise ConfigurationError(
                                f"machine {mid} slot {slot}: unknown product {pid!r}")
                        raw_price = slot_item.get("price")
                        if raw_price is None:
                            raw_price = slot_product.price
                        if raw_price is None:
                            raise ConfigurationError(
                                f"machine {mid} slot {slot}: no price (slot or product)")
                        s.add(Slot(machine_id=mid, slot=slot, product_id=pid,
                                   price=_price(raw_price, f"slot {slot}"),
                                   enabled=bool(slot_item.get("enabled", True))))
                        counts["slots"] += 1
        return counts

    def catalogue(self, machine_id: str) -> dict[str, Any]:
        """What a machine sells: its slots with product names and prices."""
        with self.db.read() as s:
            machine = s.get(Machine, machine_id)
            if machine is None:
                raise ApiError(404, "unknown_machine")
            rows = s.execute(select(Slot, Product).join(Product, Slot.product_id == Product.id)
                             .where(Slot.machine_id == machine_id).order_by(Slot.slot)).all()
            return {"machine_id": machine_id, "currency": machine.currency,
                    "code_digits": self.settings.code_digits, "slots": [
                {"slot": slot.slot, "product_id": product.id, "product_name": product.name,
                 "price": slot.price, "enabled": slot.enabled,
                 **({"image_url": product.image_url} if product.image_url else {})}
                for slot, product in rows]}

    def machines(self) -> list[dict[str, Any]]:
        with self.db.read() as s:
            rows = s.execute(select(Machine).order_by(Machine.id)).scalars().all()
            return [{"id": m.id, "name": m.name, "currency": m.currency,
                     "last_seen": iso(m.last_seen), "online": self.hub.waiting(m.id) > 0}
                    for m in rows]

    def last_seen(self, machine_id: str) -> float | None:
        """Unix time of the machine's last signed request (updated every few seconds)."""
        with self.db.read() as s:
            return s.execute(select(Machine.last_seen).where(Machine.id == machine_id)
                             ).scalar()


def _required(item: Any, key: str, what: str) -> str:
    if not isinstance(item, Mapping) or not item.get(key):
        raise ConfigurationError(f"{what}: missing {key!r} in {json.dumps(item)[:80]}")
    return str(item[key])


def _image_url(value: Any, what: str) -> str | None:
    """A product picture's address: an http(s) URL of at most 500 characters, or null/""
    (no picture)."""
    from urllib.parse import urlsplit

    if value is None or value == "":
        return None
    parts = urlsplit(value) if isinstance(value, str) else None
    if (parts is None or parts.scheme not in ("http", "https") or not parts.netloc
            or len(value) > 500 or any(c.isspace() for c in value)):
        raise ConfigurationError(f"{what}: image_url must be an http:// or https:// address "
                                 f"of at most 500 characters, got {str(value)[:80]!r}")
    return str(value)


def _price(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_AMOUNT:
        raise ConfigurationError(f"{what}: price must be an integer of minor units (fen/cents)"
                                 f" from 0 to {MAX_AMOUNT}, got {value!r}")
    return value

