"""The FastAPI app: the HTTP contract in front of :class:`~vendhw.server.service.Backend`.

Four surfaces, each with its own credential:

* ``/machine/v1/...``: machines, every request HMAC-signed (see :mod:`vendhw.contract.signing`);
* ``/operator/v1/...``: operators and scripts, ``Authorization: Bearer <operator token>``;
* ``/notify/{provider}``: payment providers, verified by the provider's own signature;
* ``/sandbox/...``: the sandbox's pay page and buttons (only when the sandbox is enabled).

``/healthz`` answers readiness checks and ``/docs`` serves the OpenAPI documentation.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import html
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy.exc import DataError
from starlette.concurrency import run_in_threadpool

from vendhw.contract.signing import HEADER_IDEMPOTENCY
from vendhw.errors import ConfigurationError
from vendhw.server.db import ReplayedNonce
from vendhw.server.guard import SCOPE_MACHINE, Guard
from vendhw.server.providers import ProviderError
from vendhw.server.service import ApiError, Backend
from vendhw.server.settings import Clock, ServerSettings

log = logging.getLogger(__name__)

POLLER_MAX_SLEEP_S = 5.0
POLLER_MIN_SLEEP_S = 0.02


# --- request bodies ----------------------------------------------------------------------


class CreateOrderBody(BaseModel):
    slot: str = Field(description="The slot whose product the customer chose, e.g. 'A1'.")
    provider: str | None = Field(None, description="An enabled provider; default: the server's.")


class ResultBody(BaseModel):
    outcome: str = Field(description="delivered, empty, jammed, motor_fault, not_dropped, "
                                     "sensor_fault, timeout or unknown.")
    details: dict[str, Any] | None = Field(None, description="Free-form facts (drop time, raw "
                                                             "board code) kept with the order.")
    instruction_id: str | None = None


class CashSaleBody(BaseModel):
    reference: str = Field(description="The machine's own id of the sale (its cash-journal "
                                       "spend); the same reference books the same order.")
    slot: str
    amount: int = Field(description="Cash taken for the product, in minor units.")
    outcome: str = Field(description="The dispense outcome, as for /orders/{id}/result.")
    details: dict[str, Any] | None = None
    method: str = Field("cash", description="cash, or card (the machine's own MDB reader).")


class RedeemBody(BaseModel):
    code: str = Field(description="The digits the customer typed (spaces and dashes ignored).")


class CodesBody(BaseModel):
    product: str
    count: int = 1
    valid_for: str | float = Field("2h", description="Seconds, or a duration like '2h'.")
    machine: str | None = Field(None, description="Bind the codes to one machine.")
    kind: str = Field("pickup", description="pickup or lottery.")


class ResolveBody(BaseModel):
    decision: str = Field(description="delivered or refund.")
    note: str = ""


class RefundBody(BaseModel):
    note: str = ""


class SlotBody(BaseModel):
    slot: str
    product: str
    price: int | None = None
    enabled: bool = True


class MachineBody(BaseModel):
    secret: str | None = Field(None, description="Shared HMAC secret, 16+ characters; "
                                                 "required for a new machine.")
    name: str | None = None
    currency: str | None = None
    slots: list[SlotBody] | None = None


# --- authentication ------------------------------------------------------------------------


@dataclass(frozen=True)
class MachineCall:
    """An authenticated machine request: who, its idempotency key and its fingerprint."""

    machine_id: str
    idempotency_key: str | None
    fingerprint: bytes


def _backend(request: Request) -> Backend:
    backend: Backend = request.app.state.backend
    return backend


def _signed_path(request: Request) -> str:
    raw = request.scope.get("raw_path") or request.scope["path"].encode()
    query = request.scope.get("query_string") or b""
    path = raw.decode("latin-1")
    return path + ("?" + query.decode("latin-1") if query else "")


async def machine_auth(request: Request) -> MachineCall:
    """The machine the guard authenticated (HMAC signature, timestamp, nonce) before the
    body was parsed; checked here when the app runs without the guard."""
    body = await request.body()
    path = _signed_path(request)
    machine_id: str | None = request.scope.get(SCOPE_MACHINE)
    if machine_id is None:
        machine_id = await run_in_threadpool(_backend(request).authenticate, request.headers,
                                             request.method, path, body)
    key = request.headers.get(HEADER_IDEMPOTENCY)
    return MachineCall(machine_id, key, request.method.encode() + b" " + path.encode()
                       + b"\n" + body)


Signed = Annotated[MachineCall, Depends(machine_auth)]
"""An endpoint parameter that only a correctly signed machine request can fill."""


def operator_auth(request: Request) -> None:
    """Bearer token of the operator API, compared in constant time."""
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else ""
    expected = _backend(request).settings.operator_token
    if not token or not expected or not hmac.compare_digest(token.encode(), expected.encode()):
        raise ApiError(401, "operator_unauthenticated",
                       "send Authorization: Bearer <operator token>",
                       headers={"WWW-Authenticate": "Bearer"})


def _json(status: int, body: Any) -> JSONResponse:
    return JSONResponse(body, status_code=status)


# --- routers -----------------------------------------------------------------------------

machine = APIRouter(prefix="/machine/v1", tags=["machine"])
operator = APIRouter(prefix="/operator/v1", tags=["operator"],
                     dependencies=[Depends(operator_auth)])
public = APIRouter(tags=["public"])
sandbox = APIRouter(prefix="/sandbox", tags=["sandbox"])


@machine.get("/catalogue")
def machine_catalogue(request: Request, call: Signed
                      ) -> dict[str, Any]:
    """The machine's slots, products and prices."""
    return _backend(request).catalogue(call.machine_id)


