"""Hostile or broken input gets a clean 4xx on SQLite and PostgreSQL; bodies are bounded
before they are read; machines are authenticated before their JSON is parsed; a dead
request's Idempotency-Key becomes retryable."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from vendhw.client import signing
from vendhw.server.settings import FakeClock
from vendhw.testing.backend import InProcessServer


@pytest.fixture
def srv(db_url: str) -> Iterator[InProcessServer]:
    server = InProcessServer(None, db_url=db_url, order_ttl=60.0)
    server.add_machine("m1", slots={"A1": ("cola", 350)})
    yield server
    server.close()


def _signed_post(server: InProcessServer, path: str, body: bytes,
                 key: str | None = None) -> Any:
    headers = signing.signed_headers(server.secrets["m1"], "m1", "POST", path, body,
                                     server.clock.now())
    headers["Content-Type"] = "application/json"
    if key:
        headers[signing.HEADER_IDEMPOTENCY] = key
    return server.http.post(path, content=body, headers=headers)


def _one_line_error(response: Any) -> dict[str, Any]:
    data = response.json()
    assert isinstance(data, dict) and "error" in data
    assert "Traceback" not in response.text
    return data


def test_nul_bytes_in_a_slot_or_a_filter_are_4xx(srv: InProcessServer) -> None:
    body = json.dumps({"slot": "A\x001"}).encode()
    response = _signed_post(srv, "/machine/v1/orders", body)
    assert 400 <= response.status_code < 500
    _one_line_error(response)
    for query in ("state=paid%00", "machine=m%001"):
        response = srv.http.get(f"/operator/v1/orders?{query}",
                                headers=srv.operator_headers)
        assert response.status_code == 400
        _one_line_error(response)
    response = _signed_post(srv, "/machine/v1/codes/redeem",
                            json.dumps({"code": "1234\x00567890"}).encode())
    assert 400 <= response.status_code < 500
    response = srv.operator("POST", "/operator/v1/codes",
                            json={"product": "cola\x00", "count": 1})
    assert 400 <= response.status_code < 500
    # The server still answers afterwards (no broken connection or session).
    assert srv.http.get("/healthz").status_code == 200


@pytest.mark.parametrize("code", ["\uff10\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff19",
                                  "\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669\u0660",
                                  "\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079\u2070"])
def test_non_ascii_digit_codes_are_malformed_not_500(srv: InProcessServer, code: str) -> None:
    response = _signed_post(srv, "/machine/v1/codes/redeem",
                            json.dumps({"code": code}).encode())
    assert response.status_code == 400
    assert _one_line_error(response)["error"] == "code_malformed"


def test_huge_numbers_are_4xx(srv: InProcessServer) -> None:
    sale = {"reference": "r1", "slot": "A1", "amount": 10**20, "outcome": "delivered"}
    response = _signed_post(srv, "/machine/v1/sales/cash", json.dumps(sale).encode())
    assert response.status_code == 422
    _one_line_error(response)
    catalogue = {"products": [{"id": "gold", "name": "Gold", "price": 10**20}]}
    response = srv.operator("POST", "/operator/v1/catalogue", json=catalogue)
    assert response.status_code == 422
    _one_line_error(response)
    for valid_for in (1e308, "1e308", "99999999999999999999h"):
        response = srv.operator("POST", "/operator/v1/codes",
                                json={"product": "cola", "count": 1, "valid_for": valid_for})
        assert response.status_code == 422, valid_for
        _one_line_error(response)
    response = srv.http.post("/operator/v1/codes", headers={
        **srv.operator_headers, "Content-Type": "application/json"},
        content=b'{"product": "cola", "count": 1, "valid_for": NaN}')
    assert 400 <= response.status_code < 500
    # An over-long slot name (VARCHAR(32) on PostgreSQL) is refused, not a 500.
    response = _signed_post(srv, "/machine/v1/orders", json.dumps({"slot": "A" * 500}).encode())
    assert 400 <= response.status_code < 500


def _asgi_post(srv: InProcessServer, path: str, chunks: list[bytes],
               headers: list[tuple[bytes, bytes]]) -> tuple[int, int, bytes]:
    """POST straight to the ASGI app; returns (status, body bytes the app pulled, reply)."""
    pulled = 0
    sent: list[dict[str, Any]] = []
    queue = list(chunks)

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        if not queue:
            return {"type": "http.disconnect"}
        chunk = queue.pop(0)
        pulled += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": bool(queue)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": b"", "headers": headers, "client": ("127.0.0.1", 1),
             "server": ("testserver", 80), "root_path": ""}
    asyncio.run(srv.app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, pulled, body


def test_a_huge_declared_body_is_refused_unread(srv: InProcessServer) -> None:
    megabyte = b"x" * (1 << 20)
    chunks = [megabyte] * 256  # 256 MiB if anybody read it all
    status, pulled, body = _asgi_post(srv, "/notify/sandbox", chunks, [
        (b"content-length", str(256 << 20).encode()), (b"content-type", b"application/json")])
    assert status == 413 and pulled == 0
    assert json.loads(body)["error"] == "body_too_large"


def test_a_huge_chunked_body_is_cut_at_the_limit(srv: InProcessServer) -> None:
    limit = srv.settings.max_body
    chunks = [b"x" * 65536] * 4096  # 256 MiB, no Content-Length
    for path in ("/notify/sandbox", "/machine/v1/orders", "/sandbox/orders/x/pay"):
        status, pulled, _ = _asgi_post(srv, path, list(chunks),
                                       [(b"transfer-encoding", b"chunked")])
        assert status == 413, path
        assert pulled <= limit + 65536


def test_operator_bodies_need_the_token_before_they_are_read(srv: InProcessServer) -> None:
    status, pulled, _ = _asgi_post(srv, "/operator/v1/catalogue", [b"{" * 1000] * 10,
                                   [(b"transfer-encoding", b"chunked")])
    assert status == 401 and pulled == 0


def test_unsigned_machine_requests_get_no_validation_details(srv: InProcessServer) -> None:
    for body in (b"{not json", b'{"slot": 5}', b"[]"):
        response = srv.http.post("/machine/v1/orders", content=body,
                                 headers={"Content-Type": "application/json"})
        assert response.status_code == 401
        assert response.json()["error"] == "unauthenticated"
        assert "slot" not in response.text and "json" not in response.text.lower()
    # Signed, the same broken JSON is explained.
    response = _signed_post(srv, "/machine/v1/orders", b"{not json")
    assert response.status_code == 422


def test_a_dead_requests_idempotency_key_becomes_retryable(srv: InProcessServer) -> None:
    """A request that died mid-way leaves its key "in progress" (the row a real SIGKILL
    leaves: status 0, committed before the work started). Held by this process, which is
    not running it any more: the retry runs it at once, and the outcome applies once."""
    backend = srv.backend
    order = srv.client("m1").create_order("A1")
    srv.pay(order.id)
    path = f"/machine/v1/orders/{order.id}/result"
    body = json.dumps({"outcome": "jammed"}).encode()
    fingerprint = b"POST " + path.encode() + b"\n" + body

    class Killed(BaseException):
        """Stands for SIGKILL: nothing after it runs, not even the key's cleanup."""

    def die() -> tuple[int, dict[str, Any]]:
        raise Killed

    original_forget = backend._forget
    backend._forget = lambda *args: None  # type: ignore[method-assign]  # a dead process forgets nothing
    with pytest.raises(Killed):
        backend.idempotent("m1", "k-dead", fingerprint, die)
    backend._forget = original_forget  # type: ignore[method-assign]

    response = _signed_post(srv, path, body, key="k-dead")
    assert response.status_code == 200
    assert response.json()["state"] == "refunded"
    again = _signed_post(srv, path, body, key="k-dead")
    assert again.status_code == 200 and again.json() == response.json()
    detail = srv.operator("GET", f"/operator/v1/orders/{order.id}").json()
    assert detail["refund"]["status"] == "succeeded"
    moves = [a["to"] for a in detail["audit"] if a["entity"] == "order"]
    assert moves.count("refunding") == 1 and moves.count("refunded") == 1


