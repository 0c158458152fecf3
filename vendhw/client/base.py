"""State and decisions shared by the sync and async clients (no I/O of its own)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vendhw.client.core import Call, ClientCore, cash_sale_call, report_call, result_key
from vendhw.client.errors import BackendError
from vendhw.client.models import Instruction, Order, ReportReceipt
from vendhw.client.outbox import Outbox, OutboxItem


class ClientBase:
    """Configuration, the signing core and the outbox; the executors add the sending."""

    def __init__(self, base_url: str, machine_id: str, secret: str | bytes, *,
                 outbox: Outbox | str | Path | None = None, timeout: float = 10.0,
                 retries: int = 3, backoff: float = 0.2,
                 clock: Callable[[], float] = time.time) -> None:
        self.core = ClientCore(base_url, machine_id, secret, timeout=timeout, retries=retries,
                               backoff=backoff, clock=clock)
        self.outbox = outbox if isinstance(outbox, Outbox) else Outbox(outbox)
        self._owns_outbox = not isinstance(outbox, Outbox)

    @property
    def machine_id(self) -> str:
        return self.core.machine_id

    def _queue_report(self, order_id: str, outcome: str, details: dict[str, Any] | None,
                      instruction_id: str | None, idempotency_key: str | None) -> Call:
        call = report_call(order_id, outcome, details, instruction_id,
                           idempotency_key or result_key(order_id))
        self.outbox.enqueue(call)
        return call

    def _queue_cash_sale(self, reference: str, slot: str, amount: int, outcome: str,
                         details: dict[str, Any] | None) -> Call:
        call = cash_sale_call(reference, slot, amount, outcome, details)
        self.outbox.enqueue(call)
        return call

    def _receipt(self, order_id: str, call: Call, sent: dict[str, dict[str, Any]]
                 ) -> ReportReceipt:
        key = call.idempotency_key or ""
        state = self.outbox.state(key)
        if state == "dead":
            raise BackendError(409, "report_refused", self.outbox.last_error(key))
        if state == "queued":
            return ReportReceipt(order_id, key, queued=True)
        body = sent.get(key)
        order = Order.from_json(body) if body and "id" in body else None
        return ReportReceipt(order_id, key, queued=False, order=order)

    def _settle(self, item: OutboxItem, exc: Exception) -> bool:
        """Record a failed flush attempt; True when the flush must stop (keep the order)."""
        if self.core.keep_queued(exc):
            self.outbox.failed(item.seq, str(exc))
            return True
        self.outbox.dead(item.seq, str(exc))
        return False

    def _split_seen(self, items: list[Instruction]) -> tuple[list[Instruction],
                                                              list[Instruction]]:
        """New instructions, and redeliveries of ones this machine already acknowledged."""
        new: list[Instruction] = []
        seen: list[Instruction] = []
        for item in items:
            (seen if self.outbox.is_acked(item.id) else new).append(item)
        return new, seen


__all__ = ["ClientBase"]