@machine.post("/orders", status_code=201)
def machine_create_order(body: CreateOrderBody, request: Request,
                         call: Signed) -> JSONResponse:
    """Order a slot's product and get the payment QR text (state ``awaiting_payment``)."""
    backend = _backend(request)
    status, data = backend.idempotent(
        call.machine_id, call.idempotency_key, call.fingerprint,
        lambda: (201, backend.create_order(call.machine_id, body.slot, body.provider)),
        together=True)
    return _json(status, data)


@machine.get("/orders/{order_id}")
def machine_get_order(order_id: str, request: Request,
                      call: Signed) -> dict[str, Any]:
    """One of this machine's orders."""
    return _backend(request).get_order(order_id, call.machine_id)


@machine.post("/orders/{order_id}/cancel")
def machine_cancel_order(order_id: str, request: Request,
                         call: Signed) -> dict[str, Any]:
    """Give up on an unpaid order; a payment arriving later is refunded automatically."""
    return _backend(request).cancel_order(call.machine_id, order_id)


@machine.post("/orders/{order_id}/result")
def machine_report_result(order_id: str, body: ResultBody, request: Request,
                          call: Signed) -> JSONResponse:
    """Report the dispense outcome; send an ``Idempotency-Key`` so a retry counts once."""
    backend = _backend(request)
    status, data = backend.idempotent(
        call.machine_id, call.idempotency_key, call.fingerprint,
        lambda: (200, backend.report_result(call.machine_id, order_id, body.outcome,
                                            body.details, body.instruction_id)))
    return _json(status, data)


@machine.post("/sales/cash")
def machine_cash_sale(body: CashSaleBody, request: Request, call: Signed) -> JSONResponse:
    """Book a sale paid in cash at the machine, after its dispense (queued by the outbox)."""
    backend = _backend(request)
    status, data = backend.idempotent(
        call.machine_id, call.idempotency_key, call.fingerprint,
        lambda: (200, backend.record_cash_sale(call.machine_id, body.reference, body.slot,
                                               body.amount, body.outcome, body.details,
                                               body.method)))
    return _json(status, data)


@machine.post("/codes/redeem")
def machine_redeem(body: RedeemBody, request: Request,
                   call: Signed) -> JSONResponse:
    """Verify a pickup/lottery code, reserve it and get the ship instruction."""
    backend = _backend(request)
    status, data = backend.idempotent(
        call.machine_id, call.idempotency_key, call.fingerprint,
        lambda: (200, backend.redeem_code(call.machine_id, body.code)))
    return _json(status, data)


