"""Machine request signing: forged, tampered, replayed and stale requests are refused."""

from __future__ import annotations

import httpx
import pytest

from vendhw.client import BackendClient, signing
from vendhw.client.core import ClientCore, op_create_order
from vendhw.testing.backend import InProcessServer


def signed(server: InProcessServer, method: str, path: str, body: bytes = b"",
           secret: str | None = None, machine: str = "m1", now: float | None = None
           ) -> dict[str, str]:
    headers = signing.signed_headers(secret or server.secrets[machine], machine, method, path,
                                     body, server.clock.now() if now is None else now)
    headers["Content-Type"] = "application/json"
    return headers


def test_canonical_string_is_the_documented_one() -> None:
    text = signing.canonical_string("post", "/machine/v1/orders?x=1", "1700000000",
                                    "00112233445566778899aabbccddeeff", "m1", b'{"slot":"A1"}')
    lines = text.decode().split("\n")
    assert lines[:6] == ["VENDHW1-HMAC-SHA256", "POST", "/machine/v1/orders?x=1",
                         "1700000000", "00112233445566778899aabbccddeeff", "m1"]
    assert lines[6] == signing.body_digest(b'{"slot":"A1"}') and len(lines[6]) == 64
    sig = signing.sign("s" * 16, "POST", "/p", "1", "n" * 8, "m1", b"")
    parts = signing.SignedParts("m1", "1", "n" * 8, sig.upper())
    assert signing.verify("s" * 16, parts, "POST", "/p", b"")
    assert not signing.verify("s" * 16, parts, "POST", "/q", b"")


def test_a_correct_request_passes_and_marks_the_machine_seen(server: InProcessServer,
                                                             client: BackendClient) -> None:
    body = b'{"slot":"A1"}'
    response = server.http.post("/machine/v1/orders", content=body,
                                headers=signed(server, "POST", "/machine/v1/orders", body))
    assert response.status_code == 201
    [machine] = server.operator("GET", "/operator/v1/machines").json()["machines"]
    assert machine["last_seen"] is not None


@pytest.mark.parametrize("tamper", ["secret", "body", "path", "method", "machine"])
def test_forged_or_tampered_requests_are_refused(server: InProcessServer, client: BackendClient,
                                                 tamper: str) -> None:
    body = b'{"slot":"A1"}'
    headers = signed(server, "POST", "/machine/v1/orders", body,
                     secret="not-the-secret-at-all" if tamper == "secret" else None)
    method, path, sent = "POST", "/machine/v1/orders", body
    if tamper == "body":
        sent = b'{"slot":"A2"}'
    elif tamper == "path":
        path = "/machine/v1/orders?provider=x"
    elif tamper == "method":
        method = "PUT"
    elif tamper == "machine":
        headers[signing.HEADER_MACHINE] = "m-unknown"
    response = server.http.request(method, path, content=sent, headers=headers)
    expected = 405 if tamper == "method" else 401
    assert response.status_code == expected
    if expected == 401:
        assert response.json()["error"] == "bad_signature"
    assert server.backend.list_orders() == []


def test_a_replayed_request_is_refused(server: InProcessServer, client: BackendClient) -> None:
    body = b'{"slot":"A1"}'
    headers = signed(server, "POST", "/machine/v1/orders", body)
    first = server.http.post("/machine/v1/orders", content=body, headers=headers)
    replay = server.http.post("/machine/v1/orders", content=body, headers=headers)
    assert first.status_code == 201
    assert (replay.status_code, replay.json()["error"]) == (401, "replayed_nonce")
    assert len(server.backend.list_orders()) == 1


@pytest.mark.parametrize("skew", [-301, 301])
def test_stale_timestamps_are_refused(server: InProcessServer, client: BackendClient,
                                      skew: float) -> None:
    body = b'{"slot":"A1"}'
    headers = signed(server, "POST", "/machine/v1/orders", body, now=server.clock.now() + skew)
    refused = server.http.post("/machine/v1/orders", content=body, headers=headers)
    assert (refused.status_code, refused.json()["error"]) == (401, "stale_timestamp")
    assert "clock" in refused.json()["detail"]
    assert refused.json()["server_time"] == int(server.clock.now())
    assert server.backend.list_orders() == []
    near = server.client("m1", clock=lambda: server.clock.now() + skew * 0.9)
    assert near.create_order("A1").state == "awaiting_payment"
    # The client learns the backend's clock from the refusal and gets in (no RTC battery).
    late = server.client("m1", clock=lambda: server.clock.now() + skew)
    assert late.create_order("A1").state == "awaiting_payment"


