"""The blocking backend client (threads, scripts, the CLI)."""

from __future__ import annotations

import threading
from typing import Any

import httpx

from vendhw.client import core
from vendhw.client.base import ClientBase
from vendhw.client.core import Call, Op, T
from vendhw.client.errors import BackendError, BackendUnavailable
from vendhw.client.models import Instruction, Order, Redemption, ReportReceipt


class BackendClient(ClientBase):
    """Signed calls to the reference backend, with retries and the report outbox.

    ``http`` may be any ``httpx.Client`` (FastAPI's TestClient included); otherwise one is
    made and closed with the client.
    """

    def __init__(self, base_url: str, machine_id: str, secret: str | bytes, *,
                 http: httpx.Client | None = None, **options: Any) -> None:
        super().__init__(base_url, machine_id, secret, **options)
        self.http = http or httpx.Client()
        self._owns_http = http is None
        self._closed = threading.Event()
        self._flush_lock = threading.Lock()

    # --- the executor --------------------------------------------------------------------

    def _send(self, call: Call) -> dict[str, Any]:
        attempt = 0
        while True:
            attempt += 1
            response: httpx.Response | None = None
            error: Exception | None = None
            try:
                response = self.http.send(self.core.request(call))
            except httpx.TransportError as exc:
                error = exc
            delay = self.core.retry_delay(attempt, response)
            if delay is None:
                return self.core.outcome(call, response, error)
            if self._closed.wait(delay):
                raise BackendUnavailable("the client was closed")

    def _run(self, op: Op[T]) -> T:
        return op.parse(self._send(op.call))

    # --- the machine API -----------------------------------------------------------------

    def catalogue(self) -> dict[str, Any]:
        """This machine's slots, products and prices."""
        return self._run(core.op_catalogue())

    def create_order(self, slot: str, *, provider: str | None = None,
                     idempotency_key: str | None = None) -> Order:
        """Order the product of ``slot``; show ``order.qr_text`` as a QR until ``expires_at``."""
        return self._run(core.op_create_order(slot, provider, idempotency_key))

    def order_status(self, order_id: str) -> Order:
        return self._run(core.op_order_status(order_id))

    def cancel_order(self, order_id: str) -> Order:
        """Give up on an unpaid order (a payment arriving later is refunded)."""
        return self._run(core.op_cancel_order(order_id))

    def redeem_code(self, code: str, *, idempotency_key: str | None = None) -> Redemption:
        """Submit a typed pickup/lottery code; raises BackendError(code=...) when refused."""
        return self._run(core.op_redeem_code(code, idempotency_key))

    def next_instructions(self, wait: float = 25.0, limit: int = 20) -> list[Instruction]:
        """Long-poll for ship instructions (``[]`` after ``wait`` seconds without any).

        Redeliveries of instructions this machine already acknowledged are acknowledged
        again quietly and not returned, so each instruction surfaces once per outbox.
        """
        items = self._run(core.op_instructions(wait, limit, self.core.timeout))
        new, seen = self._split_seen(items)
        for item in seen:
            try:
                self._send(core.op_ack(item.id).call)
            except (BackendError, BackendUnavailable):
                pass  # redelivered again later; acknowledged again then
        return new

    def ack(self, instruction_id: str, order_id: str = "") -> dict[str, Any]:
        """Acknowledge an instruction once it is in the vend journal (before dispensing).

        Raises BackendError ``instruction_cancelled`` when an operator withdrew it: then do
        not ship.
        """
        self.outbox.mark_acked(instruction_id, order_id)
        return self._run(core.op_ack(instruction_id))

    def report_result(self, order_id: str, outcome: str, details: dict[str, Any] | None = None,
                      *, instruction_id: str | None = None,
                      idempotency_key: str | None = None) -> ReportReceipt:
        """Report a dispense outcome: queued durably first, then sent with every older one.

        When the backend cannot be reached the receipt says ``queued``; :meth:`flush` (called
        by every later report, or by the agent when the link returns) delivers it, in order.
        """
        call = self._queue_report(order_id, outcome, details, instruction_id, idempotency_key)
        return self._receipt(order_id, call, self.flush())

    def report_cash_sale(self, reference: str, slot: str, amount: int, outcome: str,
                         details: dict[str, Any] | None = None) -> ReportReceipt:
        """Book a cash sale after its dispense; queued durably like a dispense report.

        ``reference`` is the machine's own id of the sale (the cash-journal spend), so a
        retried or replayed report books one order.
        """
        call = self._queue_cash_sale(reference, slot, amount, outcome, details)
        return self._receipt(reference, call, self.flush())

    def flush(self) -> dict[str, dict[str, Any]]:
        """Send queued reports oldest first; stop at the first that cannot go yet."""
        sent: dict[str, dict[str, Any]] = {}
        with self._flush_lock:
            for item in self.outbox.pending():
                try:
                    sent[item.key] = self._send(item.call())
                except (BackendError, BackendUnavailable) as exc:
                    if self._settle(item, exc):
                        break
                    continue
                self.outbox.delivered(item.seq)
        return sent

    def close(self) -> None:
        self._closed.set()
        if self._owns_http:
            self.http.close()
        if self._owns_outbox:
            self.outbox.close()

    def __enter__(self) -> BackendClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["BackendClient"]