@machine.get("/instructions")
async def machine_instructions(request: Request, call: Signed, wait: float = 0.0,
                               limit: int = 20) -> dict[str, Any]:
    """Long-poll: due instructions now, or as soon as one exists, or ``[]`` after ``wait`` s.

    An instruction not acknowledged within the server's redelivery delay comes again; the
    machine deduplicates by its ``id``.
    """
    backend = _backend(request)
    wait = min(max(0.0, wait), backend.settings.max_long_poll)
    limit = min(max(1, limit), 100)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    waiter = backend.hub.subscribe(call.machine_id)
    try:
        while True:
            waiter.event.clear()
            items, next_due = await run_in_threadpool(
                backend.take_instructions, call.machine_id, limit)
            remaining = deadline - loop.time()
            if items or remaining <= 0:
                return {"instructions": items}
            timeout = remaining if next_due is None else min(remaining, next_due + 0.01)
            await waiter.wait(timeout)
    finally:
        backend.hub.unsubscribe(waiter)


@machine.post("/instructions/{instruction_id}/ack")
def machine_ack(instruction_id: str, request: Request,
                call: Signed) -> dict[str, Any]:
    """The machine holds the instruction (journaled): stop redelivering it."""
    return _backend(request).ack(call.machine_id, instruction_id)


@operator.post("/catalogue")
def operator_catalogue(document: dict[str, Any], request: Request) -> dict[str, Any]:
    """Upsert products and machines (with slots and prices) from one JSON document."""
    return {"loaded": _backend(request).load_catalogue(document)}


@operator.put("/machines/{machine_id}")
def operator_put_machine(machine_id: str, body: MachineBody, request: Request
                         ) -> dict[str, Any]:
    """Register or update one machine (its secret, name, currency, slots)."""
    item: dict[str, Any] = {"id": machine_id,
                            **body.model_dump(exclude_none=True, exclude={"slots"})}
    if body.slots is not None:
        item["slots"] = [slot.model_dump() for slot in body.slots]
    backend = _backend(request)
    backend.load_catalogue({"machines": [item]})
    return backend.catalogue(machine_id)


@operator.get("/machines")
def operator_machines(request: Request) -> dict[str, Any]:
    return {"machines": _backend(request).machines()}


@operator.post("/codes", status_code=201)
def operator_codes(body: CodesBody, request: Request) -> dict[str, Any]:
    """Create single-use numeric codes; the response is the only place they appear."""
    codes = _backend(request).create_codes(body.product, body.count, body.valid_for,
                                           machine_id=body.machine, kind=body.kind)
    return {"codes": codes}


@operator.get("/codes")
def operator_list_codes(request: Request, status: str | None = None,
                        product: str | None = None, machine: str | None = None,
                        limit: int = 100, batch: str | None = None) -> dict[str, Any]:
    """Codes, newest first, without their digits."""
    return {"codes": _backend(request).list_codes(status, product, machine,
                                                  min(max(limit, 1), 1000), batch_id=batch)}


@operator.post("/codes/{code_id}/revoke")
def operator_revoke_code(code_id: int, body: RefundBody, request: Request) -> dict[str, Any]:
    """Withdraw an unused code (409 while a vend with it runs, or once used)."""
    return _backend(request).revoke_code(code_id, body.note)


@operator.get("/orders")
def operator_orders(request: Request, state: str | None = None, machine: str | None = None,
                    limit: int = 100) -> dict[str, Any]:
    return {"orders": _backend(request).list_orders(state, machine, min(max(limit, 1), 1000))}


@operator.get("/orders/{order_id}")
def operator_order(order_id: str, request: Request) -> dict[str, Any]:
    """An order with its payment, refund, instructions and audit trail."""
    return _backend(request).order_detail(order_id)


@operator.post("/orders/{order_id}/resolve")
def operator_resolve(order_id: str, body: ResolveBody, request: Request) -> dict[str, Any]:
    """Settle a ``needs_review`` order: ``delivered`` or ``refund``."""
    return _backend(request).resolve(order_id, body.decision, body.note)


@operator.post("/orders/{order_id}/refund")
def operator_refund(order_id: str, body: RefundBody, request: Request) -> dict[str, Any]:
    """Refund a paid order the machine never took (its instruction is withdrawn)."""
    return _backend(request).operator_refund(order_id, body.note)


@operator.get("/audit/{entity_id}")
def operator_audit(entity_id: str, request: Request) -> dict[str, Any]:
    return {"audit": _backend(request).audit(entity_id)}


