"""Partial refunds: through the provider, recorded per refund, never more than was paid, never
twice; the order stays delivered and shows what was refunded. HTTP route and CLI."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from vendhw.cli.backend import backend as backend_cli
from vendhw.client import BackendClient
from vendhw.server.models import Refund, SandboxRefund, SandboxTrade
from vendhw.server.operators import Operators, money, parse_money
from vendhw.server.providers import RefundRequest
from vendhw.server.service import ApiError, Backend
from vendhw.server.settings import ServerSettings
from vendhw.testing.backend import InProcessServer


def delivered(server: InProcessServer, client: BackendClient, slot: str = "A1") -> str:
    order = client.create_order(slot)
    assert server.pay(order.id).status_code == 200
    [ship] = client.next_instructions(wait=0)
    client.ack(ship.id, ship.order_id)
    client.report_result(order.id, "delivered", instruction_id=ship.id)
    assert server.state(order.id) == "delivered"
    return order.id


def test_money_parsing_and_display() -> None:
    assert parse_money("1.50") == 150 and parse_money("2") == 200 and parse_money("0.05") == 5
    for bad in ("0", "-1", "_1", "1.505", "abc", "nan", "inf", ""):
        with pytest.raises(ValueError):
            parse_money(bad)
    assert money(350, "CNY") == "3.50 CNY" and money(5) == "0.05"


def test_two_partial_refunds_then_the_rest_is_refused(server: InProcessServer,
                                                     client: BackendClient) -> None:
    order_id = delivered(server, client)
    ops = Operators(server.backend)
    first = ops.refund_part(order_id, 150, "dented can", operator="alice")
    assert first["status"] == "succeeded" and first["kind"] == "partial"
    assert first["out_refund_no"] == f"R{order_id}_1" and first["total"] == 350
    second = ops.refund_part(order_id, 200, "")
    assert second["status"] == "succeeded" and second["out_refund_no"] == f"R{order_id}_2"
    with pytest.raises(ApiError) as refused:
        ops.refund_part(order_id, 1, "one fen more")
    assert refused.value.code == "refund_exceeds_payment"
    assert "0.00 CNY of 3.50 CNY left" in refused.value.detail
    detail = server.backend.order_detail(order_id)
    assert detail["state"] == "delivered"  # the goods left the machine
    assert detail["refunded"] == 350 and detail["refund_pending"] == 0
    assert [r["amount"] for r in detail["refunds"]] == [150, 200]
    assert detail["refunds"][0]["operator"] == "alice"
    assert detail["refunds"][0]["reason"] == "dented can"
    assert detail["refund"] is None  # no whole refund
    with server.backend.db.tx() as s:  # the provider's own ledger agrees
        trade = s.get(SandboxTrade, order_id)
        assert trade is not None and trade.refunded == 350
        assert s.execute(select(func.count()).select_from(SandboxRefund)).scalar() == 2
    trail = server.backend.audit(f"R{order_id}_1")
    assert [(a["from"], a["to"]) for a in trail] == [(None, "pending"), ("pending", "succeeded")]
    assert trail[0]["actor"] == "operator:alice" and "dented can" in trail[0]["reason"]


def test_only_delivered_provider_paid_orders(server: InProcessServer,
                                            client: BackendClient) -> None:
    ops = Operators(server.backend)
    order = client.create_order("A1")  # awaiting payment
    for order_id, code in ((order.id, "not_partially_refundable"), ("nope", "unknown_order")):
        with pytest.raises(ApiError) as refused:
            ops.refund_part(order_id, 100)
        assert refused.value.code == code
    delivered_id = delivered(server, client)
    for amount in (0, -5, 2**31, True):
        with pytest.raises(ApiError) as refused:
            ops.refund_part(delivered_id, amount)
        assert refused.value.code == "bad_amount"
    with pytest.raises(ApiError):
        ops.refund_part(delivered_id, 400)  # more than paid at once


def test_a_request_key_refunds_once(server: InProcessServer, client: BackendClient) -> None:
    order_id = delivered(server, client)
    ops = Operators(server.backend)
    first = ops.refund_part(order_id, 100, request_key="ticket-17")
    again = ops.refund_part(order_id, 100, request_key="ticket-17")
    assert again["id"] == first["id"]
    with pytest.raises(ApiError) as refused:
        ops.refund_part(order_id, 120, request_key="ticket-17")
    assert refused.value.code == "request_key_reused"
    assert server.backend.order_detail(order_id)["refunded"] == 100


def test_the_sandbox_refunds_each_number_once_and_never_beyond_the_payment(
        server: InProcessServer, client: BackendClient) -> None:
    order_id = delivered(server, client)
    sandbox = server.backend.sandbox
    assert sandbox is not None
    part = RefundRequest(order_id, "Rx_1", 300, 350, "CNY", "r")
    assert sandbox.refund(part).state.value == "succeeded"
    assert sandbox.refund(part).state.value == "succeeded"  # same number: no second payout
    assert sandbox.refund(RefundRequest(order_id, "Rx-2", 51, 350, "CNY", "r")
                          ).state.value == "failed"
    assert sandbox.query_refund(part).state.value == "succeeded"
    with server.backend.db.tx() as s:
        trade = s.get(SandboxTrade, order_id)
        assert trade is not None and trade.refunded == 300


def test_a_refund_the_provider_refuses_stays_pending_and_is_retried(
        server: InProcessServer, client: BackendClient) -> None:
    order_id = delivered(server, client)
    with server.backend.db.tx() as s:  # the provider's ledger thinks more was refunded
        trade = s.get(SandboxTrade, order_id)
        assert trade is not None
        trade.refunded = 300
    refund = Operators(server.backend).refund_part(order_id, 100)
    assert refund["status"] == "pending" and "exceeds" in refund["last_error"]
    detail = server.backend.order_detail(order_id)
    assert detail["refunded"] == 0 and detail["refund_pending"] == 100
    with server.backend.db.tx() as s:
        s.get(SandboxTrade, order_id).refunded = 0  # type: ignore[union-attr]
    server.advance(120)  # the background loop retries with the same number
    assert Operators(server.backend).refund(refund["id"])["status"] == "succeeded"
    assert server.backend.order_detail(order_id)["refunded"] == 100


def test_http_route(server: InProcessServer, client: BackendClient) -> None:
    order_id = delivered(server, client)
    path = f"/operator/v1/orders/{order_id}/refunds"
    assert server.http.post(path, json={"amount": 100}).status_code == 401
    made = server.operator("POST", path, json={"amount": 100, "reason": "late"})
    assert made.status_code == 201 and made.json()["status"] == "succeeded"
    too_much = server.operator("POST", path, json={"amount": 251})
    assert too_much.status_code == 409 and too_much.json()["error"] == "refund_exceeds_payment"
    assert server.operator("POST", path, json={"amount": "x"}).status_code == 422
    listed = server.operator("GET", "/operator/v1/refunds", params={"order": order_id})
    assert [r["amount"] for r in listed.json()["refunds"]] == [100]
    assert server.operator("GET", f"/operator/v1/orders/{order_id}").json()["refunded"] == 100


def _race_backend(url: str) -> Backend:
    return Backend(ServerSettings(db_url=url, operator_token="t", run_poller=False,
                                  public_url="http://testserver"))


def test_concurrent_partial_refunds_never_exceed_the_payment(db_url: str) -> None:
    """Two backends ("processes") on one database, 8 operators at once asking 1.00 each of a
    3.50 order: three win, five are refused cleanly, 3.00 is refunded (SQLite, PostgreSQL)."""
    first, second = _race_backend(db_url), _race_backend(db_url)
    second.settings.sandbox_secret = first.settings.sandbox_secret
    try:
        first.load_catalogue({"currency": "CNY", "products": [{"id": "cola", "price": 350}],
                              "machines": [{"id": "m1", "secret": "s3cret-m1-0123456789",
                                            "slots": [{"slot": "A1", "product": "cola"}]}]})
        order_id = _delivered_direct(first)
        barrier = threading.Barrier(8)
        results: list[Any] = [None] * 8

        def run(i: int) -> None:
            ops = Operators(first if i % 2 else second)
            barrier.wait()
            try:
                results[i] = ops.refund_part(order_id, 100, f"race {i}")
            except BaseException as exc:  # kept for the assertions
                results[i] = exc

        threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        won = [r for r in results if isinstance(r, dict)]
        lost = [r for r in results if not isinstance(r, dict)]
        assert len(won) == 3 and len(lost) == 5
        assert all(isinstance(e, ApiError) and e.code == "refund_exceeds_payment" for e in lost)
        assert {r["out_refund_no"] for r in won} == {f"R{order_id}_{n}" for n in (1, 2, 3)}
        with first.db.tx() as s:
            total = s.execute(select(func.sum(Refund.amount)).where(
                Refund.order_id == order_id)).scalar()
            trade = s.get(SandboxTrade, order_id)
            assert total == 300 and trade is not None and trade.refunded == 300
    finally:
        first.close()
        second.close()


def _delivered_direct(backend: Backend) -> str:
    order = backend.create_order("m1", "A1")
    assert backend.sandbox is not None
    backend.sandbox.pay(order["id"])  # the ledger says SUCCESS; the notification ships it
    [ins], _ = backend.take_instructions("m1")
    backend.ack("m1", ins["id"])
    backend.report_result("m1", order["id"], "delivered")
    return str(order["id"])


def test_cli_create_and_list(server: InProcessServer, client: BackendClient,
                             tmp_path: Path) -> None:
    order_id = delivered(server, client)
    db = str(tmp_path / "backend.db")
    runner = CliRunner()
    made = runner.invoke(backend_cli, ["refunds", "create", order_id, "--amount", "1.50",
                                       "--reason", "dented", "--db", db])
    assert made.exit_code == 0, made.output
    assert f"refund R{order_id}_1: 1.50 CNY of order {order_id}, succeeded" in made.output
    assert "paid 3.50 CNY, refunded 1.50 CNY, pending 0.00 CNY" in made.output
    again = runner.invoke(backend_cli, ["refunds", "create", order_id, "--amount", "2.01",
                                        "--db", db])
    assert again.exit_code == 1
    assert again.output.strip() == ("Error: 2.01 CNY asked, 2.00 CNY of 3.50 CNY left to "
                                     "refund")
    bad = runner.invoke(backend_cli, ["refunds", "create", order_id, "--amount", "1.234",
                                      "--db", db])
    assert bad.exit_code == 2 and "at most two decimals" in bad.output
    as_json = runner.invoke(backend_cli, ["refunds", "create", order_id, "--amount", "0.50",
                                          "--json", "--db", db])
    assert json.loads(as_json.output)["amount"] == 50
    listed = runner.invoke(backend_cli, ["refunds", "list", "--order", order_id, "--json",
                                         "--db", db])
    lines = [json.loads(line) for line in listed.output.splitlines()]
    assert [r["amount"] for r in lines] == [50, 150] and lines[0]["currency"] == "CNY"
    table = runner.invoke(backend_cli, ["refunds", "list", "--db", db])
    assert "1.50 CNY" in table.output and "dented" in table.output
