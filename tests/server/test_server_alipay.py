"""Alipay precreate against a local fake gateway (self-generated RSA2 keys, no network).

The fake verifies each call's RSA2 signature with the app's public key and signs the
``<method>_response`` node of its answers with the "Alipay" key; notifications are form
bodies shaped like the documented example.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest

from vendhw.client import BackendClient
from vendhw.server.providers.alipay import raw_node, sign_content
from vendhw.server.providers.wechat import load_private_key, load_public_key, rsa_sign, rsa_verify
from vendhw.testing.backend import InProcessServer

APP_ID = "2014072300007148"


class FakeAlipay:
    """Just enough of the Alipay gateway: precreate, query, close, refund, refund query."""

    def __init__(self, app_public: str, alipay_private: str) -> None:
        self.app_key = load_public_key(app_public)
        self.alipay_key = load_private_key(alipay_private)
        self.trades: dict[str, dict[str, Any]] = {}
        self.refund_calls: list[dict[str, Any]] = []

    def answer(self, method: str, node: dict[str, Any]) -> httpx.Response:
        node_text = json.dumps(node, ensure_ascii=False, separators=(",", ":"))
        signature = rsa_sign(self.alipay_key, node_text.encode())
        key = method.replace(".", "_") + "_response"
        text = f'{{"{key}":{node_text},"sign":"{signature}"}}'
        return httpx.Response(200, content=text.encode(),
                              headers={"Content-Type": "application/json;charset=utf-8"})

    def handle(self, request: httpx.Request) -> httpx.Response:
        params = dict(parse_qsl(request.content.decode()))
        method = params.get("method", "")
        if not rsa_verify(self.app_key, sign_content(params), params.get("sign", "")):
            return self.answer(method, {"code": "40002", "msg": "Invalid Arguments",
                                        "sub_code": "isv.invalid-signature"})
        assert params["app_id"] == APP_ID and params["sign_type"] == "RSA2"
        biz = json.loads(params["biz_content"])
        out_trade_no = biz.get("out_trade_no", "")
        trade = self.trades.get(out_trade_no)
        if method == "alipay.trade.precreate":
            assert params["notify_url"].endswith("/notify/alipay")
            self.trades[out_trade_no] = {"status": None, "total": biz["total_amount"],
                                         "trade_no": "2013112011001004330000121536"}
            return self.answer(method, {"code": "10000", "msg": "Success",
                                        "out_trade_no": out_trade_no,
                                        "qr_code": "https://qr.alipay.com/bax03431ljhokirwl38"})
        if trade is None or trade["status"] is None:  # nobody scanned yet
            return self.answer(method, {"code": "40004", "msg": "Business Failed",
                                        "sub_code": "ACQ.TRADE_NOT_EXIST",
                                        "sub_msg": "交易不存在"})
        if method == "alipay.trade.query":
            return self.answer(method, {"code": "10000", "msg": "Success",
                                        "out_trade_no": out_trade_no,
                                        "trade_no": trade["trade_no"],
                                        "trade_status": trade["status"],
                                        "total_amount": trade["total"],
                                        "send_pay_date": "2014-11-27 15:45:57"})
        if method == "alipay.trade.close":
            trade["status"] = "TRADE_CLOSED"
            return self.answer(method, {"code": "10000", "msg": "Success"})
        if method == "alipay.trade.refund":
            self.refund_calls.append(biz)
            first = trade.setdefault("refund_no", biz["out_request_no"])
            return self.answer(method, {"code": "10000", "msg": "Success",
                                        "trade_no": trade["trade_no"],
                                        "refund_fee": biz["refund_amount"],
                                        "fund_change": "Y" if first == biz["out_request_no"]
                                        and len(self.refund_calls) == 1 else "N"})
        if method == "alipay.trade.fastpay.refund.query":
            return self.answer(method, {"code": "10000", "msg": "Success",
                                        "refund_status": "REFUND_SUCCESS"})
        return self.answer(method, {"code": "40004", "msg": "unknown method"})

    def pay(self, out_trade_no: str) -> None:
        self.trades[out_trade_no]["status"] = "TRADE_SUCCESS"

    def notification(self, out_trade_no: str, **override: str) -> bytes:
        trade = self.trades[out_trade_no]
        params = {
            "gmt_create": "2015-04-27 15:45:57", "charset": "utf-8",
            "seller_email": "zhuzhanghu@alitest.com", "subject": "cola",
            "buyer_id": "208800XXXXXX", "invoice_amount": trade["total"],
            "notify_id": "4a91b7a78a503640467525113fb7d8bg8e", "notify_type": "trade_status_sync",
            "trade_status": "TRADE_SUCCESS", "receipt_amount": trade["total"],
            "app_id": APP_ID, "buyer_pay_amount": trade["total"], "seller_id": "2088102119685838",
            "gmt_payment": "2015-04-27 15:45:57", "notify_time": "2015-04-27 15:45:58",
            "version": "1.0", "out_trade_no": out_trade_no, "total_amount": trade["total"],
            "trade_no": trade["trade_no"], "auth_app_id": APP_ID,
            "buyer_logon_id": "zhu***@alitest.com", "point_amount": "0.00",
            "fund_bill_list": '[{"amount":"3.50","fundChannel":"ALIPAYACCOUNT"}]',
            **override,
        }
        params["sign"] = rsa_sign(self.alipay_key, sign_content(params))
        params["sign_type"] = "RSA2"
        return urlencode(params).encode()


@pytest.fixture
def alipay(tmp_path: Path, rsa_pair: tuple[str, str], rsa_pair_2: tuple[str, str]
           ) -> Iterator[tuple[InProcessServer, FakeAlipay, BackendClient]]:
    app_private, app_public = rsa_pair
    alipay_private, alipay_public = rsa_pair_2
    fake = FakeAlipay(app_public, alipay_private)
    options = {"app_id": APP_ID, "private_key": app_private, "alipay_public_key": alipay_public,
               "gateway": "https://openapi.alipay.test/gateway.do"}
    http = httpx.Client(transport=httpx.MockTransport(fake.handle))
    server = InProcessServer(tmp_path / "a.db", http=http, provider="alipay",
                             providers={"alipay": options}, order_ttl=60.0)
    server.add_machine("m1", slots={"A1": ("cola", 350)})
    with server.client("m1") as client:
        yield server, fake, client
    server.close()


FORM = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}


def test_raw_node_is_the_exact_signed_text() -> None:
    text = '{"a_response": {"x":"}","y":[1,2]} ,"sign":"s"}'
    assert raw_node(text, "a_response") == '{"x":"}","y":[1,2]}'
    assert raw_node(text, "b_response") is None


def test_precreate_and_notification_ship_once(
        alipay: tuple[InProcessServer, FakeAlipay, BackendClient]) -> None:
    server, fake, client = alipay
    order = client.create_order("A1")
    assert order.qr_text == "https://qr.alipay.com/bax03431ljhokirwl38"
    assert fake.trades[order.id]["total"] == "3.50"
    fake.pay(order.id)
    body = fake.notification(order.id)
    for _ in range(2):
        reply = server.http.post("/notify/alipay", content=body, headers=FORM)
        assert (reply.status_code, reply.text) == (200, "success")
    assert server.state(order.id) == "paid"
    assert len(client.next_instructions(wait=0)) == 1


def test_forged_notifications_are_refused(
        alipay: tuple[InProcessServer, FakeAlipay, BackendClient]) -> None:
    server, fake, client = alipay
    order = client.create_order("A1")
    fake.pay(order.id)
    forged = fake.notification(order.id).replace(b"total_amount=3.50", b"total_amount=0.01")
    reply = server.http.post("/notify/alipay", content=forged, headers=FORM)
    assert reply.status_code == 400 and reply.text != "success"
    other_app = fake.notification(order.id, app_id="2014072300000000")
    assert server.http.post("/notify/alipay", content=other_app,
                            headers=FORM).status_code == 400
    assert server.state(order.id) == "awaiting_payment"


def test_not_scanned_is_pending_then_late_payment_is_refunded(
        alipay: tuple[InProcessServer, FakeAlipay, BackendClient]) -> None:
    server, fake, client = alipay
    order = client.create_order("A1")
    server.advance(2)  # ACQ.TRADE_NOT_EXIST: nobody scanned yet
    assert server.state(order.id) == "awaiting_payment"
    server.advance(60)
    assert server.state(order.id) == "expired"
    fake.pay(order.id)  # scanned and paid after the machine gave up
    server.advance(30)
    assert server.state(order.id) == "refunded"
    assert fake.refund_calls == [{"out_trade_no": order.id, "refund_amount": "3.50",
                                  "out_request_no": "R" + order.id,
                                  "refund_reason": "payment after the order was expired"}]
