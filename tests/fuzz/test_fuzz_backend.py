"""The backend's notification parsers and request bodies on random input (the FastAPI test
client raises any server exception): every answer is a clear 2xx/4xx, never a 500, and
random input never moves money (no order is paid or refunded by it)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fuzzprofile import fuzz
from hypothesis import given
from hypothesis import strategies as st

from vendhw.client import signing
from vendhw.testing.backend import InProcessServer

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                max_size=4),
    max_leaves=12)
FIELD = JSON | st.sampled_from(["1", "A1", "", "delivered", "unknown", "jammed", "sandbox",
                                "x" * 300, "0", "-1", "1e9", "\x00", "ü", "../../etc"])


def shaped(*keys: str) -> st.SearchStrategy[Any]:
    """Dicts with the endpoint's own keys (random values), plus extra random keys."""
    return st.fixed_dictionaries({}, optional=dict.fromkeys(keys, FIELD)).flatmap(
        lambda d: st.dictionaries(st.text(max_size=8), FIELD, max_size=2).map(
            lambda extra: {**extra, **d}))


BODY = st.one_of(
    st.binary(max_size=200),
    JSON.map(lambda v: json.dumps(v).encode()),
)

@pytest.fixture(scope="module")
def server() -> Iterator[InProcessServer]:
    srv = InProcessServer()
    srv.add_machine("m1", slots={"1": ("tea", 500), "2": ("cake", 1500)})
    yield srv
    srv.close()


def machine_call(server: InProcessServer, method: str, path: str, body: bytes) -> Any:
    headers = signing.signed_headers(server.secrets["m1"], "m1", method, path, body,
                                     server.clock.now())
    headers["Content-Type"] = "application/json"
    return server.http.request(method, path, content=body, headers=headers)


def money_moved(server: InProcessServer) -> list[str]:
    orders = server.operator("GET", "/operator/v1/orders").json()
    items = orders.get("orders", orders) if isinstance(orders, dict) else orders
    return [o["id"] for o in items if o.get("state") not in ("created", "awaiting_payment",
                                                             "pending", "expired",
                                                             "cancelled")]


ENDPOINTS = {
    "orders": ("POST", "/machine/v1/orders", shaped("slot", "provider")),
    "result": ("POST", "/machine/v1/orders/{order}/result",
               shaped("outcome", "details", "instruction_id")),
    "cash": ("POST", "/machine/v1/sales/cash",
             shaped("reference", "slot", "amount", "outcome", "details")),
    "redeem": ("POST", "/machine/v1/codes/redeem", shaped("code")),
    "ack": ("POST", "/machine/v1/instructions/{order}/ack", shaped()),
    "cancel": ("POST", "/machine/v1/orders/{order}/cancel", shaped()),
}


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
@given(data=st.data(), raw=st.booleans(), order=st.sampled_from(
    ["o-none", "..", "%2e%2e", "x" * 200, "1"]))
@fuzz(40)
def test_machine_request_bodies(server: InProcessServer, endpoint: str, data: st.DataObject,
                                raw: bool, order: str) -> None:
    method, path, shape = ENDPOINTS[endpoint]
    body = data.draw(BODY) if raw else json.dumps(data.draw(shape)).encode()
    response = machine_call(server, method, path.format(order=order), body)
    assert response.status_code < 500, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize("provider", ["sandbox", "wechat", "alipay", "nope"])
@given(body=BODY, headers=st.dictionaries(
    st.sampled_from(["Wechatpay-Signature", "Wechatpay-Timestamp", "Wechatpay-Nonce",
                     "Wechatpay-Serial", "Content-Type", "X-Sandbox-Signature",
                     "X-Vendhw-Signature"]),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
    max_size=5))
@fuzz(40)
def test_payment_notifications(server: InProcessServer, provider: str, body: bytes,
                               headers: dict[str, str]) -> None:
    before = money_moved(server)
    response = server.http.post(f"/notify/{provider}", content=body, headers=headers)
    assert response.status_code < 500, (response.status_code, response.text[:300])
    assert money_moved(server) == before  # an unsigned/forged notification pays nothing


@pytest.mark.parametrize("endpoint", ["catalogue", "codes", "resolve", "refund", "machines"])
@given(document=JSON)
@fuzz(40)
def test_operator_request_bodies(server: InProcessServer, endpoint: str,
                                 document: Any) -> None:
    method, path = {"catalogue": ("POST", "/operator/v1/catalogue"),
                    "codes": ("POST", "/operator/v1/codes"),
                    "resolve": ("POST", "/operator/v1/orders/o-none/resolve"),
                    "refund": ("POST", "/operator/v1/orders/o-none/refund"),
                    "machines": ("PUT", "/operator/v1/machines/m9")}[endpoint]
    response = server.http.request(method, path, content=json.dumps(document).encode(),
                                   headers={**server.operator_headers,
                                            "Content-Type": "application/json"})
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if endpoint == "catalogue" and response.status_code < 300:
        server.add_machine("m1", secret=server.secrets["m1"],
                           slots={"1": ("tea", 500), "2": ("cake", 1500)})


def test_infinity_in_a_request_body_is_a_422_not_a_500(server: InProcessServer) -> None:
    """Found by test_machine_request_bodies[redeem]: ``{"": Infinity}`` made the 422 handler
    echo a float JSON cannot carry, and rendering it raised (a 500)."""
    response = machine_call(server, "POST", "/machine/v1/codes/redeem", b'{"": Infinity}')
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"
