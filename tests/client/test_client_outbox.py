"""The client's exactly-once reporting: retries keep their key, reports wait in the SQLite
outbox while the backend is unreachable and go out in order when it returns."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from vendhw.client import BackendClient, BackendError, BackendUnavailable, Outbox
from vendhw.client.core import ClientCore, op_order_status
from vendhw.testing.backend import BASE_URL, InProcessServer


class Link(httpx.BaseTransport):
    """The machine's network: forwards to the in-process app unless cut.

    ``lose_answers`` forwards requests but drops that many answers (the request *did*
    arrive), which is the case idempotency keys exist for.
    """

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.down = False
        self.lose_answers = 0
        self.sent: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("network is unreachable", request=request)
        self.sent.append(f"{request.method} {request.url.path}")
        response = self.inner.handle_request(request)
        if self.lose_answers:
            self.lose_answers -= 1
            response.read()
            raise httpx.ReadTimeout("answer lost", request=request)
        return response


@pytest.fixture
def server(tmp_path: Path) -> Iterator[InProcessServer]:
    srv = InProcessServer(tmp_path / "backend.db")
    srv.add_machine("m1")
    yield srv
    srv.close()


@pytest.fixture
def link(server: InProcessServer) -> Link:
    return Link(server.http._transport)


def machine(server: InProcessServer, link: Link, outbox: Path | Outbox | None = None,
            retries: int = 2) -> BackendClient:
    http = httpx.Client(transport=link, base_url=BASE_URL)
    return BackendClient(BASE_URL, "m1", server.secrets["m1"], http=http, outbox=outbox,
                         retries=retries, backoff=0.0, clock=server.clock.now)


def dispensing(server: InProcessServer, client: BackendClient, slot: str = "A1") -> str:
    order = client.create_order(slot)
    server.pay(order.id)
    [ship] = client.next_instructions(wait=0)
    client.ack(ship.id, ship.order_id)
    return order.id


def test_a_lost_answer_is_retried_with_the_same_key_and_counted_once(
        server: InProcessServer, link: Link) -> None:
    client = machine(server, link)
    order_id = dispensing(server, client)
    link.lose_answers = 1
    receipt = client.report_result(order_id, "jammed")
    assert not receipt.queued and receipt.order is not None
    assert receipt.order.state == "refunded"
    assert link.sent.count(f"POST /machine/v1/orders/{order_id}/result") == 2
    moves = [(a["from"], a["to"]) for a in server.backend.audit(order_id)]
    assert moves.count(("dispensing", "refunding")) == 1
    assert server.backend.order_detail(order_id)["refund"]["attempts"] == 1


def test_reports_wait_offline_and_go_out_in_order(server: InProcessServer, link: Link,
                                                  tmp_path: Path) -> None:
    journal = tmp_path / "machine-journal.db"
    client = machine(server, link, outbox=journal)
    first, second, third = (dispensing(server, client, slot) for slot in ("A1", "A2", "A1"))
    link.down = True
    receipts = [client.report_result(first, "delivered"),
                client.report_result(second, "empty", {"raw": 3}),
                client.report_result(third, "unknown")]
    assert all(r.queued for r in receipts)
    assert [item.key for item in client.outbox.pending()] == [r.idempotency_key
                                                              for r in receipts]
    with pytest.raises(BackendUnavailable):
        client.order_status(first)
    client.close()  # the machine reboots while offline

    link.down = False
    rebooted = machine(server, link, outbox=journal)
    assert len(rebooted.outbox.pending()) == 3
    sent = rebooted.flush()
    assert list(sent) == [r.idempotency_key for r in receipts]  # oldest first
    assert rebooted.outbox.pending() == []
    states = [server.state(o) for o in (first, second, third)]
    assert states == ["delivered", "refunded", "needs_review"]
    results = [line for line in link.sent if line.endswith("/result")]
    assert results == [f"POST /machine/v1/orders/{o}/result" for o in (first, second, third)]
    assert rebooted.flush() == {}  # nothing left, nothing sent twice
    rebooted.close()


def test_a_refused_report_is_set_aside_and_does_not_block_the_queue(
        server: InProcessServer, link: Link) -> None:
    client = machine(server, link)
    good = dispensing(server, client)
    link.down = True
    client.report_result("vo-no-such-order", "delivered")
    client.report_result(good, "delivered")
    link.down = False
    client.flush()
    assert server.state(good) == "delivered"
    [dead] = client.outbox.dead_letters()
    assert dead.path == "/machine/v1/orders/vo-no-such-order/result"
    assert "unknown_order" in dead.last_error
    with pytest.raises(BackendError) as info:  # reported live, the refusal is raised
        client.report_result("vo-another-missing-order", "delivered")
    assert info.value.code == "report_refused"


def test_redeliveries_are_recognised_after_a_restart(server: InProcessServer, link: Link,
                                                     tmp_path: Path) -> None:
    journal = tmp_path / "j.db"
    client = machine(server, link, outbox=journal)
    order = client.create_order("A1")
    server.pay(order.id)
    [ship] = client.next_instructions(wait=0)
    client.outbox.mark_acked(ship.id, order.id)  # journaled; crash before the ack went out
    client.close()
    server.clock.advance(10)  # type: ignore[attr-defined]
    rebooted = machine(server, link, outbox=journal)
    assert rebooted.next_instructions(wait=0) == []
    assert server.state(order.id) == "dispensing"  # the quiet re-ack reached the server


def test_retry_policy_and_unavailability() -> None:
    attempts: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        attempts.append(1)
        if len(attempts) < 3:
            return httpx.Response(503, json={"error": "busy"})
        return httpx.Response(200, json={"id": "o1", "state": "paid", "slot": "A1",
                                         "product_id": "p", "amount": 1, "currency": "CNY"})

    client = BackendClient("http://backend.invalid", "m1", "s" * 16, retries=3, backoff=0.0,
                           http=httpx.Client(transport=httpx.MockTransport(handler)))
    assert client.order_status("o1").state == "paid" and len(attempts) == 3

    def refuse(request: httpx.Request) -> httpx.Response:
        attempts.append(1)
        return httpx.Response(404, json={"error": "unknown_order", "detail": "no"})

    attempts.clear()
    client.http = httpx.Client(transport=httpx.MockTransport(refuse))
    with pytest.raises(BackendError) as info:
        client.order_status("o1")
    assert (info.value.code, len(attempts)) == ("unknown_order", 1)  # no retry on a refusal

    def cut(request: httpx.Request) -> httpx.Response:
        attempts.append(1)
        raise httpx.ConnectError("refused", request=request)

    attempts.clear()
    client.http = httpx.Client(transport=httpx.MockTransport(cut))
    with pytest.raises(BackendUnavailable, match="4 attempt"):
        client.order_status("o1")
    assert len(attempts) == 4


def test_every_attempt_is_signed_afresh_with_the_same_key() -> None:
    core = ClientCore("http://h", "m1", "s" * 16, clock=lambda: 1_700_000_000.0)
    call = op_order_status("o 1").call
    a, b = core.request(call), core.request(call)
    assert a.url.raw_path == b.url.raw_path == b"/machine/v1/orders/o%201"
    assert a.headers["X-Vendhw-Nonce"] != b.headers["X-Vendhw-Nonce"]
    assert a.headers["X-Vendhw-Signature"] != b.headers["X-Vendhw-Signature"]
    with BackendClient("http://h", "m1", "s" * 16) as client, \
            pytest.raises(ValueError, match="outcome"):
        client.report_result("o1", "exploded")