@public.get("/healthz")
async def healthz(request: Request) -> JSONResponse:
    """Readiness: the database answers."""
    backend = _backend(request)
    try:
        ok = await run_in_threadpool(backend.db.ping)
    except Exception as exc:  # any database failure means "not ready"
        return _json(503, {"status": "error", "detail": str(exc)})
    return _json(200 if ok else 503, {"status": "ok" if ok else "error",
                                      "providers": sorted(backend.providers)})


@public.post("/notify/{provider}")
async def notify(provider: str, request: Request) -> Response:
    """Payment notifications: verified by the provider's signature, applied once."""
    body = await request.body()
    reply = await run_in_threadpool(_backend(request).handle_notification, provider,
                                    dict(request.headers), body)
    return Response(reply.body, status_code=reply.status_code, media_type=reply.media_type)


_PAGE = """<!doctype html><html><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>vendhw sandbox payment</title>
<style>body{{font-family:sans-serif;max-width:24em;margin:2em auto;text-align:center}}
button{{font-size:1.4em;padding:.5em 1.5em;margin:.5em}}</style></head><body>
<h1>Sandbox payment</h1><p>{description}</p><p style="font-size:2em">{amount}</p>
<p>Order <code>{order}</code>: <b>{status}</b></p>
<form method="post" action="/sandbox/orders/{order}/pay"><button>Pay</button></form>
<form method="post" action="/sandbox/orders/{order}/decline"><button>Decline</button></form>
<p><small>No money moves: this is vendhw's sandbox provider.</small></p></body></html>"""


def _sandbox_provider(request: Request) -> Any:
    provider = _backend(request).sandbox
    if provider is None:
        raise ApiError(404, "sandbox_disabled", "the sandbox provider is not enabled")
    return provider


@sandbox.get("/pay/{order_id}", response_class=HTMLResponse)
def sandbox_page(order_id: str, request: Request) -> HTMLResponse:
    """The page the QR opens: the order's amount and a Pay and a Decline button."""
    trade = _sandbox_provider(request).trade(order_id)
    if trade is None:
        return HTMLResponse("<h1>No such order</h1>", status_code=404)
    amount = f"{int(trade['amount']) / 100:.2f} {trade['currency']}"
    return HTMLResponse(_PAGE.format(description=html.escape(str(trade["description"])),
                                     amount=amount, order=html.escape(order_id),
                                     status=html.escape(str(trade["status"]))))


def _sandbox_action(request: Request, order_id: str, action: str, notify: int) -> Response:
    provider = _sandbox_provider(request)
    try:
        event = getattr(provider, action)(order_id, notify=notify)
    except ProviderError as exc:
        raise ApiError(404, "unknown_trade", str(exc)) from exc
    data = {"order_id": order_id, "status": event.status.value,
            "transaction_id": event.transaction_id, "notifications": notify}
    accept = request.headers.get("accept", "")
    if "text/html" in accept and "application/json" not in accept:
        return HTMLResponse(f"<h1>{html.escape(event.status.value)}</h1>"
                            f"<p>Order <code>{html.escape(order_id)}</code></p>")
    return _json(200, data)


@sandbox.post("/orders/{order_id}/pay")
def sandbox_pay(order_id: str, request: Request, notify: int = 1) -> Response:
    """Pay (the page's button, or a script). ``notify=0`` loses the notification, ``2``
    sends it twice: both must still ship exactly once."""
    return _sandbox_action(request, order_id, "pay", min(max(notify, 0), 5))


@sandbox.post("/orders/{order_id}/decline")
def sandbox_decline(order_id: str, request: Request, notify: int = 1) -> Response:
    """Decline: the trade closes unpaid and the order is cancelled."""
    return _sandbox_action(request, order_id, "decline", min(max(notify, 0), 5))


# --- the app -----------------------------------------------------------------------------


