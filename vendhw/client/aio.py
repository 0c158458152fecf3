"""The asyncio backend client (the machine agent's event loop)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from vendhw.client import core
from vendhw.client.base import ClientBase
from vendhw.client.core import Call, Op, T
from vendhw.client.errors import BackendError, BackendUnavailable
from vendhw.client.models import Instruction, Order, Redemption, ReportReceipt


class AsyncBackendClient(ClientBase):
    """The same API as :class:`~vendhw.client.sync.BackendClient`, awaitable.

    Outbox writes are local SQLite commits of one row; they run inline on the loop.
    """

    def __init__(self, base_url: str, machine_id: str, secret: str | bytes, *,
                 http: httpx.AsyncClient | None = None, **options: Any) -> None:
        super().__init__(base_url, machine_id, secret, **options)
        self.http = http or httpx.AsyncClient()
        self._owns_http = http is None
        self._closed = asyncio.Event()
        self._flush_lock: asyncio.Lock | None = None

    async def _send(self, call: Call) -> dict[str, Any]:
        attempt = 0
        while True:
            attempt += 1
            response: httpx.Response | None = None
            error: Exception | None = None
            try:
                response = await self.http.send(self.core.request(call))
            except httpx.TransportError as exc:
                error = exc
            delay = self.core.retry_delay(attempt, response)
            if delay is None:
                return self.core.outcome(call, response, error)
            try:
                await asyncio.wait_for(self._closed.wait(), delay)
            except asyncio.TimeoutError:
                continue
            raise BackendUnavailable("the client was closed")

    async def _run(self, op: Op[T]) -> T:
        return op.parse(await self._send(op.call))

    async def catalogue(self) -> dict[str, Any]:
        return await self._run(core.op_catalogue())

    async def create_order(self, slot: str, *, provider: str | None = None,
                           idempotency_key: str | None = None) -> Order:
        return await self._run(core.op_create_order(slot, provider, idempotency_key))

    async def order_status(self, order_id: str) -> Order:
        return await self._run(core.op_order_status(order_id))

    async def cancel_order(self, order_id: str) -> Order:
        return await self._run(core.op_cancel_order(order_id))

    async def redeem_code(self, code: str, *, idempotency_key: str | None = None
                          ) -> Redemption:
        return await self._run(core.op_redeem_code(code, idempotency_key))

    async def next_instructions(self, wait: float = 25.0, limit: int = 20
                                ) -> list[Instruction]:
        items = await self._run(core.op_instructions(wait, limit, self.core.timeout))
        new, seen = self._split_seen(items)
        for item in seen:
            try:
                await self._send(core.op_ack(item.id).call)
            except (BackendError, BackendUnavailable):
                pass
        return new

    async def ack(self, instruction_id: str, order_id: str = "") -> dict[str, Any]:
        self.outbox.mark_acked(instruction_id, order_id)
        return await self._run(core.op_ack(instruction_id))

    async def report_result(self, order_id: str, outcome: str,
                            details: dict[str, Any] | None = None, *,
                            instruction_id: str | None = None,
                            idempotency_key: str | None = None) -> ReportReceipt:
        call = self._queue_report(order_id, outcome, details, instruction_id, idempotency_key)
        return self._receipt(order_id, call, await self.flush())

    async def report_cash_sale(self, reference: str, slot: str, amount: int, outcome: str,
                               details: dict[str, Any] | None = None) -> ReportReceipt:
        """Book a cash sale after its dispense (see the sync client)."""
        call = self._queue_cash_sale(reference, slot, amount, outcome, details)
        return self._receipt(reference, call, await self.flush())

    async def flush(self) -> dict[str, dict[str, Any]]:
        if self._flush_lock is None:
            self._flush_lock = asyncio.Lock()
        sent: dict[str, dict[str, Any]] = {}
        async with self._flush_lock:
            for item in self.outbox.pending():
                try:
                    sent[item.key] = await self._send(item.call())
                except (BackendError, BackendUnavailable) as exc:
                    if self._settle(item, exc):
                        break
                    continue
                self.outbox.delivered(item.seq)
        return sent

    async def aclose(self) -> None:
        self._closed.set()
        if self._owns_http:
            await self.http.aclose()
        if self._owns_outbox:
            self.outbox.close()

    async def __aenter__(self) -> AsyncBackendClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


__all__ = ["AsyncBackendClient"]
