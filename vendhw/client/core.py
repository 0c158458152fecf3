"""The part of the backend client that does no I/O: requests, signatures, retries, parsing.

Both executors (:class:`~vendhw.client.sync.BackendClient` and
:class:`~vendhw.client.aio.AsyncBackendClient`) take an :class:`Op` from here, ask
:class:`ClientCore` for a signed ``httpx.Request`` per attempt, send it their way, and let the
core decide (retry after how long, return, or raise). So the contract lives once.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Generic, TypeVar
from urllib.parse import urlencode

import httpx

from vendhw.client.errors import (
    AuthenticationError,
    BackendError,
    BackendUnavailable,
    RateLimitedError,
)
from vendhw.client.models import OUTCOMES, Instruction, Order, Redemption
from vendhw.contract import signing

T = TypeVar("T")
log = logging.getLogger(__name__)

CLOCK_STEP_S = 2.0
"""A learned clock offset this close to the current one is not worth another attempt (the
server's time has one-second resolution; a stale refusal with a good offset is not ours)."""

RETRY_STATUSES = frozenset({408, 500, 502, 503, 504})
"""Answers worth the same request again (same Idempotency-Key, fresh signature)."""

FINAL_ERRORS = frozenset({"provider_error"})
"""5xx answers that are the backend's considered reply (the payment provider failed), not a
missing backend: raised as BackendError at once, since a retry would only open another order."""


@dataclass(frozen=True)
class Call:
    """One logical request; every attempt at it is signed afresh but keeps the key."""

    method: str
    path: str
    body: dict[str, Any] | None = None
    params: dict[str, Any] | None = None
    idempotency_key: str | None = None
    timeout: float | None = None

    @property
    def target(self) -> str:
        """Path plus query string, exactly as signed and sent."""
        return self.path + ("?" + urlencode(self.params) if self.params else "")

    def content(self) -> bytes:
        if self.body is None:
            return b""
        return json.dumps(self.body, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Op(Generic[T]):
    """A call and how to read its answer."""

    call: Call
    parse: Callable[[dict[str, Any]], T]


def new_key(prefix: str) -> str:
    """An idempotency key for one logical request (kept across its retries)."""
    return f"{prefix}-{secrets.token_hex(12)}"


def result_key(order_id: str) -> str:
    """The key of an order's dispense report: the same across restarts, so it counts once."""
    return f"result-{order_id}"


# --- the operations (the machine API, once) -------------------------------------------------


def op_catalogue() -> Op[dict[str, Any]]:
    return Op(Call("GET", "/machine/v1/catalogue"), dict)


def op_create_order(slot: str, provider: str | None = None,
                    idempotency_key: str | None = None) -> Op[Order]:
    body: dict[str, Any] = {"slot": str(slot)}
    if provider:
        body["provider"] = provider
    return Op(Call("POST", "/machine/v1/orders", body,
                   idempotency_key=idempotency_key or new_key("order")), Order.from_json)


def op_order_status(order_id: str) -> Op[Order]:
    return Op(Call("GET", f"/machine/v1/orders/{order_id}"), Order.from_json)


def op_cancel_order(order_id: str) -> Op[Order]:
    return Op(Call("POST", f"/machine/v1/orders/{order_id}/cancel", {},
                   idempotency_key=new_key("cancel")), Order.from_json)


def _redemption(data: dict[str, Any]) -> Redemption:
    instruction = data.get("instruction")
    return Redemption(Order.from_json(data["order"]),
                      Instruction.from_json(instruction) if instruction else None)


def op_redeem_code(code: str, idempotency_key: str | None = None) -> Op[Redemption]:
    return Op(Call("POST", "/machine/v1/codes/redeem", {"code": str(code)},
                   idempotency_key=idempotency_key or new_key("redeem")), _redemption)


def _instructions(data: dict[str, Any]) -> list[Instruction]:
    return [Instruction.from_json(item) for item in data.get("instructions", [])]


def op_instructions(wait: float, limit: int, timeout: float) -> Op[list[Instruction]]:
    params: dict[str, Any] = {"wait": f"{max(0.0, wait):g}", "limit": int(limit)}
    return Op(Call("GET", "/machine/v1/instructions", params=params,
                   timeout=max(0.0, wait) + timeout), _instructions)


def op_ack(instruction_id: str) -> Op[dict[str, Any]]:
    return Op(Call("POST", f"/machine/v1/instructions/{instruction_id}/ack", {},
                   idempotency_key=None), dict)


def report_call(order_id: str, outcome: str, details: dict[str, Any] | None,
                instruction_id: str | None, idempotency_key: str) -> Call:
    """The dispense report; it goes through the outbox, so it is a plain Call."""
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}; got {outcome!r}")
    body: dict[str, Any] = {"outcome": outcome, "details": details or {}}
    if instruction_id:
        body["instruction_id"] = instruction_id
    return Call("POST", f"/machine/v1/orders/{order_id}/result", body,
                idempotency_key=idempotency_key)


def cash_sale_call(reference: str, slot: str, amount: int, outcome: str,
                   details: dict[str, Any] | None) -> Call:
    """A sale paid in cash at the machine, booked after its dispense (through the outbox)."""
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}; got {outcome!r}")
    body = {"reference": reference, "slot": str(slot), "amount": int(amount),
            "outcome": outcome, "details": details or {}}
    return Call("POST", "/machine/v1/sales/cash", body, idempotency_key=f"cash-{reference}")


