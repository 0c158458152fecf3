"""Database tables (SQLAlchemy 2, typed mappings); times are unix seconds as floats.

Unix-second floats instead of DATETIME keep comparisons identical on SQLite and PostgreSQL
and never lose a time zone. Money is an integer count of the currency's minor unit (fen,
cents). Unique constraints carry the exactly-once guarantees: one payment per order, one
refund per ``out_refund_no``, one nonce per machine, one response per idempotency key.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base of every backend table."""


class Machine(Base):
    __tablename__ = "machines"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    secret: Mapped[str] = mapped_column(String(256))
    name: Mapped[str] = mapped_column(String(200), default="")
    currency: Mapped[str] = mapped_column(String(3), default="CNY")
    created_at: Mapped[float] = mapped_column(Float)
    last_seen: Mapped[float | None] = mapped_column(Float, default=None)


class Product(Base):
    __tablename__ = "products"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    price: Mapped[int | None] = mapped_column(Integer, default=None)
    """Default price when a slot does not set its own."""
    image_url: Mapped[str | None] = mapped_column(String(500), default=None)
    """A picture of the product (http/https) the machine's screen downloads once and caches."""


class Slot(Base):
    __tablename__ = "slots"
    __table_args__ = (UniqueConstraint("machine_id", "slot"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    machine_id: Mapped[str] = mapped_column(ForeignKey("machines.id"))
    slot: Mapped[str] = mapped_column(String(32))
    product_id: Mapped[str] = mapped_column(ForeignKey("products.id"))
    price: Mapped[int] = mapped_column(Integer)
    enabled: Mapped[bool] = mapped_column(default=True)


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        Index("ix_orders_state_due", "state", "next_query_at"),
        Index("ix_orders_machine", "machine_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    """Also the provider's ``out_trade_no``: one order, one trade, never reused."""
    machine_id: Mapped[str] = mapped_column(ForeignKey("machines.id"))
    slot: Mapped[str] = mapped_column(String(32))
    product_id: Mapped[str] = mapped_column(String(64))
    product_name: Mapped[str] = mapped_column(String(200), default="")
    amount: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    kind: Mapped[str] = mapped_column(String(16), default="qr")
    """``qr`` (paid through a provider), ``code`` (pickup / lottery code) or ``cash``."""
    provider: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(24))
    qr_text: Mapped[str | None] = mapped_column(Text, default=None)
    code_id: Mapped[int | None] = mapped_column(ForeignKey("codes.id"), default=None)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)
    next_query_at: Mapped[float | None] = mapped_column(Float, default=None)
    query_count: Mapped[int] = mapped_column(Integer, default=0)
    watch_until: Mapped[float | None] = mapped_column(Float, default=None)
    """Expired/cancelled orders are queried until then, to refund late payers."""
    outcome: Mapped[str | None] = mapped_column(String(24), default=None)
    outcome_details: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)


class Payment(Base):
    __tablename__ = "payments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), unique=True)
    provider: Mapped[str] = mapped_column(String(32))
    transaction_id: Mapped[str] = mapped_column(String(128))
    amount: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    paid_at: Mapped[float] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(16))
    """``notify`` or ``query``: whichever reached the order first."""
    late: Mapped[bool] = mapped_column(default=False)
    raw: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)