def test_missing_headers_and_bad_fields(server: InProcessServer, client: BackendClient) -> None:
    response = server.http.post("/machine/v1/orders", json={"slot": "A1"})
    assert (response.status_code, response.json()["error"]) == (401, "unauthenticated")
    body = b'{"slot":"A1"}'
    headers = signed(server, "POST", "/machine/v1/orders", body)
    headers[signing.HEADER_TIMESTAMP] = "yesterday"
    response = server.http.post("/machine/v1/orders", content=body, headers=headers)
    assert response.json()["error"] == "bad_timestamp"


def test_machines_see_only_their_own_orders(server: InProcessServer,
                                            client: BackendClient) -> None:
    server.add_machine("m2")
    order = client.create_order("A1")
    with pytest.raises(Exception) as info:
        server.client("m2").order_status(order.id)
    assert getattr(info.value, "code", "") == "unknown_order"


def test_operator_api_needs_its_own_token(server: InProcessServer,
                                          client: BackendClient) -> None:
    assert server.http.get("/operator/v1/machines").status_code == 401
    wrong = server.http.get("/operator/v1/machines", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"] == "operator_unauthenticated"
    # A machine's signature is no operator credential.
    core = ClientCore("http://testserver", "m1", server.secrets["m1"], clock=server.clock.now)
    request = core.request(op_create_order("A1").call)
    forged = httpx.Request("GET", "http://testserver/operator/v1/machines",
                           headers=dict(request.headers))
    assert server.http.send(forged).status_code == 401
    assert server.operator("GET", "/operator/v1/machines").status_code == 200


def _replay_refused(server: InProcessServer, method: str, path: str, body: bytes = b""
                    ) -> tuple[int, int]:
    headers = signed(server, method, path, body)
    first = server.http.request(method, path, content=body, headers=headers)
    replay = server.http.request(method, path, content=body, headers=headers)
    assert (replay.status_code, replay.json()["error"]) == (401, "replayed_nonce"), path
    return first.status_code, replay.status_code


def test_a_request_that_failed_or_only_read_cannot_be_replayed(server: InProcessServer,
                                                               client: BackendClient) -> None:
    """The nonce rides in the request's first write transaction; a request that wrote
    nothing, or whose transaction rolled back, still spends it before it answers."""
    # rolled back inside the operation's transaction (unknown slot: 404)
    assert _replay_refused(server, "POST", "/machine/v1/orders", b'{"slot":"Z9"}')[0] == 404
    # refused before any transaction (bad outcome: 422), and by the request model (422)
    order = client.create_order("A1")
    path = f"/machine/v1/orders/{order.id}/result"
    assert _replay_refused(server, "POST", path, b'{"outcome":"sideways"}')[0] == 422
    assert _replay_refused(server, "POST", path, b'{"nope":1}')[0] == 422
    # a conflict after reading (409), a read-only request, an unknown instruction (404)
    server.pay(order.id)
    cancel = f"/machine/v1/orders/{order.id}/cancel"
    assert _replay_refused(server, "POST", cancel)[0] == 409
    assert _replay_refused(server, "GET", "/machine/v1/catalogue")[0] == 200
    assert _replay_refused(server, "GET", f"/machine/v1/orders/{order.id}")[0] == 200
    assert _replay_refused(server, "POST", "/machine/v1/instructions/ins_x/ack")[0] == 404
    # a write that succeeded (the nonce committed with it)
    assert _replay_refused(server, "GET", "/machine/v1/instructions")[0] == 200
    assert server.state(order.id) == "paid"  # the replays changed nothing


def test_a_replayed_create_order_never_reaches_the_provider(
        server: InProcessServer, client: BackendClient, monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox = server.backend.sandbox
    assert sandbox is not None
    calls: list[str] = []
    working = sandbox.create_qr

    def counting(info: object) -> object:
        calls.append(getattr(info, "out_trade_no", ""))
        return working(info)  # type: ignore[arg-type]

    monkeypatch.setattr(sandbox, "create_qr", counting)
    assert _replay_refused(server, "POST", "/machine/v1/orders", b'{"slot":"A1"}')[0] == 201
    assert len(calls) == 1 and len(server.backend.list_orders()) == 1
