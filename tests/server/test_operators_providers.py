"""Partial refunds at WeChat Pay (``amount.refund`` of ``amount.total``, one ``out_refund_no``
per part) and Alipay (``refund_amount`` with one ``out_request_no`` per part), against the
local fakes of the provider tests."""

from __future__ import annotations

from test_server_alipay import FakeAlipay, alipay  # noqa: F401  (fixture)
from test_server_wechat import FakeWeChatPay, wechat  # noqa: F401  (fixture)

from vendhw.client import BackendClient
from vendhw.server.operators import Operators
from vendhw.testing.backend import InProcessServer


def _deliver(client: BackendClient, order_id: str) -> None:
    [ship] = client.next_instructions(wait=0)
    client.ack(ship.id)
    client.report_result(order_id, "delivered", instruction_id=ship.id)


def test_wechat_partial_refunds(
        wechat: tuple[InProcessServer, FakeWeChatPay, BackendClient]) -> None:  # noqa: F811
    server, fake, client = wechat
    order = client.create_order("A1")
    fake.pay(order.id)
    server.advance(2)  # the query loop finds the payment
    _deliver(client, order.id)
    ops = Operators(server.backend)
    first = ops.refund_part(order.id, 150, "dented")
    second = ops.refund_part(order.id, 50)
    assert first["status"] == second["status"] == "processing"  # WeChat: PROCESSING
    assert fake.refunds[f"R{order.id}_1"]["amount"] == {"refund": 150, "total": 350,
                                                        "currency": "CNY"}
    assert fake.refunds[f"R{order.id}_2"]["amount"] == {"refund": 50, "total": 350,
                                                        "currency": "CNY"}
    fake.refunds[f"R{order.id}_1"]["status"] = "SUCCESS"
    server.advance(120)  # the refund loop queries each refund by its own number
    detail = server.backend.order_detail(order.id)
    assert (detail["state"], detail["refunded"], detail["refund_pending"]) == (
        "delivered", 150, 50)


def test_alipay_partial_refunds(
        alipay: tuple[InProcessServer, FakeAlipay, BackendClient]) -> None:  # noqa: F811
    server, fake, client = alipay
    order = client.create_order("A1")
    fake.pay(order.id)
    server.advance(2)
    _deliver(client, order.id)
    ops = Operators(server.backend)
    assert ops.refund_part(order.id, 150, "dented")["status"] == "succeeded"
    ops.refund_part(order.id, 200)
    assert [(c["refund_amount"], c["out_request_no"]) for c in fake.refund_calls] == [
        ("1.50", f"R{order.id}_1"), ("2.00", f"R{order.id}_2")]
    server.advance(120)  # fund_change=N on the second: confirmed by the refund query
    assert server.backend.order_detail(order.id)["refunded"] == 350
