"""The backend's logic, free of HTTP: orders, payments, codes, instructions, refunds.

Every method is synchronous and runs its own short transactions through
:meth:`Database.tx`; provider calls (network) happen between transactions, never inside
one. Each order row is locked (``FOR UPDATE``; on SQLite the whole database is, by
``BEGIN IMMEDIATE``) before it moves, so a notification, the query loop, the machine and an
operator can race freely and a paid order still ships exactly once: the unique payment row
per order and the state table decide, not timing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import httpx
from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from vendhw.contract import signing
from vendhw.errors import ConfigurationError, VendhwError
from vendhw.server import codes as codemod
from vendhw.server.db import Database
from vendhw.server.models import (
    AuditEntry,
    Code,
    CodeAttempt,
    IdempotentResponse,
    Instruction,
    Machine,
    Nonce,
    Order,
    Payment,
    Product,
    Refund,
    Slot,
)
from vendhw.server.pgnotify import PgDoorbell, doorbell_for, notify_in
from vendhw.server.providers import (
    NotificationError,
    NotificationReply,
    OrderInfo,
    PaymentEvent,
    PaymentProvider,
    ProviderError,
    RefundEvent,
    RefundRequest,
    RefundResult,
    RefundState,
    TradeStatus,
    build_providers,
)
from vendhw.server.providers.sandbox import SandboxProvider
from vendhw.server.push import PushHub
from vendhw.server.settings import Clock, ServerSettings, SystemClock, parse_duration
from vendhw.server.states import (
    DELIVERED_OUTCOME,
    FAILURE_OUTCOMES,
    OUTCOMES,
    UNKNOWN_OUTCOME,
    OrderState,
    check_transition,
)

CASH_PROVIDER = "cash"
"""The provider name of sales paid in cash at the machine (no payment provider involved)."""
CARD_PROVIDER = "card"
"""The provider name of sales paid by card at the machine's own cashless reader (MDB)."""
MACHINE_METHODS = {CASH_PROVIDER: "the machine returned the cash to the customer's credit",
                   CARD_PROVIDER: "the card reader refunded the card (VEND FAILURE)"}
"""Payment methods the machine settles itself, and what a refund of one means."""

log = logging.getLogger(__name__)

S = OrderState
MIN_SECRET_LENGTH = 16
SECRET_CACHE_S = 10.0
LAST_SEEN_EVERY_S = 5.0
MAX_CODE_VALIDITY = 10 * 365 * 86400.0
CODE_BATCH_CHUNK = 100
"""Codes created per transaction of an operator batch (machines queue between chunks)."""
MAX_AMOUNT = 2**31 - 1
"""Largest amount or price in minor units: the database's INTEGER (21 million CNY/USD)."""


class ApiError(VendhwError):
    """A refusal with an HTTP status and a stable, machine-readable ``code``."""

    def __init__(self, status: int, code: str, detail: str = "",
                 headers: Mapping[str, str] | None = None, **extra: Any) -> None:
        self.status = status
        self.code = code
        self.detail = detail or code.replace("_", " ")
        self.headers = dict(headers or {})
        self.extra = extra
        super().__init__(f"{status} {code}: {self.detail}")

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "detail": self.detail, **self.extra}


def iso(ts: float | None) -> str | None:
    """Unix seconds as ISO 8601 UTC with milliseconds (``...Z``), the API's time format."""
    if ts is None:
        return None
    text = datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def order_json(order: Order) -> dict[str, Any]:
    """The public shape of an order (machine and operator APIs)."""
    return {
        "id": order.id, "machine_id": order.machine_id, "slot": order.slot,
        "product_id": order.product_id, "product_name": order.product_name,
        "amount": order.amount, "currency": order.currency, "kind": order.kind,
        "provider": order.provider, "state": order.state, "qr_text": order.qr_text,
        "created_at": iso(order.created_at), "expires_at": iso(order.expires_at),
        "updated_at": iso(order.updated_at), "outcome": order.outcome,
    }


@dataclass
class _Effects:
    """What to do once a transaction has committed: ring machines, run refunds."""

    instructions: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    refunds: list[int] = field(default_factory=list)
    close: list[tuple[str, str]] = field(default_factory=list)


