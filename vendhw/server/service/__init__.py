"""The backend's logic, free of HTTP: orders, payments, codes, instructions, refunds.

Every method is synchronous and runs its own short transactions through
:meth:`Database.tx`; provider calls (network) happen between transactions, never inside
one. Each order row is locked (``FOR UPDATE``; on SQLite the whole database is, by
``BEGIN IMMEDIATE``) before it moves, so a notification, the query loop, the machine and an
operator can race freely and a paid order still ships exactly once: the unique payment row
per order and the state table decide, not timing.

One module per workflow, each a mixin over :class:`~.core.BackendCore` (the shared state:
settings, clock, database, push hub, providers, and the helpers every workflow uses);
:class:`Backend` composes them. Workflows call each other through ``self`` as before the
split; the few cross-workflow calls are declared on ``BackendCore`` for the type checker.
"""

from __future__ import annotations

from vendhw.server.service.auth import AuthMixin
from vendhw.server.service.background import BackgroundMixin
from vendhw.server.service.catalogue import CatalogueMixin
from vendhw.server.service.codes import CodesMixin
from vendhw.server.service.core import (
    BACKEND_CRASH_ENV,
    BACKEND_HANG_ENV,
    CARD_PROVIDER,
    CASH_PROVIDER,
    CODE_BATCH_CHUNK,
    LAST_SEEN_EVERY_S,
    MACHINE_METHODS,
    MAX_AMOUNT,
    MAX_CODE_VALIDITY,
    MIN_SECRET_LENGTH,
    SECRET_CACHE_S,
    BackendCore,
    _Effects,
    iso,
    order_json,
)
from vendhw.server.service.errors import ApiError
from vendhw.server.service.instances import InstancesMixin
from vendhw.server.service.operator import OperatorMixin
from vendhw.server.service.orders import OrdersMixin
from vendhw.server.service.payments import PaymentsMixin
from vendhw.server.service.push import PushMixin
from vendhw.server.service.refunds import RefundsMixin
from vendhw.server.service.results import ResultsMixin
from vendhw.server.service.sales import SalesMixin


class Backend(CatalogueMixin, AuthMixin, OrdersMixin, PaymentsMixin, PushMixin, ResultsMixin,
              RefundsMixin, CodesMixin, SalesMixin, OperatorMixin, BackgroundMixin,
              InstancesMixin, BackendCore):
    """The reference backend: one instance per process, shared by every request."""


__all__ = ["ApiError", "Backend", "iso", "order_json"]
_REEXPORTED = (BACKEND_CRASH_ENV, BACKEND_HANG_ENV, CARD_PROVIDER, CASH_PROVIDER,
               CODE_BATCH_CHUNK, LAST_SEEN_EVERY_S, MACHINE_METHODS, MAX_AMOUNT,
               MAX_CODE_VALIDITY, MIN_SECRET_LENGTH, SECRET_CACHE_S, _Effects)
"""Imported from ``vendhw.server.service`` elsewhere (operators, tests): kept importable."""
