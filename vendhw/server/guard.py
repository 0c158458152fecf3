"""The ASGI guard in front of every route: what is refused before any body is parsed.

In order, for every HTTP request:

1. a path or query string holding a NUL byte (raw or ``%00``) is refused (400): no database
   stores it and nothing legitimate sends it;
2. a declared ``Content-Length`` above the route's limit is refused (413) before a byte of the
   body is read; a chunked body is counted as it arrives and cut (413) at the limit, so an
   unauthenticated caller can never make the server hold more than the limit in memory;
3. operator routes check the bearer token from the headers, before the body is read;
4. machine routes read the (bounded) body and check the HMAC signature, timestamp and nonce
   **before** any JSON is parsed: an unauthenticated caller gets ``401`` and no validation
   details. The authenticated machine id is handed to the route in the ASGI scope. The
   nonce is spent by the request's first write transaction (no commit of its own), and in
   any case before the answer leaves: a replay is refused (401) whatever the request did.

The body read here is replayed to the app unchanged.
"""

from __future__ import annotations

import contextlib
import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.routing import Match

from vendhw.server.db import PENDING_NONCE, PendingNonce, ReplayedNonce
from vendhw.server.service import ApiError, Backend

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SCOPE_MACHINE = "vendhw.machine_id"
"""ASGI scope key: the machine id the guard authenticated."""

MACHINE_PREFIX = "/machine/"
OPERATOR_PREFIX = "/operator/"


class _TooLarge(Exception):
    pass


def signed_path(scope: Scope) -> str:
    """The path (and query) exactly as the machine signed it."""
    raw = scope.get("raw_path") or scope["path"].encode()
    query = scope.get("query_string") or b""
    path = raw.decode("latin-1")
    return path + ("?" + query.decode("latin-1") if query else "")


def operator_token_ok(backend: Backend, headers: dict[str, str]) -> bool:
    """The operator API's bearer token, compared in constant time."""
    header = headers.get("authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else ""
    expected = backend.settings.operator_token
    return bool(token and expected and hmac.compare_digest(token.encode(), expected.encode()))


class Guard:
    """ASGI middleware: limits and authentication before the app sees a body."""

    def __init__(self, app: ASGIApp, backend: Backend,
                 routes: Callable[[], list[Any]] | None = None) -> None:
        self.app = app
        self.backend = backend
        self.routes = routes or (lambda: [])

    def _is_route(self, scope: Scope) -> bool:
        """Path and method name a route (else the app answers 404/405, unauthenticated)."""
        return any(route.matches(scope)[0] is Match.FULL for route in self.routes())

    def limit_for(self, path: str) -> int:
        settings = self.backend.settings
        if path.startswith(OPERATOR_PREFIX):
            return settings.max_operator_body
        return settings.max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        raw_path: bytes = scope.get("raw_path") or b""
        query: bytes = scope.get("query_string") or b""
        if ("\x00" in path or b"\x00" in raw_path or b"\x00" in query
                or b"%00" in query or b"%00" in raw_path):
            await _reply(send, 400, {"error": "bad_request",
                                     "detail": "NUL bytes are not allowed in the path or query"})
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers") or []}
        limit = self.limit_for(path)
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.isascii() or not declared.isdigit():
                await _reply(send, 400, {"error": "bad_request",
                                         "detail": "Content-Length must be a number"})
                return
            if int(declared) > limit:
                await _reply(send, 413, _too_large(limit))
                return
        if path.startswith(OPERATOR_PREFIX) and not operator_token_ok(self.backend, headers):
            await _reply(send, 401, {"error": "operator_unauthenticated",
                                     "detail": "send Authorization: Bearer <operator token>"},
                         {"WWW-Authenticate": "Bearer"})
            return
        if scope["method"] in ("GET", "HEAD", "OPTIONS") and declared in (None, "0") \
                and "transfer-encoding" not in headers:
            body = b""
            more_body = False
        else:
            try:
                body = await _read_body(receive, limit)
            except _TooLarge:
                await _reply(send, 413, _too_large(limit))
                return
            more_body = False
        pending: PendingNonce | None = None
        if path.startswith(MACHINE_PREFIX) and self._is_route(scope):
            try:
                # On the event loop when the machine's secret is cached (no database, no
                # blocking); in a thread when the database must be asked.
                pending = self.backend.verify_request_cached(
                    headers, scope["method"], signed_path(scope), body)
                if pending is None:
                    pending = await run_in_threadpool(
                        self.backend.verify_request, headers, scope["method"],
                        signed_path(scope), body)
            except ApiError as exc:
                await _reply(send, exc.status, exc.body(), exc.headers, close=False)
                return
            scope[SCOPE_MACHINE] = pending.machine_id
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": more_body}
            return await receive()  # http.disconnect when the client goes away

        if pending is None:
            await self.app(scope, replay, send)
            return
        await self._run_spending(scope, replay, send, pending)

    async def _run_spending(self, scope: Scope, receive: Receive, send: Send,
                            pending: PendingNonce) -> None:
        """Run a machine request whose nonce its first write transaction spends; before
        any answer leaves, make sure the nonce is committed (a request that wrote nothing or
        rolled back spends it alone). A replay that raced it and lost gets 401."""
        refused = False

        async def spend() -> bool:
            try:
                await run_in_threadpool(self.backend.db.spend_pending_nonce)
            except ReplayedNonce:
                return False
            return True

        async def guarded_send(message: Message) -> None:
            nonlocal refused
            if refused:
                return
            if message["type"] == "http.response.start" and not pending.stored \
                    and not await spend():
                refused = True
                await _reply(send, 401, _REPLAYED, close=False)
                return
            await send(message)

        token = PENDING_NONCE.set(pending)
        try:
            await self.app(scope, receive, guarded_send)
        except ReplayedNonce:
            if not refused:
                refused = True
                await _reply(send, 401, _REPLAYED, close=False)
        except BaseException:
            if not pending.stored:
                with contextlib.suppress(Exception):
                    await spend()
            raise
        finally:
            PENDING_NONCE.reset(token)


_REPLAYED = {"error": "replayed_nonce", "detail": "this nonce was already used"}


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _too_large(limit: int) -> dict[str, Any]:
    return {"error": "body_too_large", "detail": f"request bodies are limited to {limit} bytes"}


async def _reply(send: Send, status: int, body: dict[str, Any],
                 headers: dict[str, str] | None = None, *, close: bool = True) -> None:
    data = json.dumps(body).encode()
    raw_headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(data)).encode())]
    if close:  # the body was not (fully) read: the connection cannot be reused
        raw_headers.append((b"connection", b"close"))
    raw_headers += [(k.lower().encode("latin-1"), v.encode("latin-1"))
                    for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": data})


__all__ = ["SCOPE_MACHINE", "Guard", "operator_token_ok", "signed_path"]
