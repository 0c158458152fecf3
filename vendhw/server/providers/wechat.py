"""WeChat Pay APIv3, Native (scan-to-pay) orders, with ``cryptography`` only.

* requests are signed ``WECHATPAY2-SHA256-RSA2048`` (RSA-SHA256 over
  ``METHOD\\nPATH?QUERY\\ntimestamp\\nnonce\\nbody\\n`` with the merchant key);
* answers and notifications are verified with the WeChat Pay platform public key over
  ``timestamp\\nnonce\\nbody\\n`` (headers ``Wechatpay-Timestamp/Nonce/Signature/Serial``),
  stale timestamps refused;
* notification resources are decrypted with AEAD_AES_256_GCM under the APIv3 key;
* refunds carry ``out_refund_no`` = a value derived from the order, so a retried refund
  never pays twice.

Options (``[wechat]`` in the provider file): ``mchid``, ``appid``, ``merchant_serial_no``,
``private_key`` (PEM, or ``private_key_file``), ``api_v3_key`` (32 characters),
``platform_public_key`` (PEM, or ``platform_public_key_file``), ``platform_serial`` (the
certificate serial or the ``PUB_KEY_ID_...`` of WeChat Pay's public key), optional
``base_url`` and ``notify_url``.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

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
)
from vendhw.server.settings import Clock

BASE_URL = "https://api.mch.weixin.qq.com"
AUTH_SCHEMA = "WECHATPAY2-SHA256-RSA2048"
TIMESTAMP_WINDOW_S = 300
CHINA = timezone(timedelta(hours=8))

_TRADE_STATE = {
    "SUCCESS": TradeStatus.PAID, "REFUND": TradeStatus.REFUNDED, "NOTPAY": TradeStatus.PENDING,
    "USERPAYING": TradeStatus.PENDING, "CLOSED": TradeStatus.CLOSED,
    "REVOKED": TradeStatus.CLOSED, "PAYERROR": TradeStatus.CLOSED,
}
_REFUND_STATE = {"SUCCESS": RefundState.SUCCEEDED, "PROCESSING": RefundState.PROCESSING,
                 "CLOSED": RefundState.FAILED, "ABNORMAL": RefundState.FAILED}


def load_private_key(pem: str) -> rsa.RSAPrivateKey:
    """An RSA private key from PEM text (PKCS#8 as WeChat and Alipay hand them out)."""
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"not an RSA private key PEM: {exc}") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigurationError("the private key is not RSA")
    return key


def load_public_key(pem: str) -> rsa.RSAPublicKey:
    """An RSA public key from a PEM public key or a PEM certificate."""
    from cryptography import x509

    data = pem.encode()
    try:
        key: Any = (x509.load_pem_x509_certificate(data).public_key()
                    if b"CERTIFICATE" in data else serialization.load_pem_public_key(data))
    except ValueError as exc:
        raise ConfigurationError(f"not an RSA public key or certificate PEM: {exc}") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise ConfigurationError("the public key is not RSA")
    return key


def rsa_sign(key: rsa.RSAPrivateKey, message: bytes) -> str:
    """Base64 RSA-SHA256 (PKCS#1 v1.5), the signature both providers use."""
    return base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()


