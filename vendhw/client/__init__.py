"""Signed HTTP client of the vendhw reference backend, sync and async.

::

    from vendhw.client import BackendClient

    with BackendClient("http://127.0.0.1:8080", "m1", SECRET, outbox="/var/lib/vendhw/j.db") as c:
        order = c.create_order("A1")            # show order.qr_text as a QR
        for ins in c.next_instructions(wait=25):  # long-poll
            c.ack(ins.id, ins.order_id)          # after journaling the vend
            c.report_result(ins.order_id, "delivered", instruction_id=ins.id)

Every request is HMAC-signed (:mod:`vendhw.client.signing`); retries keep their
``Idempotency-Key``; reports wait in a SQLite outbox while the backend is out of reach.
"""

from __future__ import annotations

from vendhw.client.aio import AsyncBackendClient
from vendhw.client.errors import (
    AuthenticationError,
    BackendError,
    BackendUnavailable,
    RateLimitedError,
)
from vendhw.client.models import OUTCOMES, Instruction, Order, Redemption, ReportReceipt
from vendhw.client.outbox import Outbox
from vendhw.client.sync import BackendClient

__all__ = [
    "OUTCOMES",
    "AsyncBackendClient",
    "AuthenticationError",
    "BackendClient",
    "BackendError",
    "BackendUnavailable",
    "Instruction",
    "Order",
    "Outbox",
    "RateLimitedError",
    "Redemption",
    "ReportReceipt",
]
