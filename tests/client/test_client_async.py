"""The asyncio client runs the same contract over the ASGI app (no sockets)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from vendhw.client import AsyncBackendClient, BackendError, RateLimitedError
from vendhw.testing.backend import BASE_URL, InProcessServer


def make_client(server: InProcessServer, outbox: Path | None = None) -> AsyncBackendClient:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=server.app), base_url=BASE_URL)
    return AsyncBackendClient(BASE_URL, "m1", server.secrets["m1"], http=http, outbox=outbox,
                              backoff=0.0, clock=server.clock.now)


def test_async_sale_with_long_poll(tmp_path: Path) -> None:
    server = InProcessServer(tmp_path / "b.db")
    server.add_machine("m1")

    async def sale() -> None:
        async with make_client(server, tmp_path / "outbox.db") as client:
            catalogue = await client.catalogue()
            assert catalogue["slots"][0]["price"] == 350
            order = await client.create_order("A1")
            assert order.state == "awaiting_payment"
            poll = asyncio.create_task(client.next_instructions(wait=5))
            await asyncio.sleep(0.05)
            assert not poll.done()
            # The customer pays (a thread, as a phone would: another connection).
            response = await asyncio.to_thread(server.pay, order.id)
            assert response.status_code == 200
            [ship] = await asyncio.wait_for(poll, 5)
            assert ship.order_id == order.id
            assert (await client.ack(ship.id, ship.order_id))["order_state"] == "dispensing"
            receipt = await client.report_result(order.id, "timeout", {"motor_ms": 8000},
                                                 instruction_id=ship.id)
            assert receipt.order is not None and receipt.order.state == "refunded"
            again = await client.report_result(order.id, "timeout", {"motor_ms": 8000},
                                               instruction_id=ship.id)
            assert again.order is not None and again.order.state == "refunded"
            assert (await client.order_status(order.id)).outcome == "timeout"

    try:
        asyncio.run(sale())
        moves = [(a["from"], a["to"]) for a in server.backend.audit(
            server.backend.list_orders()[0]["id"])]
        assert moves.count(("dispensing", "refunding")) == 1
    finally:
        server.close()


def test_async_codes_and_refusals(tmp_path: Path) -> None:
    server = InProcessServer(tmp_path / "b.db", code_max_failures=2)
    server.add_machine("m1")
    [created] = server.backend.create_codes("cola", 1, "1h")

    async def redeem() -> None:
        async with make_client(server) as client:
            redemption = await client.redeem_code(created["code"])
            assert redemption.order.kind == "code"
            assert redemption.instruction is not None
            with pytest.raises(BackendError) as info:
                await client.redeem_code(created["code"][:4] + "000000")
            assert info.value.code == "code_invalid"
            with pytest.raises(RateLimitedError):
                await client.redeem_code(created["code"][:4] + "000001")
            cancelled = await client.create_order("A2")
            assert (await client.cancel_order(cancelled.id)).state == "cancelled"

    try:
        asyncio.run(redeem())
    finally:
        server.close()