def test_a_key_of_another_live_process_is_refused_with_retry_after(srv: InProcessServer
                                                                   ) -> None:
    """On the wire: a key held by another process that still beats gets 409
    request_in_progress with Retry-After; once that process has not been seen for its
    instance timeout, the retry runs the request."""
    import hashlib

    from sqlalchemy import insert

    from vendhw.server.models import IdempotentResponse, ServerInstance

    assert isinstance(srv.clock, FakeClock)
    order = srv.client("m1").create_order("A1")
    srv.pay(order.id)
    path = f"/machine/v1/orders/{order.id}/result"
    body = json.dumps({"outcome": "jammed"}).encode()
    now = srv.clock.now()
    timeout = srv.settings.instance_timeout
    with srv.backend.db.tx() as s:
        s.execute(insert(ServerInstance).values(id="si-other", host="elsewhere", pid=1,
                                                started_at=now, seen_at=now,
                                                alive_until=now + timeout))
        s.execute(insert(IdempotentResponse).values(
            machine_id="m1", key="k-other", status_code=0, body={}, created_at=now,
            holder="si-other", request_hash=hashlib.sha256(
                b"POST " + path.encode() + b"\n" + body).hexdigest()))
    response = _signed_post(srv, path, body, key="k-other")
    assert response.status_code == 409
    assert response.json()["error"] == "request_in_progress"
    assert 1 <= int(response.headers["Retry-After"]) <= timeout + 1
    srv.clock.advance(timeout + 0.5)
    response = _signed_post(srv, path, body, key="k-other")
    assert response.status_code == 200 and response.json()["state"] == "refunded"


def test_docs_work_offline() -> None:
    server = InProcessServer()
    try:
        page = server.http.get("/docs")
        assert page.status_code == 200
        assert "cdn." not in page.text and "http" not in page.text.split("<body>")[-1]
        for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
            assert f"/docs-assets/{asset}" in page.text
            response = server.http.get(f"/docs-assets/{asset}")
            assert response.status_code == 200 and len(response.content) > 10_000
    finally:
        server.close()


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "example.org"])
def test_serve_refuses_a_public_sandbox_without_the_flag(tmp_path: Any, host: str) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "vendhw", "backend", "serve", "--db", str(tmp_path / "b.db"),
         "--host", host, "--port", "1"], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "--allow-public-sandbox" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "b.db").exists()  # refused before anything was created