class Refund(Base):
    __tablename__ = "refunds"
    __table_args__ = (UniqueConstraint("order_id", "request_key",
                                       name="uq_refunds_order_request_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), index=True)
    """Several rows per order once operators refund parts of it (whole refund: one row)."""
    out_refund_no: Mapped[str] = mapped_column(String(64), unique=True)
    """Derived from the order id (``R<order>``; a part: ``R<order>_<n>``): a retried refund
    can never pay twice."""
    provider: Mapped[str] = mapped_column(String(32))
    amount: Mapped[int] = mapped_column(Integer)
    total: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    reason: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    """``pending`` (not yet accepted), ``processing``, ``succeeded``."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[float] = mapped_column(Float)
    last_error: Mapped[str] = mapped_column(Text, default="")
    provider_refund_id: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[float] = mapped_column(Float)
    completed_at: Mapped[float | None] = mapped_column(Float, default=None)
    operator: Mapped[str] = mapped_column(String(80), default="")
    """Who asked for a partial refund (empty for the backend's own whole refunds)."""
    request_key: Mapped[str | None] = mapped_column(String(64), default=None)
    """The operator's idempotency key of a partial refund: a repeated request finds it."""


class Code(Base):
    __tablename__ = "codes"
    __table_args__ = (Index("ix_codes_selector", "selector", "status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    selector: Mapped[str] = mapped_column(String(8))
    """First digits of the code: finds the candidates; not secret on its own."""
    code_hash: Mapped[str] = mapped_column(String(64))
    """SHA-256 of the whole code; the code itself is shown once, at creation."""
    kind: Mapped[str] = mapped_column(String(16), default="pickup")
    product_id: Mapped[str] = mapped_column(ForeignKey("products.id"))
    machine_id: Mapped[str | None] = mapped_column(String(64), default=None)
    """Bound to one machine, or None for any machine that stocks the product."""
    status: Mapped[str] = mapped_column(String(16), default="active")
    """``active``, ``reserved`` (a vend is running), ``consumed``, ``revoked``."""
    reserved_by: Mapped[str | None] = mapped_column(String(64), default=None)
    order_id: Mapped[str | None] = mapped_column(String(32), default=None)
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)
    used_at: Mapped[float | None] = mapped_column(Float, default=None)
    batch_id: Mapped[str | None] = mapped_column(String(24), default=None, index=True)
    """The ``codes create`` call that made it (revoke a whole batch); None before 0002."""


class CodeAttempt(Base):
    """Wrong-code counters per (machine, prefix); prefix ``*`` counts the whole keypad."""

    __tablename__ = "code_attempts"

    machine_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    selector: Mapped[str] = mapped_column(String(8), primary_key=True)
    window_start: Mapped[float] = mapped_column(Float)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[float] = mapped_column(Float, default=0.0)


class Instruction(Base):
    """A message for one machine (ship ...), redelivered until acknowledged."""

    __tablename__ = "instructions"
    __table_args__ = (Index("ix_instructions_due", "machine_id", "status", "next_delivery_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    machine_id: Mapped[str] = mapped_column(ForeignKey("machines.id"))
    order_id: Mapped[str] = mapped_column(String(32))
    type: Mapped[str] = mapped_column(String(16), default="ship")
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    """``pending`` until acknowledged (``acked``) or withdrawn (``cancelled``)."""
    created_at: Mapped[float] = mapped_column(Float)
    next_delivery_at: Mapped[float] = mapped_column(Float)
    deliveries: Mapped[int] = mapped_column(Integer, default=0)
    acked_at: Mapped[float | None] = mapped_column(Float, default=None)


class Nonce(Base):
    """Nonces seen per machine while their timestamp is inside the window: replays fail."""

    __tablename__ = "nonces"

    machine_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[float] = mapped_column(Float, index=True)


class IdempotentResponse(Base):
    """The first answer to an idempotency key; a retry with the same key gets it again."""

    __tablename__ = "idempotent_responses"

    machine_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Float)
    """When the key was claimed (or taken over): the start of its lease."""
    holder: Mapped[str | None] = mapped_column(String(32), default=None)
    """The :class:`ServerInstance` whose request holds the key while it is in progress
    (``status_code`` 0); None on rows from before 0004 (or from a server that old)."""


class ServerInstance(Base):
    """One running backend process, from its start: its heartbeat.

    A process renews ``alive_until`` every ``instance_heartbeat`` seconds on a thread of its
    own; one that stops renewing (SIGKILL, power cut, a hung host) is dead once
    ``alive_until`` has passed, and the Idempotency-Keys it held may be taken over. Ids are
    random per start: a restarted process is a new instance, never the dead one."""

    __tablename__ = "server_instances"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    host: Mapped[str] = mapped_column(String(255), default="")
    pid: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[float] = mapped_column(Float)
    seen_at: Mapped[float] = mapped_column(Float)
    """The last heartbeat."""
    alive_until: Mapped[float] = mapped_column(Float)
    """Alive until then unless it beats again (``seen_at`` + its ``instance_timeout``); 0
    once it stopped cleanly with no request running."""


class AuditEntry(Base):
    """One row per state change of an order, a code, a refund or an instruction."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Float)
    entity: Mapped[str] = mapped_column(String(16))
    entity_id: Mapped[str] = mapped_column(String(64), index=True)
    from_state: Mapped[str | None] = mapped_column(String(24))
    to_state: Mapped[str] = mapped_column(String(24))
    reason: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(80))


class SandboxTrade(Base):
    """The sandbox provider's own ledger: what a real provider would know about a trade."""

    __tablename__ = "sandbox_trades"

    out_trade_no: Mapped[str] = mapped_column(String(64), primary_key=True)
    amount: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    description: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="NOTPAY")
    """NOTPAY, SUCCESS, CLOSED (declined or closed unpaid), REFUND."""
    transaction_id: Mapped[str | None] = mapped_column(String(64), default=None)
    paid_at: Mapped[float | None] = mapped_column(Float, default=None)
    refund_no: Mapped[str | None] = mapped_column(String(64), default=None)
    refunded: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Float)


class SandboxRefund(Base):
    """The sandbox ledger's refunds: several (partial) refunds per trade, one per number."""

    __tablename__ = "sandbox_refunds"

    out_refund_no: Mapped[str] = mapped_column(String(64), primary_key=True)
    out_trade_no: Mapped[str] = mapped_column(String(64), index=True)
    amount: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Float)


__all__ = [
    "AuditEntry",
    "Base",
    "Code",
    "CodeAttempt",
    "IdempotentResponse",
    "Instruction",
    "Machine",
    "Nonce",
    "Order",
    "Payment",
    "Product",
    "Refund",
    "SandboxRefund",
    "SandboxTrade",
    "ServerInstance",
    "Slot",
]
