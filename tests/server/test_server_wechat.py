"""WeChat Pay APIv3 Native against a local fake of the API (self-generated keys, no network).

The fake checks every request's WECHATPAY2-SHA256-RSA2048 signature with the merchant's
public key and signs its answers and notifications with a "platform" key, with bodies shaped
like the documented examples.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vendhw.client import BackendClient
from vendhw.server.providers.wechat import load_private_key, load_public_key, rsa_sign, rsa_verify
from vendhw.testing.backend import InProcessServer

MCHID = "1900000001"
APPID = "wxd678efh567hg6787"
API_V3_KEY = "0123456789abcdef0123456789abcdef"
PLATFORM_SERIAL = "PUB_KEY_ID_0000000000000024101100397200000006"


class FakeWeChatPay:
    """Just enough of api.mch.weixin.qq.com for Native orders, queries, closes and refunds."""

    def __init__(self, merchant_public: str, platform_private: str) -> None:
        self.merchant_key = load_public_key(merchant_public)
        self.platform_key = load_private_key(platform_private)
        self.trades: dict[str, dict[str, Any]] = {}
        self.refunds: dict[str, dict[str, Any]] = {}
        self.requests: list[str] = []

    def signed_headers(self, body: bytes) -> dict[str, str]:
        timestamp, nonce = str(int(time.time())), secrets.token_hex(16)
        message = f"{timestamp}\n{nonce}\n".encode() + body + b"\n"
        return {"Wechatpay-Timestamp": timestamp, "Wechatpay-Nonce": nonce,
                "Wechatpay-Serial": PLATFORM_SERIAL,
                "Wechatpay-Signature": rsa_sign(self.platform_key, message)}

    def answer(self, status: int, data: dict[str, Any] | None) -> httpx.Response:
        body = b"" if data is None else json.dumps(data).encode()
        headers = self.signed_headers(body) if body else {}
        return httpx.Response(status, content=body, headers=headers)

    def handle(self, request: httpx.Request) -> httpx.Response:
        auth = request.headers.get("authorization", "")
        fields = dict(re.findall(r'(\w+)="([^"]*)"', auth))
        path = request.url.raw_path.decode()
        body = request.content.decode()
        message = (f"{request.method}\n{path}\n{fields.get('timestamp')}\n"
                   f"{fields.get('nonce_str')}\n{body}\n").encode()
        if (not auth.startswith("WECHATPAY2-SHA256-RSA2048 ") or fields.get("mchid") != MCHID
                or not rsa_verify(self.merchant_key, message, fields.get("signature", ""))):
            return self.answer(401, {"code": "SIGN_ERROR", "message": "bad signature"})
        self.requests.append(f"{request.method} {request.url.path}")
        if path == "/v3/pay/transactions/native":
            data = json.loads(body)
            assert data["amount"]["currency"] == "CNY" and data["notify_url"].endswith(
                "/notify/wechat")
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+08:00", data["time_expire"])
            self.trades[data["out_trade_no"]] = {"state": "NOTPAY", "total": data["amount"]
                                                 ["total"], "transaction_id": ""}
            return self.answer(200, {"code_url": "weixin://wxpay/bizpayurl?pr=p4lpSuKzz"})
        match = re.fullmatch(r"/v3/pay/transactions/out-trade-no/(\w+)\?mchid=(\d+)", path)
        if match and request.method == "GET":
            trade = self.trades.get(match.group(1))
            if trade is None:
                return self.answer(404, {"code": "ORDER_NOT_EXIST", "message": "no order"})
            return self.answer(200, self.transaction(match.group(1)))
        match = re.fullmatch(r"/v3/pay/transactions/out-trade-no/(\w+)/close", path)
        if match:
            trade = self.trades[match.group(1)]
            if trade["state"] == "NOTPAY":
                trade["state"] = "CLOSED"
            return self.answer(204, None)
        if path == "/v3/refund/domestic/refunds":
            data = json.loads(body)
            refund = self.refunds.setdefault(data["out_refund_no"], {
                "refund_id": "50000000382019052709732678859", "status": "PROCESSING",
                "out_refund_no": data["out_refund_no"], "amount": data["amount"]})
            self.trades[data["out_trade_no"]]["state"] = "REFUND"
            return self.answer(200, refund)
        match = re.fullmatch(r"/v3/refund/domestic/refunds/(\w+)", path)
        if match:
            return self.answer(200, self.refunds[match.group(1)])
        return self.answer(404, {"code": "NOT_FOUND", "message": path})

    def transaction(self, out_trade_no: str) -> dict[str, Any]:
        trade = self.trades[out_trade_no]
        return {"appid": APPID, "mchid": MCHID, "out_trade_no": out_trade_no,
                "transaction_id": trade["transaction_id"], "trade_type": "NATIVE",
                "trade_state": trade["state"], "trade_state_desc": "支付成功",
                "bank_type": "CMC", "attach": "", "success_time": "2018-06-08T10:34:56+08:00",
                "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
                "amount": {"total": trade["total"], "payer_total": trade["total"],
                           "currency": "CNY", "payer_currency": "CNY"}}

    def pay(self, out_trade_no: str) -> None:
        self.trades[out_trade_no].update(state="SUCCESS",
                                         transaction_id="1217752501201407033233368018")

    def notification(self, out_trade_no: str, *, key: str = API_V3_KEY,
                     resource: dict[str, Any] | None = None) -> tuple[bytes, dict[str, str]]:
        plain = json.dumps(resource or self.transaction(out_trade_no)).encode()
        nonce = secrets.token_hex(6)
        cipher = AESGCM(key.encode()).encrypt(nonce.encode(), plain, b"transaction")
        envelope = {"id": "EV-2018022511223320873", "create_time": "2015-05-20T13:29:35+08:00",
                    "resource_type": "encrypt-resource", "event_type": "TRANSACTION.SUCCESS",
                    "summary": "支付成功", "resource": {
                        "original_type": "transaction", "algorithm": "AEAD_AES_256_GCM",
                        "ciphertext": base64.b64encode(cipher).decode(),
                        "associated_data": "transaction", "nonce": nonce}}
        body = json.dumps(envelope, ensure_ascii=False).encode()
        return body, {"Content-Type": "application/json", **self.signed_headers(body)}


@pytest.fixture
def wechat(tmp_path: Path, rsa_pair: tuple[str, str], rsa_pair_2: tuple[str, str]
           ) -> Iterator[tuple[InProcessServer, FakeWeChatPay, BackendClient]]:
    merchant_private, merchant_public = rsa_pair
    platform_private, platform_public = rsa_pair_2
    fake = FakeWeChatPay(merchant_public, platform_private)
    options = {"mchid": MCHID, "appid": APPID, "merchant_serial_no": "5157F09EFDC096DE15EBE81A4",
               "private_key": merchant_private, "api_v3_key": API_V3_KEY,
               "platform_public_key": platform_public, "platform_serial": PLATFORM_SERIAL}
    http = httpx.Client(transport=httpx.MockTransport(fake.handle))
    # The provider checks answers against the real clock: keep the server's clock real-ish.
    server = InProcessServer(tmp_path / "w.db", http=http, provider="wechat",
                             providers={"wechat": options}, order_ttl=60.0)
    server.add_machine("m1", slots={"A1": ("cola", 350)})
    with server.client("m1") as client:
        yield server, fake, client
    server.close()


def test_native_order_paid_by_notification_ships_once(
        wechat: tuple[InProcessServer, FakeWeChatPay, BackendClient]) -> None:
    server, fake, client = wechat
    order = client.create_order("A1")
    assert order.qr_text == "weixin://wxpay/bizpayurl?pr=p4lpSuKzz"
    assert order.provider == "wechat"
    fake.pay(order.id)
    body, headers = fake.notification(order.id)
    for _ in range(3):  # WeChat retries; duplicates are expected
        reply = server.http.post("/notify/wechat", content=body, headers=headers)
        assert reply.status_code == 204
    assert server.state(order.id) == "paid"
    assert len(client.next_instructions(wait=0)) == 1
    assert server.backend.order_detail(order.id)["payment"]["transaction_id"] == (
        "1217752501201407033233368018")


def test_notifications_with_bad_signature_or_ciphertext_are_refused(
        wechat: tuple[InProcessServer, FakeWeChatPay, BackendClient]) -> None:
    server, fake, client = wechat
    order = client.create_order("A1")
    fake.pay(order.id)
    body, headers = fake.notification(order.id)
    tampered = body.replace(b"EV-2018", b"EV-2019")
    reply = server.http.post("/notify/wechat", content=tampered, headers=headers)
    assert reply.status_code == 400 and reply.json()["code"] == "FAIL"
    # Correctly signed, but encrypted under another APIv3 key: decryption must fail.
    body, headers = fake.notification(order.id, key="f" * 32)
    reply = server.http.post("/notify/wechat", content=body, headers=headers)
    assert reply.status_code == 400 and "decrypt" in reply.json()["message"]
    # Another merchant's transaction, properly encrypted and signed.
    foreign = {**fake.transaction(order.id), "mchid": "1900000002"}
    body, headers = fake.notification(order.id, resource=foreign)
    assert server.http.post("/notify/wechat", content=body, headers=headers).status_code == 400
    assert server.state(order.id) == "awaiting_payment"


def test_query_finds_the_payment_and_failed_vend_refunds(
        wechat: tuple[InProcessServer, FakeWeChatPay, BackendClient]) -> None:
    server, fake, client = wechat
    order = client.create_order("A1")
    server.advance(2)
    assert server.state(order.id) == "awaiting_payment"
    fake.pay(order.id)  # no notification arrives
    server.advance(4)
    assert server.state(order.id) == "paid"
    [ship] = client.next_instructions(wait=0)
    client.ack(ship.id)
    client.report_result(order.id, "motor_fault")
    assert server.state(order.id) == "refunding"  # WeChat accepted: PROCESSING
    fake.refunds["R" + order.id]["status"] = "SUCCESS"
    server.advance(6)
    assert server.state(order.id) == "refunded"
    assert fake.refunds["R" + order.id]["amount"] == {"refund": 350, "total": 350,
                                                      "currency": "CNY"}


def test_expiry_closes_the_trade_at_wechat(
        wechat: tuple[InProcessServer, FakeWeChatPay, BackendClient]) -> None:
    server, fake, client = wechat
    order = client.create_order("A1")
    server.advance(61)
    assert server.state(order.id) == "expired"
    assert fake.trades[order.id]["state"] == "CLOSED"
    assert f"POST /v3/pay/transactions/out-trade-no/{order.id}/close" in fake.requests
