"""QR orders through every transition and failure path, with the sandbox provider."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from vendhw.client import BackendClient, BackendError, Instruction, Order
from vendhw.server.models import Instruction as InstructionRow
from vendhw.server.models import Payment, Refund, SandboxTrade
from vendhw.server.providers import PaymentEvent, ProviderError, RefundResult, TradeStatus
from vendhw.server.states import (
    FAILURE_OUTCOMES,
    TRANSITIONS,
    OrderState,
    TransitionError,
    check_transition,
)
from vendhw.testing.backend import InProcessServer


def paid(server: InProcessServer, client: BackendClient, slot: str = "A1"
         ) -> tuple[Order, Instruction]:
    order = client.create_order(slot)
    assert server.pay(order.id).status_code == 200
    [instruction] = client.next_instructions(wait=0)
    return order, instruction


def transitions(server: InProcessServer, order_id: str) -> list[tuple[str | None, str]]:
    return [(a["from"], a["to"]) for a in server.backend.audit(order_id)
            if a["entity"] == "order"]


def count(server: InProcessServer, model: Any, **where: Any) -> int:
    with server.backend.db.tx() as s:
        query = select(func.count()).select_from(model)
        for key, value in where.items():
            query = query.where(getattr(model, key) == value)
        return int(s.execute(query).scalar_one())


def ledger(server: InProcessServer, order_id: str) -> str:
    with server.backend.db.tx() as s:
        trade = s.get(SandboxTrade, order_id)
        assert trade is not None
        return trade.status


# --- the table itself --------------------------------------------------------------------


def test_every_transition_is_in_the_table_and_nothing_else() -> None:
    for (a, b) in TRANSITIONS:
        assert check_transition("o", a, b)
    allowed = set(TRANSITIONS)
    for a in OrderState:
        for b in OrderState:
            if (a, b) not in allowed:
                with pytest.raises(TransitionError, match=f"{a.value} -> {b.value}"):
                    check_transition("o", a, b)
    assert not any(a is OrderState.DELIVERED for a, _ in TRANSITIONS)
    assert not any(a is OrderState.REFUNDED for a, _ in TRANSITIONS)


# --- the happy path ----------------------------------------------------------------------


def test_qr_sale_goes_created_to_delivered(server: InProcessServer,
                                           client: BackendClient) -> None:
    order = client.create_order("A1")
    assert order.state == "awaiting_payment"
    assert (order.amount, order.currency, order.product_id) == (350, "CNY", "cola")
    assert order.qr_text == f"http://testserver/sandbox/pay/{order.id}"
    assert order.expires_at is not None and order.created_at is not None
    assert (order.expires_at - order.created_at).total_seconds() == pytest.approx(60, abs=0.01)
    page = server.http.get(f"/sandbox/pay/{order.id}")
    assert page.status_code == 200 and "Pay</button>" in page.text and "3.50 CNY" in page.text

    assert server.pay(order.id).json()["status"] == "paid"
    assert client.order_status(order.id).state == "paid"
    [ship] = client.next_instructions(wait=0)
    assert (ship.order_id, ship.slot, ship.product_id, ship.quantity) == (order.id, "A1",
                                                                          "cola", 1)
    assert client.ack(ship.id, ship.order_id)["order_state"] == "dispensing"
    receipt = client.report_result(order.id, "delivered", {"drop_ms": 420},
                                   instruction_id=ship.id)
    assert not receipt.queued and receipt.order is not None
    assert receipt.order.state == "delivered" and receipt.order.outcome == "delivered"
    assert transitions(server, order.id) == [
        (None, "created"), ("created", "awaiting_payment"), ("awaiting_payment", "paid"),
        ("paid", "dispensing"), ("dispensing", "delivered")]
    detail = server.operator("GET", f"/operator/v1/orders/{order.id}").json()
    assert detail["payment"]["amount"] == 350 and detail["payment"]["source"] == "notify"
    assert detail["outcome_details"] == {"drop_ms": 420}
    assert detail["instructions"] == [{"id": ship.id, "status": "acked", "deliveries": 1}]


def test_create_order_retry_with_same_key_is_one_order(server: InProcessServer,
                                                       client: BackendClient) -> None:
    first = client.create_order("A2", idempotency_key="order-k1")
    again = client.create_order("A2", idempotency_key="order-k1")
    assert first.id == again.id
    assert len(server.backend.list_orders()) == 1


def test_unknown_slot_and_unknown_provider_are_refused(client: BackendClient) -> None:
    with pytest.raises(BackendError) as info:
        client.create_order("Z9")
    assert (info.value.status, info.value.code) == (404, "unknown_slot")
    with pytest.raises(BackendError) as info:
        client.create_order("A1", provider="wechat")
    assert info.value.code == "unknown_provider"


# --- duplicates, out of order, lost --------------------------------------------------------


def test_duplicate_notifications_ship_exactly_once(server: InProcessServer,
                                                   client: BackendClient) -> None:
    order = client.create_order("A1")
    server.pay(order.id, notify=3)
    sandbox = server.backend.sandbox
    assert sandbox is not None
    event = sandbox.query(order.id)
    note = sandbox.build_notification(event)
    for _ in range(2):  # the provider retrying the very same message
        reply = server.http.post("/notify/sandbox", content=note.body, headers=note.headers)
        assert reply.status_code == 204
    server.advance(5)  # the query loop finds it paid too
    assert count(server, InstructionRow, order_id=order.id) == 1
    assert count(server, Payment, order_id=order.id) == 1
    assert transitions(server, order.id).count(("awaiting_payment", "paid")) == 1
    assert len(client.next_instructions(wait=0)) == 1


def test_late_and_out_of_order_notifications_change_nothing(server: InProcessServer,
                                                            client: BackendClient) -> None:
    order, ship = paid(server, client)
    client.ack(ship.id)
    client.report_result(order.id, "delivered", instruction_id=ship.id)
    sandbox = server.backend.sandbox
    assert sandbox is not None
    before = transitions(server, order.id)
    for status in (TradeStatus.PAID, TradeStatus.CLOSED, TradeStatus.PENDING):
        note = sandbox.build_notification(PaymentEvent(order.id, status, "sb_x", 350, "CNY"))
        assert server.http.post("/notify/sandbox", content=note.body,
                                headers=note.headers).status_code == 204
    assert transitions(server, order.id) == before
    assert server.state(order.id) == "delivered"
    assert count(server, InstructionRow, order_id=order.id) == 1


def test_lost_notification_is_found_by_the_query_loop(server: InProcessServer,
                                                      client: BackendClient) -> None:
    order = client.create_order("A1")
    server.pay(order.id, notify=0)
    assert server.state(order.id) == "awaiting_payment"
    assert client.next_instructions(wait=0) == []
    server.advance(2.0)
    assert server.state(order.id) == "paid"
    [ship] = client.next_instructions(wait=0)
    assert ship.order_id == order.id
    detail = server.backend.order_detail(order.id)
    assert detail["payment"]["source"] == "query"


def test_queries_back_off_until_expiry(server: InProcessServer, client: BackendClient,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox = server.backend.sandbox
    assert sandbox is not None
    times: list[float] = []
    original = sandbox.query

    def counting(out_trade_no: str) -> PaymentEvent:
        times.append(server.clock.now())
        return original(out_trade_no)

    monkeypatch.setattr(sandbox, "query", counting)
    order = client.create_order("A1")
    start = server.clock.now()
    for _ in range(70):
        server.advance(1.0)
    offsets = [round(t - start) for t in times]
    # 2 s, then doubling (4, 8) capped at query_max=8, and a last query at expiry (60 s).
    assert offsets[:5] == [2, 4, 8, 16, 24]
    assert offsets[offsets.index(56) + 1] == 60
    assert server.state(order.id) == "expired"


# --- expiry, cancellation, late payment ------------------------------------------------------


def test_expired_order_and_payment_after_expiry_is_refunded(server: InProcessServer,
                                                             client: BackendClient) -> None:
    order = client.create_order("A1")
    server.advance(61)
    assert server.state(order.id) == "expired"
    assert ledger(server, order.id) == "CLOSED"  # closed at the provider (best effort)
    server.pay(order.id)  # the customer pays anyway
    assert server.state(order.id) == "refunded"
    assert ledger(server, order.id) == "REFUND"
    assert client.next_instructions(wait=0) == []
    assert transitions(server, order.id)[-3:] == [
        ("awaiting_payment", "expired"), ("expired", "refunding"), ("refunding", "refunded")]
    assert server.backend.order_detail(order.id)["payment"]["late"] is True


def test_late_payment_without_notification_is_refunded_by_the_watch(
        server: InProcessServer, client: BackendClient) -> None:
    order = client.create_order("A1")
    server.advance(61)
    server.pay(order.id, notify=0)
    assert server.state(order.id) == "expired"
    for _ in range(4):
        server.advance(8)
    assert server.state(order.id) == "refunded"


def test_cancelled_order_then_payment_is_refunded(server: InProcessServer,
                                                  client: BackendClient) -> None:
    order = client.create_order("A1")
    assert client.cancel_order(order.id).state == "cancelled"
    assert client.cancel_order(order.id).state == "cancelled"  # idempotent
    server.pay(order.id)
    assert server.state(order.id) == "refunded"
    with pytest.raises(BackendError) as info:
        client.cancel_order(order.id)
    assert info.value.code == "not_cancellable"


def test_decline_cancels_the_order(server: InProcessServer, client: BackendClient) -> None:
    order = client.create_order("A1")
    assert server.decline(order.id).json()["status"] == "closed"
    assert server.state(order.id) == "cancelled"
    server.advance(600)
    assert server.state(order.id) == "cancelled"


def test_provider_failure_cancels_the_new_order(server: InProcessServer, client: BackendClient,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(order: Any) -> Any:
        raise ProviderError("gateway down", provider="sandbox")

    sandbox = server.backend.sandbox
    assert sandbox is not None
    monkeypatch.setattr(sandbox, "create_qr", broken)
    with pytest.raises(BackendError) as info:
        client.create_order("A1")
    assert info.value.code == "provider_error"
    [order] = server.backend.list_orders()
    assert order["state"] == "cancelled"


def test_a_keyed_create_order_whose_provider_failed_can_be_retried(
        server: InProcessServer, client: BackendClient, monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox = server.backend.sandbox
    assert sandbox is not None
    working = sandbox.create_qr

    def broken(order: Any) -> Any:
        raise ProviderError("gateway down", provider="sandbox")

    monkeypatch.setattr(sandbox, "create_qr", broken)
    with pytest.raises(BackendError) as info:
        client.create_order("A1", idempotency_key="order-k2")
    assert info.value.code == "provider_error"
    monkeypatch.setattr(sandbox, "create_qr", working)
    order = client.create_order("A1", idempotency_key="order-k2")
    assert order.state == "awaiting_payment"
    assert client.create_order("A1", idempotency_key="order-k2").id == order.id
    assert sorted(o["state"] for o in server.backend.list_orders()) == [
        "awaiting_payment", "cancelled"]
    # the key answers the order; reused for another request it is refused
    with pytest.raises(BackendError) as info:
        client.create_order("A2", idempotency_key="order-k2")
    assert info.value.code == "idempotency_key_reused"


def test_wrong_amount_goes_to_review_and_does_not_ship(server: InProcessServer,
                                                       client: BackendClient) -> None:
    order = client.create_order("A1")
    sandbox = server.backend.sandbox
    assert sandbox is not None
    note = sandbox.build_notification(PaymentEvent(order.id, TradeStatus.PAID, "sb_y", 1, "CNY"))
    server.http.post("/notify/sandbox", content=note.body, headers=note.headers)
    assert server.state(order.id) == "needs_review"
    assert client.next_instructions(wait=0) == []


def test_forged_and_stale_notifications_are_rejected(server: InProcessServer,
                                                     client: BackendClient) -> None:
    order = client.create_order("A1")
    sandbox = server.backend.sandbox
    assert sandbox is not None
    note = sandbox.build_notification(PaymentEvent(order.id, TradeStatus.PAID, "sb_z", 350,
                                                   "CNY"))
    forged = note.body.replace(b'"amount":350', b'"amount":351')
    assert server.http.post("/notify/sandbox", content=forged,
                            headers=note.headers).status_code == 400
    stale = dict(note.headers)
    server.clock.advance(301)  # type: ignore[attr-defined]
    assert server.http.post("/notify/sandbox", content=note.body,
                            headers=stale).status_code == 400
    assert server.http.post("/notify/sandbox", content=note.body).status_code == 400
    assert server.state(order.id) == "awaiting_payment"


# --- dispense results ----------------------------------------------------------------------


@pytest.mark.parametrize("outcome", sorted(FAILURE_OUTCOMES))
def test_definite_failure_is_refunded(server: InProcessServer, client: BackendClient,
                                      outcome: str) -> None:
    order, ship = paid(server, client)
    client.ack(ship.id)
    receipt = client.report_result(order.id, outcome, {"raw": 7}, instruction_id=ship.id)
    assert receipt.order is not None and receipt.order.state == "refunded"
    assert transitions(server, order.id)[-2:] == [("dispensing", "refunding"),
                                                  ("refunding", "refunded")]
    assert ledger(server, order.id) == "REFUND"
    refund = server.backend.order_detail(order.id)["refund"]
    assert refund["out_refund_no"] == "R" + order.id and refund["amount"] == 350


def test_refund_is_retried_with_the_same_refund_number(server: InProcessServer,
                                                       client: BackendClient,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox = server.backend.sandbox
    assert sandbox is not None
    original = sandbox.refund
    seen: list[str] = []

    def flaky(request: Any) -> RefundResult:
        seen.append(request.out_refund_no)
        if len(seen) == 1:
            raise ProviderError("timeout", provider="sandbox")
        return original(request)

    monkeypatch.setattr(sandbox, "refund", flaky)
    order, ship = paid(server, client)
    client.ack(ship.id)
    client.report_result(order.id, "jammed")
    assert server.state(order.id) == "refunding"
    server.advance(1)
    assert server.state(order.id) == "refunding"  # not due yet (retry after 5 s)
    server.advance(5)
    assert server.state(order.id) == "refunded"
    assert seen == ["R" + order.id] * 2
    assert count(server, Refund, order_id=order.id) == 1


def test_unknown_outcome_waits_for_an_operator(server: InProcessServer,
                                               client: BackendClient) -> None:
    order, ship = paid(server, client)
    client.ack(ship.id)
    client.report_result(order.id, "unknown", {"why": "power cut mid-vend"})
    server.advance(3600)
    assert server.state(order.id) == "needs_review"
    assert count(server, Refund) == 0
    assert client.next_instructions(wait=0) == []  # never re-shipped
    listed = server.operator("GET", "/operator/v1/orders", params={"state": "needs_review"})
    assert [o["id"] for o in listed.json()["orders"]] == [order.id]
    resolved = server.operator("POST", f"/operator/v1/orders/{order.id}/resolve",
                               json={"decision": "refund", "note": "slot checked: full"})
    assert resolved.json()["state"] == "refunded"

    other, _ = paid(server, client, "A2")
    client.report_result(other.id, "unknown")  # without an ack: implied
    resolved = server.operator("POST", f"/operator/v1/orders/{other.id}/resolve",
                               json={"decision": "delivered"})
    assert resolved.json()["state"] == "delivered"
    again = server.operator("POST", f"/operator/v1/orders/{other.id}/resolve",
                            json={"decision": "refund"})
    assert again.status_code == 409 and again.json()["error"] == "not_in_review"


def test_a_retried_report_counts_once(server: InProcessServer, client: BackendClient) -> None:
    order, ship = paid(server, client)
    client.ack(ship.id)
    first = client.report_result(order.id, "jammed", idempotency_key="r-1")
    second = client.report_result(order.id, "jammed", idempotency_key="r-1")
    assert first.order is not None and second.order is not None
    assert first.order.state == second.order.state == "refunded"
    assert transitions(server, order.id).count(("dispensing", "refunding")) == 1
    assert count(server, Refund) == 1
    with pytest.raises(BackendError) as info:  # same key, another body
        client.report_result(order.id, "delivered", idempotency_key="r-1")
    assert info.value.code == "report_refused" and "idempotency_key_reused" in info.value.detail
    with pytest.raises(BackendError) as info:  # new key, conflicting outcome
        client.report_result(order.id, "delivered", idempotency_key="r-2")
    assert "outcome_conflict" in info.value.detail


def test_report_for_an_unpaid_order_is_refused(server: InProcessServer,
                                               client: BackendClient) -> None:
    order = client.create_order("A1")
    with pytest.raises(BackendError) as info:
        client.report_result(order.id, "delivered")
    assert "not_dispensing" in info.value.detail
    assert server.state(order.id) == "awaiting_payment"


# --- instructions --------------------------------------------------------------------------


def test_unacknowledged_instruction_is_redelivered(server: InProcessServer,
                                                   client: BackendClient) -> None:
    order, ship = paid(server, client)
    assert ship.delivery == 1
    assert client.next_instructions(wait=0) == []
    server.clock.advance(10)  # type: ignore[attr-defined]
    [again] = client.next_instructions(wait=0)
    assert (again.id, again.delivery) == (ship.id, 2)
    client.ack(again.id)
    client.ack(again.id)  # acknowledging twice is harmless
    server.clock.advance(60)  # type: ignore[attr-defined]
    assert client.next_instructions(wait=0) == []
    assert server.state(order.id) == "dispensing"


def test_client_hides_redeliveries_it_already_acknowledged(server: InProcessServer,
                                                           client: BackendClient) -> None:
    order, ship = paid(server, client)
    client.outbox.mark_acked(ship.id, order.id)  # journaled, but the ack never arrived
    server.clock.advance(10)  # type: ignore[attr-defined]
    assert client.next_instructions(wait=0) == []  # re-acknowledged quietly
    assert server.state(order.id) == "dispensing"


def test_operator_refund_withdraws_the_instruction(server: InProcessServer,
                                                   client: BackendClient) -> None:
    order, ship = paid(server, client)
    response = server.operator("POST", f"/operator/v1/orders/{order.id}/refund",
                               json={"note": "machine offline for a day"})
    assert response.json()["state"] == "refunded"
    with pytest.raises(BackendError) as info:
        client.ack(ship.id)
    assert info.value.code == "instruction_cancelled"
    server.clock.advance(60)  # type: ignore[attr-defined]
    assert client.next_instructions(wait=0) == []


def test_health_and_docs(server: InProcessServer) -> None:
    assert server.http.get("/healthz").json() == {"status": "ok", "providers": ["sandbox"]}
    assert server.http.get("/docs").status_code == 200
    paths = server.http.get("/openapi.json").json()["paths"]
    assert "/machine/v1/orders" in paths and "/operator/v1/codes" in paths
