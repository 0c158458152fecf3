"""The sandbox provider: a local pay page instead of a bank, with real signed notifications.

It keeps its own ledger (table ``sandbox_trades``), as a real provider would, so the query
loop, late payments, declines and refunds behave exactly as with WeChat Pay or Alipay. The QR
encodes ``{public_url}/sandbox/pay/{order id}``; the page's Pay and Decline buttons (or a
script: ``POST /sandbox/orders/{id}/pay``) change the ledger and then send a notification
signed with HMAC-SHA256 over ``timestamp\\nnonce\\nbody\\n`` (WeChat's layout, HMAC instead of
RSA) that goes through the same verification path as any provider's.

Like Alipay before a scan, closing an unpaid sandbox trade does not stop a later payment: the
backend must notice such a late payment and refund it, and the sandbox lets tests prove it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sqlalchemy import select

from vendhw.server.db import Database
from vendhw.server.models import SandboxRefund, SandboxTrade
from vendhw.server.providers.base import (
    NotificationError,
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

HEADER_TIMESTAMP = "Sandbox-Timestamp"
HEADER_NONCE = "Sandbox-Nonce"
HEADER_SIGNATURE = "Sandbox-Signature"
NOTIFY_WINDOW_S = 300

_STATUS = {"NOTPAY": TradeStatus.PENDING, "SUCCESS": TradeStatus.PAID,
           "CLOSED": TradeStatus.CLOSED, "REFUND": TradeStatus.REFUNDED}

Deliver = Callable[[dict[str, str], bytes], None]
"""Sends one notification (headers, body) to the backend: in process or over HTTP."""


@dataclass(frozen=True)
class SandboxNotification:
    """A signed notification as it goes on the wire."""

    headers: dict[str, str]
    body: bytes


def sign_notification(secret: str, timestamp: str, nonce: str, body: bytes) -> str:
    """Hex HMAC-SHA256 over ``timestamp\\nnonce\\nbody\\n``."""
    message = timestamp.encode() + b"\n" + nonce.encode() + b"\n" + body + b"\n"
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


class SandboxProvider(PaymentProvider):
    """A provider that needs no account, for demos, tests and integrators' first steps."""

    name = "sandbox"

    def __init__(self, db: Database, clock: Clock, *, public_url: str, secret: str,
                 deliver: Deliver | None = None) -> None:
        self.db = db
        self.clock = clock
        self.public_url = public_url.rstrip("/")
        self.secret = secret
        self.deliver: Deliver | None = deliver

    # --- the provider interface -------------------------------------------------------

    def create_qr(self, order: OrderInfo) -> QrCode:
        with self.db.tx() as s:
            if s.get(SandboxTrade, order.out_trade_no) is None:
                s.add(SandboxTrade(out_trade_no=order.out_trade_no, amount=order.amount,
                                   currency=order.currency, description=order.description,
                                   created_at=self.clock.now()))
        return QrCode(f"{self.public_url}/sandbox/pay/{order.out_trade_no}")

    def parse_notification(self, headers: Mapping[str, str], body: bytes
                           ) -> list[PaymentEvent | RefundEvent]:
        lower = {k.lower(): v for k, v in headers.items()}
        timestamp = lower.get(HEADER_TIMESTAMP.lower(), "")
        nonce = lower.get(HEADER_NONCE.lower(), "")
        signature = lower.get(HEADER_SIGNATURE.lower(), "")
        if not (timestamp and nonce and signature):
            raise NotificationError("missing Sandbox-* signature headers", provider=self.name)
        try:
            age = abs(self.clock.now() - int(timestamp))
        except ValueError as exc:
            raise NotificationError("bad Sandbox-Timestamp", provider=self.name) from exc
        if age > NOTIFY_WINDOW_S:
            raise NotificationError("stale notification timestamp", provider=self.name)
        expected = sign_notification(self.secret, timestamp, nonce, body)
        if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
            raise NotificationError("bad notification signature", provider=self.name)
        try:
            data = json.loads(body)
            return [PaymentEvent(
                out_trade_no=str(data["out_trade_no"]), status=_STATUS[data["trade_state"]],
                transaction_id=str(data.get("transaction_id") or ""),
                amount=int(data["amount"]), currency=str(data["currency"]),
                paid_at=data.get("paid_at"), raw=data)]
        except (ValueError, KeyError, TypeError) as exc:
            raise NotificationError(f"malformed notification: {exc}", provider=self.name) from exc

    def query(self, out_trade_no: str) -> PaymentEvent:
        with self.db.tx() as s:
            trade = s.get(SandboxTrade, out_trade_no)
            if trade is None:
                return PaymentEvent(out_trade_no, TradeStatus.PENDING)
            return self._event(trade)

    def close(self, out_trade_no: str) -> None:
        with self.db.tx() as s:
            trade = s.get(SandboxTrade, out_trade_no, with_for_update=True)
            if trade is not None and trade.status == "NOTPAY":
                trade.status = "CLOSED"

    def refund(self, request: RefundRequest) -> RefundResult:
        """Like WeChat Pay: one refund per ``out_refund_no`` (asked again: the same answer),
        several (partial) refunds per trade, never more in total than was paid."""
        with self.db.tx() as s:
            trade = s.get(SandboxTrade, request.out_trade_no, with_for_update=True)
            if trade is None:
                return RefundResult(RefundState.FAILED, detail="trade does not exist")
            done = s.get(SandboxRefund, request.out_refund_no)
            if (done is not None and done.out_trade_no == trade.out_trade_no) or (
                    trade.status == "REFUND" and trade.refund_no == request.out_refund_no):
                return RefundResult(RefundState.SUCCEEDED,
                                    refund_id=f"sbr_{request.out_refund_no}")
            if done is not None:
                return RefundResult(RefundState.FAILED, detail="refund number of another trade")
            if trade.status not in ("SUCCESS", "REFUND"):
                return RefundResult(RefundState.FAILED, detail=f"trade is {trade.status}")
            if request.amount <= 0 or trade.refunded + request.amount > trade.amount:
                return RefundResult(RefundState.FAILED, detail="refund exceeds payment")
            s.add(SandboxRefund(out_refund_no=request.out_refund_no,
                                out_trade_no=trade.out_trade_no, amount=request.amount,
                                created_at=self.clock.now()))
            trade.status = "REFUND"
            trade.refund_no = request.out_refund_no
            trade.refunded += request.amount
            return RefundResult(RefundState.SUCCEEDED, refund_id=f"sbr_{request.out_refund_no}")

    def query_refund(self, request: RefundRequest) -> RefundResult:
        with self.db.tx() as s:
            trade = s.get(SandboxTrade, request.out_trade_no)
            done = s.get(SandboxRefund, request.out_refund_no)
            if (trade is not None and trade.refund_no == request.out_refund_no) or (
                    done is not None and done.out_trade_no == request.out_trade_no):
                return RefundResult(RefundState.SUCCEEDED,
                                    refund_id=f"sbr_{request.out_refund_no}")
        return RefundResult(RefundState.FAILED, detail="no such refund")

    # --- the customer's side: the pay page's buttons ------------------------------------

    def trade(self, out_trade_no: str) -> dict[str, object] | None:
        """The ledger row as a dict (for the pay page), or None."""
        with self.db.tx() as s:
            t = s.get(SandboxTrade, out_trade_no)
            if t is None:
                return None
            return {"out_trade_no": t.out_trade_no, "amount": t.amount, "currency": t.currency,
                    "description": t.description, "status": t.status}

    def pay(self, out_trade_no: str, *, notify: int = 1) -> PaymentEvent:
        """The customer pays: the ledger says SUCCESS, then ``notify`` notifications go out.

        Paying a trade that was closed unpaid is allowed on purpose (a payment racing the
        close); paying twice is not: the second press only repeats the notification.
        """
        with self.db.tx() as s:
            trade = s.get(SandboxTrade, out_trade_no, with_for_update=True)
            if trade is None:
                raise ProviderError("no such sandbox trade", provider=self.name,
                                    code="TRADE_NOT_EXIST", retryable=False)
            if trade.status in ("NOTPAY", "CLOSED"):
                trade.status = "SUCCESS"
                trade.transaction_id = "sb_" + secrets.token_hex(10)
                trade.paid_at = self.clock.now()
            event = self._event(trade)
        for _ in range(max(0, notify)):
            self.send(event)
        return event

    def decline(self, out_trade_no: str, *, notify: int = 1) -> PaymentEvent:
        """The customer declines: an unpaid trade closes and the backend is told."""
        with self.db.tx() as s:
            trade = s.get(SandboxTrade, out_trade_no, with_for_update=True)
            if trade is None:
                raise ProviderError("no such sandbox trade", provider=self.name,
                                    code="TRADE_NOT_EXIST", retryable=False)
            if trade.status == "NOTPAY":
                trade.status = "CLOSED"
            event = self._event(trade)
        for _ in range(max(0, notify)):
            self.send(event)
        return event

    def build_notification(self, event: PaymentEvent) -> SandboxNotification:
        """The signed notification of ``event`` as it would be POSTed to ``/notify/sandbox``."""
        state = {v: k for k, v in _STATUS.items()}[event.status]
        body = json.dumps({
            "id": "sbn_" + secrets.token_hex(8), "out_trade_no": event.out_trade_no,
            "trade_state": state, "transaction_id": event.transaction_id,
            "amount": event.amount, "currency": event.currency, "paid_at": event.paid_at,
        }, separators=(",", ":")).encode()
        timestamp = str(int(self.clock.now()))
        nonce = secrets.token_hex(16)
        headers = {"Content-Type": "application/json", HEADER_TIMESTAMP: timestamp,
                   HEADER_NONCE: nonce,
                   HEADER_SIGNATURE: sign_notification(self.secret, timestamp, nonce, body)}
        return SandboxNotification(headers, body)

    def send(self, event: PaymentEvent) -> None:
        """Deliver one signed notification; a lost one is what the query loop is for."""
        if self.deliver is None:
            return
        note = self.build_notification(event)
        self.deliver(note.headers, note.body)

    def _event(self, trade: SandboxTrade) -> PaymentEvent:
        return PaymentEvent(out_trade_no=trade.out_trade_no, status=_STATUS[trade.status],
                            transaction_id=trade.transaction_id or "", amount=trade.amount,
                            currency=trade.currency, paid_at=trade.paid_at)

    def open_trades(self) -> list[str]:
        """Unpaid trade numbers (for a human looking at the sandbox)."""
        with self.db.tx() as s:
            rows = s.execute(select(SandboxTrade.out_trade_no)
                             .where(SandboxTrade.status == "NOTPAY")).scalars()
            return list(rows)


__all__ = ["SandboxNotification", "SandboxProvider", "sign_notification"]