class Backend:
    """The reference backend: one instance per process, shared by every request."""

    def __init__(self, settings: ServerSettings, *, clock: Clock | None = None,
                 http: httpx.Client | None = None, db: Database | None = None) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.db = db or Database(settings.db_url)
        self.db.create_schema()
        self.hub = PushHub()
        self.doorbell: PgDoorbell | None = doorbell_for(self.db.url, self.hub)
        """Started with the app: rings this process's long-polls for other processes."""
        self.providers: dict[str, PaymentProvider] = build_providers(
            settings, self.db, self.clock, http)
        sandbox = self.providers.get("sandbox")
        if isinstance(sandbox, SandboxProvider):
            sandbox.deliver = self._deliver_sandbox
        self.wake_poller: Callable[[], None] = lambda: None
        """Set by the app: makes the background loop look at its queue again now."""
        self._last_purge = 0.0
        self._notify_http: httpx.Client | None = None
        self._secrets: dict[str, tuple[str, float]] = {}
        self._seen: dict[str, float] = {}

    # --- helpers -------------------------------------------------------------------------

    @property
    def sandbox(self) -> SandboxProvider | None:
        provider = self.providers.get("sandbox")
        return provider if isinstance(provider, SandboxProvider) else None

    def _deliver_sandbox(self, headers: dict[str, str], body: bytes) -> None:
        """Send a sandbox notification: over HTTP when the server listens, else in process."""
        url = self.settings.internal_url
        if url:
            if self._notify_http is None:  # one pooled client: a new one costs ~50 ms (TLS)
                self._notify_http = httpx.Client(timeout=10.0)
            try:
                self._notify_http.post(url.rstrip("/") + "/notify/sandbox", content=body,
                                       headers=headers)
            except httpx.HTTPError:
                log.warning("sandbox notification lost; the query loop will find the payment")
            return
        self.handle_notification("sandbox", headers, body)

    def _audit(self, s: Session, entity: str, entity_id: str, before: str | None, after: str,
               reason: str, actor: str) -> None:
        s.add(AuditEntry(at=self.clock.now(), entity=entity, entity_id=entity_id,
                         from_state=before, to_state=after, reason=reason, actor=actor))

    def _move(self, s: Session, order: Order, to: OrderState, actor: str,
              note: str = "") -> None:
        reason = check_transition(order.id, order.state, to)
        self._audit(s, "order", order.id, order.state, to.value,
                    reason + (f"; {note}" if note else ""), actor)
        order.state = to.value
        order.updated_at = self.clock.now()

    def _lock_order(self, s: Session, order_id: str) -> Order | None:
        return s.execute(select(Order).where(Order.id == order_id).with_for_update()
                         .execution_options(populate_existing=True)).scalar_one_or_none()

    def _backoff(self, count: int, first: float | None = None) -> float:
        first = self.settings.query_interval if first is None else first
        return float(min(first * 2 ** max(0, count - 1), max(first, self.settings.query_max)))

    def _after(self, effects: _Effects) -> None:
        """Run a committed transaction's side effects; failures are left to the poller."""
        for machine_id, payload in effects.instructions:
            self.hub.notify(machine_id, payload)
        for refund_id in effects.refunds:
            try:
                self.process_refund(refund_id)
            except Exception:
                log.exception("refund %s failed; the poller retries it", refund_id)
        for provider_name, order_id in effects.close:
            provider = self.providers.get(provider_name)
            try:
                if provider is not None:
                    provider.close(order_id)
            except ProviderError as exc:
                log.info("closing %s at %s failed: %s", order_id, provider_name, exc)
        if effects.refunds:
            self.wake_poller()

    # --- catalogue -----------------------------------------------------------------------

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
            return {"machine_id": machine_id, "currency": machine.currency, "slots": [
                {"slot": slot.slot, "product_id": product.id, "product_name": product.name,
                 "price": slot.price, "enabled": slot.enabled} for slot, product in rows]}

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

    # --- machine authentication ------------------------------------------------------------

    def authenticate(self, headers: Mapping[str, str], method: str, path: str,
                     body: bytes) -> str:
        """The machine id of a correctly signed, fresh, never-seen request; else ApiError 401."""
        parts = signing.SignedParts.from_headers(headers)
        if parts is None:
            raise ApiError(401, "unauthenticated", "missing X-Vendhw-Machine/-Timestamp/"
                           "-Nonce/-Signature headers")
        try:
            timestamp = int(parts.timestamp)
        except ValueError:
            raise ApiError(401, "bad_timestamp", "X-Vendhw-Timestamp must be unix seconds"
                           ) from None
        now = self.clock.now()
        window = self.settings.auth_window
        if abs(now - timestamp) > window:
            raise ApiError(401, "stale_timestamp",
                           f"timestamp {timestamp} is {now - timestamp:+.0f} s from the "
                           f"server's clock (window {window:.0f} s): check the machine's clock",
                           server_time=int(now))
        if not (8 <= len(parts.nonce) <= 64) or not parts.nonce.isascii():
            raise ApiError(401, "bad_nonce", "the nonce must be 8-64 ASCII characters")
        secret = self._machine_secret(parts.machine_id, refresh=False)
        if secret is None or not signing.verify(secret, parts, method, path, body):
            secret = self._machine_secret(parts.machine_id, refresh=True)  # rotated?
            if not signing.verify(secret or secrets.token_hex(16), parts, method, path, body):
                raise ApiError(401, "bad_signature", "unknown machine or wrong signature")
        try:
            with self.db.tx() as s:
                s.execute(insert(Nonce).values(machine_id=parts.machine_id, nonce=parts.nonce,
                                               expires_at=timestamp + window + 1))
                if now - self._seen.get(parts.machine_id, 0.0) > LAST_SEEN_EVERY_S:
                    s.execute(update(Machine).where(Machine.id == parts.machine_id)
                              .values(last_seen=now))
                    self._seen[parts.machine_id] = now
        except IntegrityError:
            raise ApiError(401, "replayed_nonce", "this nonce was already used") from None
        return parts.machine_id

    def _machine_secret(self, machine_id: str, *, refresh: bool) -> str | None:
        """A machine's secret, cached briefly so most requests verify without a query.

        A secret changed through this process takes effect at once; one changed by another
        process (the CLI) within SECRET_CACHE_S, or at once for a request that fails with the
        cached one.
        """
        now = self.clock.now()
        cached = self._secrets.get(machine_id)
        if cached is not None and not refresh and now - cached[1] < SECRET_CACHE_S:
            return cached[0]
        with self.db.read() as s:
            secret = s.execute(select(Machine.secret).where(Machine.id == machine_id)).scalar()
        if secret is None:
            self._secrets.pop(machine_id, None)
            return None
        self._secrets[machine_id] = (secret, now)
        return str(secret)

    def idempotent(self, machine_id: str, key: str | None, request: bytes,
                   compute: Callable[[], tuple[int, dict[str, Any]]]
                   ) -> tuple[int, dict[str, Any]]:
        """Run ``compute`` once per (machine, key); a retry gets the first answer back.

        A key reused for a different request is refused (409), and a retry that arrives while
        the first is still running is told so (409 ``request_in_progress``) instead of
        running twice. A key left "in progress" longer than ``idempotency_lease`` belongs to
        a request that died with its process (SIGKILL, power cut): the next retry takes the
        key over and runs the request; the operations behind keys are themselves idempotent
        by state (a result, a cash sale, a code reservation apply once however often they
        run), so the outcome is still applied once.
        """
        if not key:
            return compute()
        if len(key) > 128:
            raise ApiError(400, "bad_idempotency_key", "at most 128 characters")
        digest = hashlib.sha256(request).hexdigest()
        now = self.clock.now()
        try:
            with self.db.tx() as s:
                row = s.get(IdempotentResponse, (machine_id, key), with_for_update=True)
                if row is not None:
                    if row.request_hash != digest:
                        raise ApiError(409, "idempotency_key_reused",
                                       "this Idempotency-Key was used for another request")
                    if row.status_code != 0:
                        return row.status_code, dict(row.body)
                    if now - row.created_at < self.settings.idempotency_lease:
                        wait = max(1, int(row.created_at + self.settings.idempotency_lease
                                          - now) + 1)
                        raise ApiError(409, "request_in_progress",
                                       "the first request with this key is still running",
                                       headers={"Retry-After": str(wait)})
                    log.warning("Idempotency-Key %r of %s in progress since %.0f s: its "
                                "request died; running it again", key, machine_id,
                                now - row.created_at)
                    row.created_at = now  # a new lease, held by this request
                else:
                    s.add(IdempotentResponse(machine_id=machine_id, key=key,
                                             request_hash=digest, status_code=0, body={},
                                             created_at=now))
        except IntegrityError:
            raise ApiError(409, "request_in_progress",
                           "the first request with this key is still running") from None
        try:
            status, body = compute()
        except ApiError as exc:
            if exc.status >= 500:
                self._forget(machine_id, key)
                raise
            status, body = exc.status, exc.body()
        except BaseException:
            self._forget(machine_id, key)
            raise
        with self.db.tx() as s:
            row = s.get(IdempotentResponse, (machine_id, key), with_for_update=True)
            if row is not None and row.status_code == 0:
                row.status_code, row.body = status, body
            elif row is not None:  # a takeover finished first: one stored answer for all
                return row.status_code, dict(row.body)
        return status, body

    def _forget(self, machine_id: str, key: str) -> None:
        with self.db.tx() as s:
            s.execute(delete(IdempotentResponse).where(
                IdempotentResponse.machine_id == machine_id, IdempotentResponse.key == key))

    # --- orders --------------------------------------------------------------------------

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
        with self.db.tx() as s:
            row = s.execute(select(Slot, Product).join(Product, Slot.product_id == Product.id)
                            .where(Slot.machine_id == machine_id, Slot.slot == str(slot))
                            ).first()
            if row is None or not row[0].enabled:
                raise ApiError(404, "unknown_slot", f"machine {machine_id} sells nothing "
                               f"in slot {slot!r}")
            slot_row, product = row
            machine = s.get(Machine, machine_id)
            assert machine is not None
            order = Order(
                id="vo" + secrets.token_hex(12), machine_id=machine_id, slot=slot_row.slot,
                product_id=product.id, product_name=product.name, amount=slot_row.price,
                currency=machine.currency, kind="qr", provider=name,
                state=S.CREATED.value, created_at=now, updated_at=now,
                expires_at=now + self.settings.order_ttl)
            s.add(order)
            self._audit(s, "order", order.id, None, S.CREATED.value,
                        f"order for slot {slot_row.slot}", actor)
            info = OrderInfo(order.id, order.amount, order.currency, product.name,
                             order.expires_at)
        try:
            qr = chosen.create_qr(info)
        except ProviderError as exc:
            with self.db.tx() as s:
                failed = self._lock_order(s, info.out_trade_no)
                if failed is not None and failed.state == S.CREATED.value:
                    self._move(s, failed, S.CANCELLED, f"provider:{name}", str(exc))
            raise ApiError(502, "provider_error", str(exc)) from exc
        with self.db.tx() as s:
            order_row = self._lock_order(s, info.out_trade_no)
            assert order_row is not None
            order_row.qr_text = qr.qr_text
            if order_row.state == S.CREATED.value:
                self._move(s, order_row, S.AWAITING_PAYMENT, f"provider:{name}")
                order_row.next_query_at = min(now + self.settings.query_interval,
                                              order_row.expires_at)
            data = order_json(order_row)
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

    # --- payments ------------------------------------------------------------------------

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

    # --- push channel --------------------------------------------------------------------

    def take_instructions(self, machine_id: str, limit: int = 20
                          ) -> tuple[list[dict[str, Any]], float | None]:
        """Due instructions for a machine (marking them delivered) and seconds to the next."""
        now = self.clock.now()
        with self.db.tx() as s:
            rows = s.execute(select(Instruction).where(
                Instruction.machine_id == machine_id, Instruction.status == "pending",
                Instruction.next_delivery_at <= now).order_by(Instruction.created_at)
                .limit(limit)).scalars().all()
            items = []
            for row in rows:
                row.deliveries += 1
                row.next_delivery_at = now + self.settings.redeliver_after
                items.append({**row.payload, "delivery": row.deliveries})
            s.flush()
            next_due = s.execute(select(func.min(Instruction.next_delivery_at)).where(
                Instruction.machine_id == machine_id, Instruction.status == "pending")
                ).scalar()
        return items, (None if next_due is None else max(0.0, next_due - now))

    def machines_with_due_instructions(self, limit: int = 1000) -> list[str]:
        """Machines with an unacknowledged instruction due for (re)delivery (MQTT bridge)."""
        now = self.clock.now()
        with self.db.read() as s:
            return list(s.execute(select(Instruction.machine_id).where(
                Instruction.status == "pending", Instruction.next_delivery_at <= now)
                .distinct().limit(limit)).scalars())

    def ack(self, machine_id: str, instruction_id: str) -> dict[str, Any]:
        """The machine has the instruction (journaled): stop redelivering; order dispensing."""
        with self.db.tx() as s:
            ins = s.get(Instruction, instruction_id)
            if ins is None or ins.machine_id != machine_id:
                raise ApiError(404, "unknown_instruction")
            self._lock_order(s, ins.order_id)  # order, then instruction: one lock order
            ins = s.execute(select(Instruction).where(Instruction.id == instruction_id)
                            .with_for_update().execution_options(populate_existing=True)
                            ).scalar_one()
            if ins.status == "cancelled":
                raise ApiError(409, "instruction_cancelled",
                               "withdrawn by an operator: do not ship", order_id=ins.order_id)
            order = self._lock_order(s, ins.order_id)
            assert order is not None
            if ins.status == "pending":
                ins.status = "acked"
                ins.acked_at = self.clock.now()
                self._audit(s, "instruction", ins.id, "pending", "acked", "acknowledged",
                            f"machine:{machine_id}")
                if order.state == S.PAID.value:
                    self._move(s, order, S.DISPENSING, f"machine:{machine_id}")
            return {"id": ins.id, "status": ins.status, "order_id": order.id,
                    "order_state": order.state}

    # --- dispense results ----------------------------------------------------------------

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
        self._after(effects)
        if effects.refunds:
            data = self.get_order(order_id)
        return data

    # --- refunds -------------------------------------------------------------------------

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

    # --- pickup and lottery codes ----------------------------------------------------------

    def create_codes(self, product_id: str, count: int, valid_for: float | str, *,
                     machine_id: str | None = None, kind: str = "pickup"
                     ) -> list[dict[str, Any]]:
        """``count`` new single-use codes for one product; the only time they are shown."""
        if not 1 <= count <= 10_000:
            raise ApiError(422, "bad_count", "count must be 1..10000")
        if kind not in ("pickup", "lottery"):
            raise ApiError(422, "bad_kind", "kind is pickup or lottery")
        try:
            seconds = parse_duration(valid_for)
        except ConfigurationError as exc:
            raise ApiError(422, "bad_validity", str(exc)) from None
        if not 0 < seconds <= MAX_CODE_VALIDITY:  # also refuses NaN and infinity
            raise ApiError(422, "bad_validity", "valid_for must be positive and at most "
                           f"{MAX_CODE_VALIDITY:.0f} s (10 years)")
        now = self.clock.now()
        with self.db.tx() as s:
            if s.get(Product, product_id) is None:
                raise ApiError(404, "unknown_product", f"no product {product_id!r}")
            if machine_id is not None and s.get(Machine, machine_id) is None:
                raise ApiError(404, "unknown_machine", f"no machine {machine_id!r}")
        created: list[dict[str, Any]] = []
        batch_id = "cb" + secrets.token_hex(6)  # 'codes revoke --batch'
        try:
            for first in range(0, count, CODE_BATCH_CHUNK):
                # One short transaction per chunk: machines' requests queue between chunks
                # instead of behind the whole batch (SQLite has one writer at a time).
                with self.db.tx() as s:
                    created += self._create_code_chunk(
                        s, min(CODE_BATCH_CHUNK, count - first), product_id, machine_id,
                        kind, now, now + seconds, batch_id)
        except BaseException:
            # Codes never shown to anybody are useless: withdraw the part already committed.
            if created:
                self._revoke_unshown([c["id"] for c in created])
            raise
        return created

    def _create_code_chunk(self, s: Session, n: int, product_id: str, machine_id: str | None,
                           kind: str, now: float, expires_at: float,
                           batch_id: str | None = None) -> list[dict[str, Any]]:
        fresh: dict[str, str] = {}  # hash -> code
        while len(fresh) < n:
            batch: dict[str, str] = {}
            while len(batch) < n - len(fresh):
                code = codemod.generate_code(self.settings.code_digits)
                batch[codemod.code_hash(code)] = code
            clashes = set(s.execute(select(Code.code_hash).where(
                Code.selector.in_({codemod.selector(c) for c in batch.values()}),
                Code.code_hash.in_(list(batch)))).scalars())
            fresh.update({h: c for h, c in batch.items() if h not in clashes})
        codes = list(fresh.values())
        rows = s.execute(insert(Code).returning(Code.id, sort_by_parameter_order=True), [
            {"selector": codemod.selector(code), "code_hash": digest, "kind": kind,
             "product_id": product_id, "machine_id": machine_id, "status": "active",
             "created_at": now, "expires_at": expires_at, "batch_id": batch_id}
            for digest, code in fresh.items()]).scalars().all()
        s.execute(insert(AuditEntry), [
            {"at": now, "entity": "code", "entity_id": str(code_id), "from_state": None,
             "to_state": "active", "reason": f"{kind} code for {product_id}",
             "actor": "operator"} for code_id in rows])
        return [{"id": code_id, "code": code, "kind": kind, "product_id": product_id,
                 "machine_id": machine_id, "expires_at": iso(expires_at),
                 "batch_id": batch_id}
                for code_id, code in zip(rows, codes, strict=True)]

    def _revoke_unshown(self, code_ids: list[int]) -> None:
        now = self.clock.now()
        with self.db.tx() as s:
            s.execute(update(Code).where(Code.id.in_(code_ids), Code.status == "active")
                      .values(status="revoked"))
            s.execute(insert(AuditEntry), [
                {"at": now, "entity": "code", "entity_id": str(code_id), "from_state": "active",
                 "to_state": "revoked", "reason": "batch failed before the codes were shown",
                 "actor": "system"} for code_id in code_ids])

    def list_codes(self, status: str | None = None, product_id: str | None = None,
                   machine_id: str | None = None, limit: int = 100, *,
                   batch_id: str | None = None) -> list[dict[str, Any]]:
        """Codes, newest first, without their secret (only the hash is stored anyway)."""
        with self.db.read() as s:
            query = select(Code).order_by(Code.id.desc()).limit(limit)
            if batch_id:
                query = query.where(Code.batch_id == batch_id)
            if status:
                query = query.where(Code.status == status)
            if product_id:
                query = query.where(Code.product_id == product_id)
            if machine_id:
                query = query.where(Code.machine_id == machine_id)
            return [_code_json(c) for c in s.execute(query).scalars()]

    def revoke_code(self, code_id: int, note: str = "") -> dict[str, Any]:
        """Withdraw an unused code; one being used right now or already used is refused."""
        with self.db.tx() as s:
            code = s.execute(select(Code).where(Code.id == code_id).with_for_update()
                             ).scalar_one_or_none()
            if code is None:
                raise ApiError(404, "unknown_code", f"no code {code_id}")
            if code.status == "reserved":
                raise ApiError(409, "code_in_use", "a vend with this code is running; "
                               "revoke it after the machine reports", code_status=code.status)
            if code.status == "consumed":
                raise ApiError(409, "code_used", "this code was already used",
                               code_status=code.status)
            if code.status == "active":
                self._code_state(s, code, "revoked", "operator", note or "revoked")
            return _code_json(code)

    def redeem_code(self, machine_id: str, code: str) -> dict[str, Any]:
        """Verify a typed code, reserve it for this machine, and ship its product.

        The code is consumed only when the machine reports delivery and released if the
        vend fails. Wrong codes count against the machine and the code's prefix; a locked
        prefix or keypad is refused (429) even for a right code, so guessing stays useless.
        """
        code = codemod.normalize(code)
        now = self.clock.now()
        actor = f"machine:{machine_id}"
        effects = _Effects()
        refusal: ApiError | None = None
        data: dict[str, Any] = {}
        with self.db.tx() as s:
            # Every attempt of one machine holds its keypad counter row: the lockout
            # arithmetic (and the selector's row, also per machine) is serialised.
            self._counter(s, machine_id, codemod.KEYPAD)
            well_formed = (code.isascii() and code.isdigit()
                           and len(code) == self.settings.code_digits)
            refusal = self._locked(s, machine_id, codemod.selector(code) if well_formed
                                   else None)
            if refusal is None and not well_formed:
                refusal = self._code_failure(s, machine_id, None, "code_malformed",
                                             f"a code is {self.settings.code_digits} digits")
            if refusal is None and well_formed:
                sel = codemod.selector(code)
                candidates = s.execute(select(Code.id, Code.code_hash).where(
                    Code.selector == sel)).all()
                match_id = codemod.find_match(code, [(r[0], r[1]) for r in candidates])
                match = None if match_id is None else s.execute(
                    select(Code).where(Code.id == match_id).with_for_update()).scalar_one()
                if match is None or (match.machine_id not in (None, machine_id)):
                    refusal = self._code_failure(s, machine_id, sel, "code_invalid",
                                                 "no such code")
                else:
                    refusal, data = self._reserve(s, match, machine_id, now, actor, effects)
        if refusal is not None:
            raise refusal
        self._after(effects)
        return data

    def _reserve(self, s: Session, code: Code, machine_id: str, now: float, actor: str,
                 effects: _Effects) -> tuple[ApiError | None, dict[str, Any]]:
        if code.status == "consumed":
            return ApiError(409, "code_used", "this code was already used"), {}
        if code.status == "revoked":
            return ApiError(410, "code_revoked", "this code was withdrawn"), {}
        if code.status == "reserved":
            order = s.get(Order, code.order_id) if code.order_id else None
            if code.reserved_by == machine_id and order is not None:
                instruction = s.execute(select(Instruction).where(
                    Instruction.order_id == order.id)).scalar_one_or_none()
                return None, {"order": order_json(order),
                              "instruction": instruction.payload if instruction else None}
            return ApiError(409, "code_in_use", "this code is being used right now"), {}
        if code.expires_at <= now:
            return ApiError(410, "code_expired", "this code has expired"), {}
        slot_row = s.execute(select(Slot).where(
            Slot.machine_id == machine_id, Slot.product_id == code.product_id,
            Slot.enabled.is_(True)).order_by(Slot.slot)).scalars().first()
        if slot_row is None:
            return ApiError(409, "product_unavailable",
                            "this machine does not sell the code's product"), {}
        product = s.get(Product, code.product_id)
        machine = s.get(Machine, machine_id)
        assert product is not None and machine is not None
        order = Order(id="vo" + secrets.token_hex(12), machine_id=machine_id,
                      slot=slot_row.slot, product_id=product.id, product_name=product.name,
                      amount=slot_row.price, currency=machine.currency, kind="code",
                      provider="code", state=S.CREATED.value, code_id=code.id,
                      created_at=now, updated_at=now, expires_at=now)
        s.add(order)
        self._audit(s, "order", order.id, None, S.CREATED.value,
                    f"{code.kind} code {code.id} for slot {slot_row.slot}", actor)
        self._move(s, order, S.PAID, actor, f"{code.kind} code {code.id}")
        self._code_state(s, code, "reserved", actor, f"order {order.id}")
        code.reserved_by = machine_id
        code.order_id = order.id
        self._ship(s, order, effects, inline=True)
        return None, {"order": order_json(order),
                      "instruction": {**effects.instructions[-1][1], "delivery": 1}}

    # --- cash sales ----------------------------------------------------------------------

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

    def _code_state(self, s: Session, code: Code, to: str, actor: str, reason: str) -> None:
        self._audit(s, "code", str(code.id), code.status, to, reason, actor)
        code.status = to

    def _counter(self, s: Session, machine_id: str, sel: str) -> CodeAttempt:
        """The (machine, selector) counter row, created if missing (an upsert: two processes
        may create it at once) and locked for this transaction."""
        _insert_missing(s, CodeAttempt, {"machine_id": machine_id, "selector": sel,
                                         "window_start": self.clock.now(), "failures": 0,
                                         "locked_until": 0.0})
        return s.execute(select(CodeAttempt).where(
            CodeAttempt.machine_id == machine_id, CodeAttempt.selector == sel)
            .with_for_update().execution_options(populate_existing=True)).scalar_one()

    def _locked(self, s: Session, machine_id: str, sel: str | None) -> ApiError | None:
        now = self.clock.now()
        keys = [(codemod.KEYPAD, "keypad_locked")]
        if sel is not None:
            keys.append((sel, "code_locked"))
        for key, code in keys:
            row = s.get(CodeAttempt, (machine_id, key))
            if row is not None and row.locked_until > now:
                wait = int(row.locked_until - now) + 1
                return ApiError(429, code, f"too many wrong codes; try again in {wait} s",
                                headers={"Retry-After": str(wait)}, retry_after=wait)
        return None

    def _code_failure(self, s: Session, machine_id: str, sel: str | None, code: str,
                      detail: str) -> ApiError:
        """Count one wrong attempt (keypad, and prefix when known) and build the refusal."""
        now = self.clock.now()
        limits = [(codemod.KEYPAD, self.settings.machine_max_failures)]
        if sel is not None:
            limits.append((sel, self.settings.code_max_failures))
        left = None
        for key, limit in limits:
            row = self._counter(s, machine_id, key)
            if now - row.window_start > self.settings.code_failure_window:
                row.window_start, row.failures = now, 0
            row.failures += 1
            remaining = limit - row.failures
            if remaining <= 0:
                row.locked_until = now + self.settings.code_lockout
                row.window_start, row.failures = now, 0
                self._audit(s, "keypad", f"{machine_id}:{key}", None, "locked",
                            f"{limit} wrong codes", f"machine:{machine_id}")
                wait = int(self.settings.code_lockout)
                return ApiError(429, "keypad_locked" if key == codemod.KEYPAD else
                                "code_locked", f"{detail}; too many wrong codes, locked "
                                f"for {wait} s", headers={"Retry-After": str(wait)},
                                retry_after=wait)
            left = remaining if left is None else min(left, remaining)
        return ApiError(404 if code == "code_invalid" else 400, code, detail,
                        attempts_left=left)

    # --- operator ------------------------------------------------------------------------

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

    # --- the background loop -------------------------------------------------------------

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

    def start_doorbell(self) -> None:
        """Listen for other processes' new instructions (PostgreSQL; no-op on SQLite)."""
        if self.doorbell is not None:
            self.doorbell.start()

    def close(self) -> None:
        if self.doorbell is not None:
            self.doorbell.stop()
        if self._notify_http is not None:
            self._notify_http.close()
        self.db.dispose()