def rsa_verify(key: rsa.RSAPublicKey, message: bytes, signature_b64: str) -> bool:
    """True when the base64 RSA-SHA256 signature is valid."""
    try:
        key.verify(base64.b64decode(signature_b64), message, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


def rfc3339(ts: float) -> str:
    """Unix seconds as RFC 3339 in China time, the form WeChat documents for ``time_expire``."""
    return datetime.fromtimestamp(ts, CHINA).isoformat(timespec="seconds")


def parse_rfc3339(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


class WeChatPayProvider(PaymentProvider):
    """Native orders (``code_url`` QR), notifications, query, close and refund."""

    name = "wechat"

    def __init__(self, options: Mapping[str, Any], clock: Clock, *, public_url: str,
                 http: httpx.Client | None = None) -> None:
        missing = [k for k in ("mchid", "appid", "merchant_serial_no", "private_key",
                               "api_v3_key", "platform_public_key") if not options.get(k)]
        if missing:
            raise ConfigurationError(f"[wechat] needs {', '.join(missing)}")
        self.mchid = str(options["mchid"])
        self.appid = str(options["appid"])
        self.serial_no = str(options["merchant_serial_no"])
        self.private_key = load_private_key(str(options["private_key"]))
        self.api_v3_key = str(options["api_v3_key"]).encode()
        if len(self.api_v3_key) != 32:
            raise ConfigurationError("[wechat] api_v3_key must be 32 characters")
        self.platform_key = load_public_key(str(options["platform_public_key"]))
        self.platform_serial = str(options.get("platform_serial", ""))
        self.base_url = str(options.get("base_url", BASE_URL)).rstrip("/")
        self.notify_url = str(options.get("notify_url") or
                              public_url.rstrip("/") + "/notify/wechat")
        self.clock = clock
        self.http = http or httpx.Client(timeout=10.0)

    # --- signing ------------------------------------------------------------------------

    def authorization(self, method: str, path: str, body: str) -> str:
        """The ``Authorization`` header of one API request."""
        timestamp = str(int(self.clock.now()))
        nonce = secrets.token_hex(16)
        message = f"{method}\n{path}\n{timestamp}\n{nonce}\n{body}\n".encode()
        signature = rsa_sign(self.private_key, message)
        return (f'{AUTH_SCHEMA} mchid="{self.mchid}",nonce_str="{nonce}",'
                f'signature="{signature}",timestamp="{timestamp}",serial_no="{self.serial_no}"')

    def verify_signed(self, headers: Mapping[str, str], body: bytes) -> None:
        """Check a response's or notification's ``Wechatpay-*`` signature; raise if bad."""
        lower = {k.lower(): v for k, v in headers.items()}
        timestamp = lower.get("wechatpay-timestamp", "")
        nonce = lower.get("wechatpay-nonce", "")
        signature = lower.get("wechatpay-signature", "")
        serial = lower.get("wechatpay-serial", "")
        if not (timestamp and nonce and signature):
            raise NotificationError("missing Wechatpay-* signature headers", provider=self.name)
        if self.platform_serial and serial != self.platform_serial:
            raise NotificationError(f"unknown platform key serial {serial!r}", provider=self.name)
        try:
            age = abs(self.clock.now() - int(timestamp))
        except ValueError as exc:
            raise NotificationError("bad Wechatpay-Timestamp", provider=self.name) from exc
        if age > TIMESTAMP_WINDOW_S:
            raise NotificationError("stale Wechatpay-Timestamp", provider=self.name)
        message = timestamp.encode() + b"\n" + nonce.encode() + b"\n" + body + b"\n"
        if not rsa_verify(self.platform_key, message, signature):
            raise NotificationError("bad Wechatpay-Signature", provider=self.name)

    def decrypt(self, resource: Mapping[str, Any]) -> dict[str, Any]:
        """Decrypt a notification ``resource`` (AEAD_AES_256_GCM under the APIv3 key)."""
        if resource.get("algorithm") != "AEAD_AES_256_GCM":
            raise NotificationError(f"unsupported algorithm {resource.get('algorithm')!r}",
                                    provider=self.name)
        try:
            plain = AESGCM(self.api_v3_key).decrypt(
                str(resource["nonce"]).encode(), base64.b64decode(resource["ciphertext"]),
                str(resource.get("associated_data") or "").encode())
            data: dict[str, Any] = json.loads(plain)
        except (InvalidTag, KeyError, ValueError) as exc:
            raise NotificationError(f"cannot decrypt resource: {exc!r}",
                                    provider=self.name) from exc
        return data

    def _call(self, method: str, path: str, payload: Mapping[str, Any] | None = None
              ) -> tuple[int, dict[str, Any]]:
        body = "" if payload is None else json.dumps(payload, ensure_ascii=False,
                                                     separators=(",", ":"))
        headers = {"Authorization": self.authorization(method, path, body),
                   "Accept": "application/json", "User-Agent": "vendhw-backend"}
        if payload is not None:
            headers["Content-Type"] = "application/json"
        try:
            response = self.http.request(method, self.base_url + path, content=body.encode(),
                                         headers=headers)
        except httpx.HTTPError as exc:
            raise ProviderError(f"{method} {path}: {exc!r}", provider=self.name) from exc
        if response.status_code >= 500:
            raise ProviderError(f"{method} {path}: HTTP {response.status_code}",
                                provider=self.name)
        if response.content:
            self.verify_signed(response.headers, response.content)
        try:
            data = response.json() if response.content else {}
        except ValueError as exc:
            raise ProviderError(f"{method} {path}: not JSON", provider=self.name) from exc
        return response.status_code, data

    # --- the provider interface -------------------------------------------------------

    def create_qr(self, order: OrderInfo) -> QrCode:
        payload = {
            "appid": self.appid, "mchid": self.mchid, "description": order.description[:127],
            "out_trade_no": order.out_trade_no, "time_expire": rfc3339(order.expires_at),
            "notify_url": self.notify_url,
            "amount": {"total": order.amount, "currency": order.currency},
        }
        status, data = self._call("POST", "/v3/pay/transactions/native", payload)
        if status != 200 or "code_url" not in data:
            raise ProviderError(str(data.get("message", "no code_url")), provider=self.name,
                                code=str(data.get("code", status)))
        return QrCode(str(data["code_url"]))

    def parse_notification(self, headers: Mapping[str, str], body: bytes
                           ) -> list[PaymentEvent | RefundEvent]:
        self.verify_signed(headers, body)
        try:
            envelope = json.loads(body)
            event_type = str(envelope["event_type"])
            resource = self.decrypt(envelope["resource"])
        except (ValueError, KeyError, TypeError) as exc:
            raise NotificationError(f"malformed notification: {exc!r}",
                                    provider=self.name) from exc
        if str(resource.get("mchid", self.mchid)) != self.mchid:
            raise NotificationError("notification for another merchant", provider=self.name)
        if event_type.startswith("REFUND."):
            state = _REFUND_STATE.get(str(resource.get("refund_status")), RefundState.FAILED)
            return [RefundEvent(str(resource["out_refund_no"]), state)]
        return [self._event(resource)]

    def _event(self, data: Mapping[str, Any]) -> PaymentEvent:
        amount = data.get("amount") or {}
        status = _TRADE_STATE.get(str(data.get("trade_state")), TradeStatus.PENDING)
        total = amount.get("total")
        return PaymentEvent(
            out_trade_no=str(data["out_trade_no"]), status=status,
            transaction_id=str(data.get("transaction_id") or ""),
            amount=int(total) if total is not None else None,
            currency=str(amount.get("currency", "")),
            paid_at=parse_rfc3339(data.get("success_time")), raw=dict(data))

    def query(self, out_trade_no: str) -> PaymentEvent:
        status, data = self._call(
            "GET", f"/v3/pay/transactions/out-trade-no/{out_trade_no}?mchid={self.mchid}")
        if status == 404:
            return PaymentEvent(out_trade_no, TradeStatus.PENDING)
        if status != 200:
            raise ProviderError(str(data.get("message", "query failed")), provider=self.name,
                                code=str(data.get("code", status)))
        return self._event(data)

    def close(self, out_trade_no: str) -> None:
        status, data = self._call(
            "POST", f"/v3/pay/transactions/out-trade-no/{out_trade_no}/close",
            {"mchid": self.mchid})
        if status not in (200, 204) and data.get("code") != "ORDER_CLOSED":
            raise ProviderError(str(data.get("message", "close failed")), provider=self.name,
                                code=str(data.get("code", status)))

    def _refund_result(self, status: int, data: Mapping[str, Any]) -> RefundResult:
        if status != 200:
            return RefundResult(RefundState.FAILED,
                                detail=f"{data.get('code', status)}: {data.get('message', '')}")
        state = _REFUND_STATE.get(str(data.get("status")), RefundState.PROCESSING)
        return RefundResult(state, refund_id=str(data.get("refund_id", "")),
                            detail=str(data.get("status", "")))

    def refund(self, request: RefundRequest) -> RefundResult:
        payload = {
            "out_trade_no": request.out_trade_no, "out_refund_no": request.out_refund_no,
            "reason": request.reason[:80], "notify_url": self.notify_url,
            "amount": {"refund": request.amount, "total": request.total,
                       "currency": request.currency},
        }
        return self._refund_result(*self._call("POST", "/v3/refund/domestic/refunds", payload))

    def query_refund(self, request: RefundRequest) -> RefundResult:
        return self._refund_result(
            *self._call("GET", f"/v3/refund/domestic/refunds/{request.out_refund_no}"))

    def accept_reply(self) -> NotificationReply:
        return NotificationReply(204)

    def reject_reply(self, reason: str) -> NotificationReply:
        body = json.dumps({"code": "FAIL", "message": reason}).encode()
        return NotificationReply(400, body, "application/json")


__all__ = [
    "WeChatPayProvider",
    "load_private_key",
    "load_public_key",
    "rfc3339",
    "rsa_sign",
    "rsa_verify",
]
