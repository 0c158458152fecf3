"""Alipay face-to-face ``alipay.trade.precreate`` (the QR the customer scans), RSA2 only.

* every gateway call is a form POST whose parameters are signed RSA2 (RSA-SHA256 over the
  sorted ``key=value`` pairs joined by ``&``, ``sign`` left out) with the app private key;
* each answer's ``<method>_response`` node is verified, as the raw text it was sent as,
  with the Alipay public key;
* asynchronous notifications (form POST) are verified the same way without ``sign`` and
  ``sign_type``, and answered with the seven characters ``success``;
* before a scan Alipay knows no trade (``ACQ.TRADE_NOT_EXIST``): that is "not paid yet",
  and a customer can still pay after the machine gave up, which the backend refunds;
* refunds carry ``out_request_no`` derived from the order: a retry never pays twice.

Options (``[alipay]``): ``app_id``, ``private_key`` (PEM, or ``private_key_file``),
``alipay_public_key`` (PEM, or ``alipay_public_key_file``), optional ``gateway``
(``https://openapi-sandbox.dl.alipaydev.com/gateway.do`` for Alipay's own sandbox),
``notify_url`` and ``seller_id`` (checked on notifications when set).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

import httpx

from vendhw.errors import ConfigurationError
from vendhw.server.providers.base import (
    NotificationError,
    NotificationReply,
    OrderInfo,
    PaymentEvent,
    PaymentProvider,
    ProviderError,
    QrCode,
    RefundEvent,
    RefundRequest,
    RefundResult,
    RefundState,
    TradeStatus,
    fen_to_yuan,
    yuan_to_fen,
)
from vendhw.server.providers.wechat import (
    CHINA,
    load_private_key,
    load_public_key,
    rsa_sign,
    rsa_verify,
)
from vendhw.server.settings import Clock

GATEWAY = "https://openapi.alipay.com/gateway.do"

_TRADE_STATUS = {"WAIT_BUYER_PAY": TradeStatus.PENDING, "TRADE_SUCCESS": TradeStatus.PAID,
                 "TRADE_FINISHED": TradeStatus.PAID, "TRADE_CLOSED": TradeStatus.CLOSED}


def sign_content(params: Mapping[str, str], *, exclude: tuple[str, ...] = ("sign",)) -> bytes:
    """Sorted ``k=v`` pairs joined with ``&``: the bytes Alipay signs (empty values left out)."""
    pairs = sorted((k, v) for k, v in params.items() if k not in exclude and v not in ("", None))
    return "&".join(f"{k}={v}" for k, v in pairs).encode("utf-8")


def raw_node(text: str, key: str) -> str | None:
    """The exact text of the JSON value under ``key`` (what Alipay's response sign covers)."""
    marker = f'"{key}"'
    index = text.find(marker)
    if index < 0:
        return None
    colon = text.index(":", index + len(marker))
    start = colon + 1
    while text[start] in " \t\r\n":
        start += 1
    _, end = json.JSONDecoder().raw_decode(text, start)
    return text[start:end]


class AlipayProvider(PaymentProvider):
    """Precreate (``qr_code``), notifications, query, close and refund on the Alipay gateway."""

    name = "alipay"

    def __init__(self, options: Mapping[str, Any], clock: Clock, *, public_url: str,
                 http: httpx.Client | None = None) -> None:
        missing = [k for k in ("app_id", "private_key", "alipay_public_key")
                   if not options.get(k)]
        if missing:
            raise ConfigurationError(f"[alipay] needs {', '.join(missing)}")
        self.app_id = str(options["app_id"])
        self.private_key = load_private_key(str(options["private_key"]))
        self.alipay_key = load_public_key(str(options["alipay_public_key"]))
        self.gateway = str(options.get("gateway", GATEWAY))
        self.notify_url = str(options.get("notify_url") or
                              public_url.rstrip("/") + "/notify/alipay")
        self.seller_id = str(options.get("seller_id", ""))
        self.clock = clock
        self.http = http or httpx.Client(timeout=10.0)

    def signed_params(self, method: str, biz: Mapping[str, Any],
                      notify: bool = False) -> dict[str, str]:
        """The full, signed parameter set of one gateway call."""
        params = {
            "app_id": self.app_id, "method": method, "format": "JSON", "charset": "utf-8",
            "sign_type": "RSA2", "version": "1.0",
            "timestamp": datetime.fromtimestamp(self.clock.now(), CHINA)
            .strftime("%Y-%m-%d %H:%M:%S"),
            "biz_content": json.dumps(biz, ensure_ascii=False, separators=(",", ":")),
        }
        if notify:
            params["notify_url"] = self.notify_url
        params["sign"] = rsa_sign(self.private_key, sign_content(params))
        return params

    def _call(self, method: str, biz: Mapping[str, Any], notify: bool = False
              ) -> dict[str, Any]:
        params = self.signed_params(method, biz, notify)
        try:
            response = self.http.post(self.gateway, data=params, headers={
                "Content-Type": "application/x-www-form-urlencoded;charset=utf-8"})
        except httpx.HTTPError as exc:
            raise ProviderError(f"{method}: {exc!r}", provider=self.name) from exc
        if response.status_code != 200:
            raise ProviderError(f"{method}: HTTP {response.status_code}", provider=self.name)
        text = response.text
        key = method.replace(".", "_") + "_response"
        try:
            envelope = json.loads(text)
            node_text = raw_node(text, key)
        except ValueError as exc:
            raise ProviderError(f"{method}: not JSON", provider=self.name) from exc
        if node_text is None:
            raise ProviderError(f"{method}: no {key} in the answer", provider=self.name)
        node: dict[str, Any] = envelope[key]
        signature = envelope.get("sign")
        if signature:
            if not rsa_verify(self.alipay_key, node_text.encode("utf-8"), signature):
                raise ProviderError(f"{method}: bad response signature", provider=self.name,
                                    retryable=False)
        elif node.get("code") == "10000":
            raise ProviderError(f"{method}: unsigned success answer", provider=self.name,
                                retryable=False)
        return node

    def create_qr(self, order: OrderInfo) -> QrCode:
        minutes = max(1, math.ceil((order.expires_at - self.clock.now()) / 60))
        node = self._call("alipay.trade.precreate", {
            "out_trade_no": order.out_trade_no, "total_amount": fen_to_yuan(order.amount),
            "subject": order.description[:256], "timeout_express": f"{minutes}m",
        }, notify=True)
        if node.get("code") != "10000" or not node.get("qr_code"):
            raise ProviderError(str(node.get("sub_msg") or node.get("msg")), provider=self.name,
                                code=str(node.get("sub_code") or node.get("code")))
        return QrCode(str(node["qr_code"]))

    def parse_notification(self, headers: Mapping[str, str], body: bytes
                           ) -> list[PaymentEvent | RefundEvent]:
        try:
            params = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True,
                                    strict_parsing=True))
        except (UnicodeDecodeError, ValueError) as exc:
            raise NotificationError(f"malformed notification: {exc}", provider=self.name) from exc
        signature = params.get("sign", "")
        content = sign_content(params, exclude=("sign", "sign_type"))
        if not signature or not rsa_verify(self.alipay_key, content, signature):
            raise NotificationError("bad notification signature", provider=self.name)
        if params.get("app_id") != self.app_id:
            raise NotificationError("notification for another app_id", provider=self.name)
        if self.seller_id and params.get("seller_id") not in (None, self.seller_id):
            raise NotificationError("notification for another seller", provider=self.name)
        if "out_trade_no" not in params or "trade_status" not in params:
            raise NotificationError("notification without out_trade_no/trade_status",
                                    provider=self.name)
        return [self._event(params)]

    def _event(self, data: Mapping[str, Any]) -> PaymentEvent:
        status = _TRADE_STATUS.get(str(data.get("trade_status")), TradeStatus.PENDING)
        total = data.get("total_amount")
        paid_at = data.get("gmt_payment") or data.get("send_pay_date")
        when = None
        if paid_at:
            try:
                when = datetime.strptime(str(paid_at), "%Y-%m-%d %H:%M:%S").replace(
                    tzinfo=CHINA).timestamp()
            except ValueError:
                when = None
        return PaymentEvent(
            out_trade_no=str(data["out_trade_no"]), status=status,
            transaction_id=str(data.get("trade_no") or ""),
            amount=yuan_to_fen(str(total)) if total not in (None, "") else None,
            currency="CNY", paid_at=when, raw=dict(data))

    def query(self, out_trade_no: str) -> PaymentEvent:
        node = self._call("alipay.trade.query", {"out_trade_no": out_trade_no})
        if node.get("code") == "10000":
            return self._event(node)
        if node.get("sub_code") == "ACQ.TRADE_NOT_EXIST":
            return PaymentEvent(out_trade_no, TradeStatus.PENDING)
        raise ProviderError(str(node.get("sub_msg") or node.get("msg")), provider=self.name,
                            code=str(node.get("sub_code") or node.get("code")))

    def close(self, out_trade_no: str) -> None:
        node = self._call("alipay.trade.close", {"out_trade_no": out_trade_no})
        if node.get("code") != "10000" and node.get("sub_code") != "ACQ.TRADE_NOT_EXIST":
            raise ProviderError(str(node.get("sub_msg") or node.get("msg")), provider=self.name,
                                code=str(node.get("sub_code") or node.get("code")))

    def refund(self, request: RefundRequest) -> RefundResult:
        node = self._call("alipay.trade.refund", {
            "out_trade_no": request.out_trade_no,
            "refund_amount": fen_to_yuan(request.amount),
            "out_request_no": request.out_refund_no, "refund_reason": request.reason[:256],
        })
        if node.get("code") != "10000":
            return RefundResult(RefundState.FAILED, detail=f"{node.get('sub_code')}: "
                                f"{node.get('sub_msg') or node.get('msg')}")
        if node.get("fund_change") == "Y":
            return RefundResult(RefundState.SUCCEEDED, refund_id=str(node.get("trade_no", "")))
        return RefundResult(RefundState.PROCESSING, detail="fund_change=N: query to confirm")

    def query_refund(self, request: RefundRequest) -> RefundResult:
        node = self._call("alipay.trade.fastpay.refund.query", {
            "out_trade_no": request.out_trade_no, "out_request_no": request.out_refund_no})
        if node.get("code") != "10000":
            return RefundResult(RefundState.FAILED, detail=f"{node.get('sub_code')}: "
                                f"{node.get('sub_msg') or node.get('msg')}")
        if node.get("refund_status") == "REFUND_SUCCESS" or (
                "refund_status" not in node and node.get("refund_amount")):
            return RefundResult(RefundState.SUCCEEDED, refund_id=str(node.get("trade_no", "")))
        return RefundResult(RefundState.PROCESSING)

    def accept_reply(self) -> NotificationReply:
        return NotificationReply(200, b"success")

    def reject_reply(self, reason: str) -> NotificationReply:
        return NotificationReply(400, b"failure")


__all__ = ["AlipayProvider", "raw_node", "sign_content"]