async def _poll_forever(backend: Backend, wake: asyncio.Event) -> None:
    """The provider-query / expiry / refund loop; sleeps until due or woken."""
    while True:
        try:
            due = await run_in_threadpool(backend.run_due_work)
        except Exception:
            log.exception("background pass failed")
            due = 1.0
        # New orders do not wake the loop (that would cost a pass per sale): it never sleeps
        # longer than the first query delay, so a new order is queried at most that late.
        longest = min(POLLER_MAX_SLEEP_S, backend.settings.query_interval)
        timeout = longest if due is None else min(max(due, POLLER_MIN_SLEEP_S), longest)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout)
        wake.clear()


DOCS_ASSETS = "/docs-assets"


def _swagger_assets() -> str | None:
    """The folder of Swagger UI's files (``swagger-ui-bundle`` package), or None."""
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        return None
    return str(swagger_ui_path)


def _local_docs(app: FastAPI, folder: str) -> None:
    """``/docs`` with Swagger UI served from this server: it works offline."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles

    app.mount(DOCS_ASSETS, StaticFiles(directory=folder), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} - docs",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png")


def create_app(settings: ServerSettings | None = None, *, clock: Clock | None = None,
               http: httpx.Client | None = None, backend: Backend | None = None) -> FastAPI:
    """Build the app (and its database schema); the poller starts with the app's lifespan."""
    if backend is None:
        settings = settings or ServerSettings.from_env()
        settings.ensure_operator_token()
        backend = Backend(settings, clock=clock, http=http)
    the_backend = backend

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = None
        # This process's row in server_instances, renewed on a thread of its own: a key its
        # requests hold is known to be running while it beats (and dead once it stops).
        await run_in_threadpool(the_backend.start_heartbeat)
        the_backend.start_doorbell()
        if the_backend.settings.run_poller:
            loop = asyncio.get_running_loop()
            wake = asyncio.Event()

            def _wake() -> None:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(wake.set)

            the_backend.wake_poller = _wake
            task = asyncio.create_task(_poll_forever(the_backend, wake))
        try:
            yield
        finally:
            if the_backend.doorbell is not None:
                the_backend.doorbell.stop()
            the_backend.wake_poller = lambda: None
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await run_in_threadpool(the_backend.stop_heartbeat)

    assets = _swagger_assets()
    app = FastAPI(title="vendhw reference backend", version="1", lifespan=lifespan,
                  docs_url=None if assets else "/docs",
                  description="QR payment (sandbox, WeChat Pay, Alipay), pickup and lottery "
                              "codes, machine push and refunds. See docs/backend.md "
                              "for the signing scheme and the order state machine.")
    app.state.backend = the_backend

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(ReplayedNonce)
    async def _replayed(request: Request, exc: ReplayedNonce) -> JSONResponse:
        # A replay raced its original and lost at the nonce's insert: nothing it did stays.
        return JSONResponse({"error": "replayed_nonce", "detail": "this nonce was already used"},
                            status_code=401)

    @app.exception_handler(ConfigurationError)
    async def _config_error(request: Request, exc: ConfigurationError) -> JSONResponse:
        return JSONResponse({"error": "invalid_document", "detail": str(exc)}, status_code=422)

    @app.exception_handler(DataError)
    async def _data_error(request: Request, exc: DataError) -> JSONResponse:
        # The database refused a value (NUL byte, too long, out of range): the caller's input.
        detail = str(getattr(exc, "orig", exc)).splitlines()[0][:200]
        return JSONResponse({"error": "invalid_value", "detail": detail}, status_code=422)

    @app.exception_handler(OverflowError)
    async def _overflow(request: Request, exc: OverflowError) -> JSONResponse:
        return JSONResponse({"error": "invalid_value", "detail": f"number out of range: {exc}"},
                            status_code=422)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # parse_constant: an Infinity/NaN the client sent is echoed as text (a JSON response
        # cannot carry it; rendering it raised a 500).
        errors = json.loads(json.dumps(exc.errors(), default=str), parse_constant=str)
        return JSONResponse({"error": "invalid_request", "detail": errors}, status_code=422)

    app.include_router(public)
    app.include_router(machine)
    app.include_router(operator)
    from vendhw.server.operator_routes import router as operators_router

    app.include_router(operators_router)
    if the_backend.sandbox is not None:
        app.include_router(sandbox)
    if assets:
        _local_docs(app, assets)
    app.add_middleware(Guard, backend=the_backend, routes=lambda: app.router.routes)
    return app


__all__ = ["create_app"]