def _code_json(code: Code) -> dict[str, Any]:
    return {"id": code.id, "kind": code.kind, "product_id": code.product_id,
            "machine_id": code.machine_id, "batch_id": code.batch_id,
            "status": code.status, "order_id": code.order_id,
            "created_at": iso(code.created_at), "expires_at": iso(code.expires_at),
            "used_at": iso(code.used_at)}


def _insert_missing(s: Session, model: Any, values: dict[str, Any]) -> None:
    """INSERT a row unless its primary key exists (``ON CONFLICT DO NOTHING``): safe when
    several transactions create the same row at once, on SQLite and PostgreSQL alike."""
    dialect = s.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        s.execute(postgresql.insert(model).values(**values).on_conflict_do_nothing())
    elif dialect == "sqlite":
        from sqlalchemy.dialects import sqlite

        s.execute(sqlite.insert(model).values(**values).on_conflict_do_nothing())
    else:  # other databases: a plain insert inside a savepoint
        try:
            with s.begin_nested():
                s.execute(insert(model).values(**values))
        except IntegrityError:
            pass


def _required(item: Any, key: str, what: str) -> str:
    if not isinstance(item, Mapping) or not item.get(key):
        raise ConfigurationError(f"{what}: missing {key!r} in {json.dumps(item)[:80]}")
    return str(item[key])


def _price(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_AMOUNT:
        raise ConfigurationError(f"{what}: price must be an integer of minor units (fen/cents)"
                                 f" from 0 to {MAX_AMOUNT}, got {value!r}")
    return value


__all__ = ["ApiError", "Backend", "iso", "order_json"]
