"""The shared state and helpers every workflow uses: settings, clock, database, push hub,
providers; auditing, order moves and locks, and the after-commit side effects."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy import bindparam, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from vendhw.server.db import Database, before_commit
from vendhw.server.instances import Heartbeat, InFlight, new_instance_id
from vendhw.server.models import AuditEntry, Code, Order
from vendhw.server.pgnotify import PgDoorbell, doorbell_for
from vendhw.server.providers import (
    NotificationReply,
    PaymentEvent,
    PaymentProvider,
    ProviderError,
    RefundEvent,
    build_providers,
)
from vendhw.server.providers.sandbox import SandboxProvider
from vendhw.server.push import PushHub
from vendhw.server.settings import Clock, ServerSettings, SystemClock
from vendhw.server.states import (
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

log = logging.getLogger("vendhw.server.service")
"""One logger for every workflow module: the name it had before the split."""

BACKEND_CRASH_ENV = "VENDHW_BACKEND_CRASH_AT"
"""Tests only: the backend dies (``os._exit``, like SIGKILL) right after the step it names
has committed: ``backend:order-created``, ``backend:paid``, ``backend:pushed``,
``backend:acked``, ``backend:reported``, ``backend:refund-sent``, ``backend:redeemed``."""


BACKEND_HANG_ENV = "VENDHW_BACKEND_HANG_AT"
"""Tests only: a request that reaches the step it names (same names) never returns, as one
stuck on a slow provider would; its process stays alive (and keeps beating) until it is
killed. Tests kill it there, or retry the request elsewhere meanwhile."""


_CRASH_AT = os.environ.get(BACKEND_CRASH_ENV, "").strip().lower()
_HANG_AT = os.environ.get(BACKEND_HANG_ENV, "").strip().lower()
"""Read once, at import: the tests set them in a backend process's environment (reading
``os.environ`` at every step cost ~1 % of the server's CPU per sale)."""


def crash_point(step: str) -> None:
    """Die or hang here when a test asks for this step (see the two variables above)."""
    if not (_CRASH_AT or _HANG_AT):
        return
    if _CRASH_AT == step:
        os._exit(137)
    if _HANG_AT == step:
        log.warning("request held at %s (%s)", step, BACKEND_HANG_ENV)
        threading.Event().wait()  # forever: only a test sets this, and kills the process


S = OrderState
MIN_SECRET_LENGTH = 16
SECRET_CACHE_S = 10.0
LAST_SEEN_EVERY_S = 5.0
MAX_CODE_VALIDITY = 10 * 365 * 86400.0
CODE_BATCH_CHUNK = 100
"""Codes created per transaction of an operator batch (machines queue between chunks)."""
MAX_AMOUNT = 2**31 - 1
"""Largest amount or price in minor units: the database's INTEGER (21 million CNY/USD)."""




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


AUDIT_ROWS = "vendhw_audit_rows"


def _insert_audit_rows(s: Session) -> None:
    rows = s.info.pop(AUDIT_ROWS, None)
    if rows:  # a Core executemany on the transaction's connection: no ORM bulk machinery
        s.connection().execute(_INSERT_AUDIT, rows)


_INSERT_AUDIT = insert(AuditEntry)


_LOCK_ORDER = (select(Order).where(Order.id == bindparam("order_id")).with_for_update()
               .execution_options(populate_existing=True))
"""Built once: constructing the statement per call cost more than running it."""


@dataclass
class _Effects:
    """What to do once a transaction has committed: ring machines, run refunds."""

    instructions: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    refunds: list[int] = field(default_factory=list)
    close: list[tuple[str, str]] = field(default_factory=list)


class BackendCore:
    """The state one :class:`Backend` holds and the helpers its workflows share."""

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
        self.instance_id = new_instance_id()
        """This process's id in ``server_instances`` and on the keys its requests hold."""
        self.inflight = InFlight()
        """The Idempotency-Keys this process's requests are running now."""
        self._heartbeat: Heartbeat | None = None
        self._alive_until: float | None = None
        self._started_at = self.clock.now()

    # --- helpers -------------------------------------------------------------------------

    if TYPE_CHECKING:  # defined by the workflow mixins; other workflows call them
        def handle_notification(self, provider_name: str, headers: Mapping[str, str],
                                body: bytes) -> NotificationReply: ...
        def process_refund(self, refund_id: int) -> str: ...
        def report_result(self, machine_id: str, order_id: str, outcome: str,
                          details: Mapping[str, Any] | None = None,
                          instruction_id: str | None = None) -> dict[str, Any]: ...
        def _code_state(self, s: Session, code: Code, to: str, actor: str,
                        reason: str) -> None: ...
        def _new_refund(self, s: Session, order: Order, amount: int, reason: str) -> int: ...
        def get_order(self, order_id: str,
                      machine_id: str | None = None) -> dict[str, Any]: ...
        def _refund_event(self, provider_name: str, event: RefundEvent) -> None: ...
        def _watch_late(self, order: Order) -> None: ...
        def _ship(self, s: Session, order: Order, effects: _Effects, *,
                  inline: bool = False) -> None: ...
        def _apply_payment(self, s: Session, order: Order, event: PaymentEvent, source: str,
                           effects: _Effects) -> str: ...
        def _claim_key(self, s: Session) -> None: ...
        def _refuse_replay(self, s: Session) -> None: ...
        def _answer(self, s: Session, status: int, body: dict[str, Any]) -> None: ...
        def stop_heartbeat(self) -> None: ...
        def _purge_instances(self, s: Session, now: float) -> None: ...
        def _holder_alive(self, s: Session, holder: str, now: float) -> float | None: ...

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
        # Collected and inserted in one statement as the transaction ends: ORM objects cost
        # their unit-of-work bookkeeping each (a sale writes 7 audit rows).
        rows = s.info.get(AUDIT_ROWS)
        if rows is None:
            rows = s.info[AUDIT_ROWS] = []
            before_commit(s, _insert_audit_rows)
        rows.append({"at": self.clock.now(), "entity": entity, "entity_id": entity_id,
                     "from_state": before, "to_state": after, "reason": reason,
                     "actor": actor})

    def _move(self, s: Session, order: Order, to: OrderState, actor: str,
              note: str = "") -> None:
        reason = check_transition(order.id, order.state, to)
        self._audit(s, "order", order.id, order.state, to.value,
                    reason + (f"; {note}" if note else ""), actor)
        order.state = to.value
        order.updated_at = self.clock.now()

    def _lock_order(self, s: Session, order_id: str) -> Order | None:
        return s.execute(_LOCK_ORDER, {"order_id": order_id}).scalar_one_or_none()

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

    def start_doorbell(self) -> None:
        """Listen for other processes' new instructions (PostgreSQL; no-op on SQLite)."""
        if self.doorbell is not None:
            self.doorbell.start()

    def close(self) -> None:
        self.stop_heartbeat()
        if self.doorbell is not None:
            self.doorbell.stop()
        if self._notify_http is not None:
            self._notify_http.close()
        self.db.dispose()


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