# --- signing, retries, answers -------------------------------------------------------------


class ClientCore:
    """Builds signed requests and judges answers; shared by the sync and async clients."""

    def __init__(self, base_url: str, machine_id: str, secret: str | bytes, *,
                 timeout: float = 10.0, retries: int = 3, backoff: float = 0.2,
                 backoff_max: float = 5.0, clock: Callable[[], float] = time.time) -> None:
        if not machine_id or not secret:
            raise ValueError("a machine id and its secret are required")
        self.base_url = base_url.rstrip("/")
        self.machine_id = machine_id
        self.secret = secret
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.clock = clock
        self.clock_offset = 0.0
        """Seconds added to ``clock`` when signing: learned from the backend when it refused
        a timestamp (a controller without an RTC battery boots in 1970; NTP jumps)."""

    def now(self) -> float:
        """The time requests are signed with: the local clock corrected by the offset."""
        return self.clock() + self.clock_offset

    def request(self, call: Call) -> httpx.Request:
        """One attempt: a fresh timestamp and nonce over the exact bytes that are sent."""
        content = call.content()
        url = httpx.URL(self.base_url + call.target)
        path = url.raw_path.decode("ascii")
        headers = signing.signed_headers(self.secret, self.machine_id, call.method, path,
                                         content, self.now())
        headers["Accept"] = "application/json"
        if call.body is not None:
            headers["Content-Type"] = "application/json"
        if call.idempotency_key:
            headers[signing.HEADER_IDEMPOTENCY] = call.idempotency_key
        timeout = httpx.Timeout(call.timeout or self.timeout, connect=min(self.timeout, 5.0))
        return httpx.Request(call.method, url, content=content, headers=headers,
                             extensions={"timeout": timeout.as_dict()})

    def retry_delay(self, attempt: int, response: httpx.Response | None) -> float | None:
        """Seconds before the next attempt, or None to stop and read the outcome."""
        if response is not None and self._learn_clock(response):
            return 0.0  # signed again at once with the corrected time
        if attempt > self.retries:
            return None
        if response is not None:
            if response.status_code in RETRY_STATUSES:
                if _error_code(response) in FINAL_ERRORS:
                    return None
            elif response.status_code == 409 and _error_code(response) == "request_in_progress":
                pass
            else:
                return None
        return float(min(self.backoff * 2 ** (attempt - 1), self.backoff_max))

    def outcome(self, call: Call, response: httpx.Response | None,
                error: Exception | None) -> dict[str, Any]:
        """The JSON of a success, or the exception that the caller should see."""
        if response is None:
            raise BackendUnavailable(f"{call.method} {call.path}: backend unreachable "
                                     f"({error!r}) after {self.retries + 1} attempt(s)")
        try:
            data = response.json() if response.content else {}
        except ValueError:
            data = {"error": "not_json", "detail": response.text[:200]}
        if response.status_code < 400:
            return data if isinstance(data, dict) else {"value": data}
        body = data if isinstance(data, dict) else {}
        code = str(body.get("error", f"http_{response.status_code}"))
        detail = body.get("detail", "")
        detail = detail if isinstance(detail, str) else json.dumps(detail)[:300]
        if response.status_code >= 500 and code not in FINAL_ERRORS:
            raise BackendUnavailable(f"{call.method} {call.path}: HTTP "
                                     f"{response.status_code} {code} {detail}".strip())
        cls: type[BackendError] = BackendError
        if response.status_code in (401, 403):
            cls = AuthenticationError
        elif response.status_code == 429:
            cls = RateLimitedError
        raise cls(response.status_code, code, detail, body)

    def _learn_clock(self, response: httpx.Response) -> bool:
        """On a ``stale_timestamp`` refusal, take the backend's time (its ``server_time``,
        else its ``Date`` header) as the offset to sign with; True when that changed the
        offset enough to be worth one more attempt (so a refusal never loops)."""
        if response.status_code != 401 or _error_code(response) != "stale_timestamp":
            return False
        server = _server_time(response)
        if server is None:
            return False
        offset = server - self.clock()
        if abs(offset - self.clock_offset) < CLOCK_STEP_S:
            return False
        log.warning("the backend refused our clock; signing with an offset of %+.0f s "
                    "(local %.0f, backend %.0f)", offset, self.clock(), server)
        self.clock_offset = offset
        return True

    @staticmethod
    def keep_queued(exc: Exception) -> bool:
        """Whether a failed report stays queued (try again later) or is set aside as dead.

        Unreachable, overloaded, clock trouble (401) and rate limits pass; 400/404/409/422
        never will, so they must not block the reports queued behind them.
        """
        if isinstance(exc, BackendUnavailable):
            return True
        if isinstance(exc, (AuthenticationError, RateLimitedError)):
            return True
        return isinstance(exc, BackendError) and exc.code == "request_in_progress"


def _server_time(response: httpx.Response) -> float | None:
    """The backend's clock from a refusal: ``server_time`` in the JSON, else ``Date``."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        value = data.get("server_time")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value)
    date = response.headers.get("date")
    if date:
        try:
            return parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    return None


def _error_code(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return ""
    return str(data.get("error", "")) if isinstance(data, dict) else ""


__all__ = [
    "Call",
    "ClientCore",
    "Op",
    "new_key",
    "op_ack",
    "op_cancel_order",
    "op_catalogue",
    "op_create_order",
    "op_instructions",
    "op_order_status",
    "op_redeem_code",
    "report_call",
    "result_key",
]
