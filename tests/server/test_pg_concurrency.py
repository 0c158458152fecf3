"""State changes that must happen once hold under concurrency, on SQLite and PostgreSQL.

Two :class:`Backend` instances over one database stand for two backend processes (each has
its own engine, pool and in-process lock); 16-40 threads hit them at once, released together
by a barrier. Every test asserts what the database holds afterwards (one order, one payment,
one refund ...) and that every refusal was a clean :class:`ApiError`, never a database error.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from vendhw.server.models import (
    CodeAttempt,
    IdempotentResponse,
    Instruction,
    Order,
    Payment,
    Refund,
)
from vendhw.server.providers import PaymentEvent, TradeStatus
from vendhw.server.service import ApiError, Backend
from vendhw.server.settings import ServerSettings

CATALOGUE = {
    "currency": "CNY",
    "products": [{"id": "cola", "name": "Cola", "price": 350}],
    "machines": [
        {"id": mid, "secret": "s3cret-" + mid + "-0123456789",
         "slots": [{"slot": "A1", "product": "cola"}]}
        for mid in ("m1", "m2")
    ],
}


def _backend(url: str, **overrides: Any) -> Backend:
    options: dict[str, Any] = {"db_url": url, "operator_token": "t", "run_poller": False,
                               "public_url": "http://testserver"}
    options.update(overrides)
    return Backend(ServerSettings(**options))


@pytest.fixture
def pair(db_url: str) -> Iterator[tuple[Backend, Backend]]:
    """Two backends ("processes") over one fresh database with machines m1 and m2."""
    first = _backend(db_url)
    first.load_catalogue(CATALOGUE)
    second = _backend(db_url)
    # The sandbox ledger is shared through the database; both must sign alike.
    second.settings.sandbox_secret = first.settings.sandbox_secret
    yield first, second
    first.close()
    second.close()


def _race(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run every call in its own thread, all released at once; results or exceptions."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(index: int, call: Callable[[], Any]) -> None:
        barrier.wait()
        try:
            results[index] = call()
        except BaseException as exc:  # kept for the assertions
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def _unexpected(results: list[Any]) -> list[BaseException]:
    """Exceptions that are not clean refusals (would be a 500)."""
    return [r for r in results if isinstance(r, BaseException) and not isinstance(r, ApiError)]


def _count(backend: Backend, column: Any, *where: Any) -> int:
    with backend.db.tx() as s:
        return int(s.execute(select(func.count(column)).where(*where)).scalar() or 0)


def test_one_code_redeemed_concurrently_ships_exactly_once(pair: tuple[Backend, Backend]
                                                           ) -> None:
    a, b = pair
    [code] = a.create_codes("cola", 1, 3600)
    calls = [(lambda be=be, m=m: be.redeem_code(m, code["code"]))
             for be, m in [(a, "m1"), (b, "m2"), (a, "m2"), (b, "m1")] * 4]
    results = _race(calls)
    assert _unexpected(results) == []
    assert _count(a, Order.id, Order.kind == "code") == 1
    assert _count(a, Instruction.id) == 1
    winners = {r["order"]["id"] for r in results if isinstance(r, dict)}
    assert len(winners) == 1
    refusals = Counter(r.code for r in results if isinstance(r, ApiError))
    assert set(refusals) <= {"code_in_use"}


def test_concurrent_wrong_codes_lock_the_prefix(pair: tuple[Backend, Backend]) -> None:
    a, b = pair
    limit = a.settings.code_max_failures
    [code] = a.create_codes("cola", 1, 3600)
    wrong = [code["code"][:4] + f"{i:06d}" for i in range(40)]
    wrong = [w for w in wrong if w != code["code"]][:40]
    calls = [(lambda be=(a if i % 2 else b), w=w: be.redeem_code("m1", w))
             for i, w in enumerate(wrong)]
    results = _race(calls)
    assert _unexpected(results) == []
    statuses = Counter(r.status for r in results if isinstance(r, ApiError))
    # Serialised: limit-1 plain refusals, then the one that locks and every later one: 429.
    assert statuses == {404: limit - 1, 429: len(wrong) - (limit - 1)}
    # The right code is refused while its prefix is locked.
    with pytest.raises(ApiError) as info:
        a.redeem_code("m1", code["code"])
    assert info.value.status == 429
    assert _count(a, CodeAttempt.machine_id) == 2  # keypad + prefix, one row each


def test_concurrent_malformed_codes_count_once_each(pair: tuple[Backend, Backend]) -> None:
    a, b = pair
    limit = a.settings.machine_max_failures
    calls = [(lambda be=(a if i % 2 else b): be.redeem_code("m2", "12")) for i in range(30)]
    results = _race(calls)
    assert _unexpected(results) == []
    statuses = Counter(r.status for r in results if isinstance(r, ApiError))
    assert statuses == {400: limit - 1, 429: 30 - (limit - 1)}


def _awaiting_order(backend: Backend) -> dict[str, Any]:
    order = backend.create_order("m1", "A1")
    assert order["state"] == "awaiting_payment"
    return order


def test_notification_and_query_race_pay_once(pair: tuple[Backend, Backend]) -> None:
    a, b = pair
    order = _awaiting_order(a)
    event = PaymentEvent(order["id"], TradeStatus.PAID, "tx-1", 350, "CNY", None)
    calls = [(lambda be=be, src=src: be.apply_payment("sandbox", event, src))
             for be, src in [(a, "notify"), (b, "query")] * 8]
    results = _race(calls)
    assert _unexpected(results) == []
    assert Counter(results) == {"paid": 1, "duplicate": 15}
    assert _count(a, Payment.id) == 1
    assert _count(a, Instruction.id, Instruction.order_id == order["id"]) == 1
    assert a.get_order(order["id"])["state"] == "paid"


def _dispensing_order(backend: Backend) -> str:
    order = _awaiting_order(backend)
    assert backend.sandbox is not None
    backend.sandbox.pay(order["id"])  # the ledger says SUCCESS; the notification ships it
    [instruction], _ = backend.take_instructions("m1")
    backend.ack("m1", instruction["id"])
    return str(order["id"])


def test_concurrent_results_apply_one_outcome(pair: tuple[Backend, Backend]) -> None:
    a, b = pair
    order_id = _dispensing_order(a)
    outcomes = ["delivered", "jammed"] * 8
    calls = [(lambda be=(a if i % 2 else b), o=o: be.report_result("m1", order_id, o))
             for i, o in enumerate(outcomes)]
    results = _race(calls)
    assert _unexpected(results) == []
    final = a.get_order(order_id)
    winner = final["outcome"]
    assert winner in ("delivered", "jammed")
    ok = [r for r in results if isinstance(r, dict)]
    conflicts = [r for r in results if isinstance(r, ApiError)]
    assert len(ok) == 8 and len(conflicts) == 8
    assert {c.code for c in conflicts} == {"outcome_conflict"}
    assert _count(a, Refund.id) == (1 if winner == "jammed" else 0)


def test_concurrent_failure_reports_refund_once(pair: tuple[Backend, Backend]) -> None:
    a, b = pair
    order_id = _dispensing_order(a)
    calls = [(lambda be=(a if i % 2 else b): be.report_result("m1", order_id, "jammed"))
             for i in range(16)]
    results = _race(calls)
    assert _unexpected(results) == []
    assert _count(a, Refund.id) == 1
    assert a.get_order(order_id)["state"] == "refunded"
    trade = a.sandbox.trade(order_id) if a.sandbox else None
    assert trade is not None and trade["status"] == "REFUND"


def test_concurrent_operator_refunds_refund_once(pair: tuple[Backend, Backend]) -> None:
    a, b = pair
    order = _awaiting_order(a)
    assert a.sandbox is not None
    a.sandbox.pay(order["id"])
    calls = [(lambda be=(a if i % 2 else b): be.operator_refund(order["id"], "race"))
             for i in range(12)]
    results = _race(calls)
    assert _unexpected(results) == []
    assert _count(a, Refund.id) == 1
    refusals = {r.code for r in results if isinstance(r, ApiError)}
    assert refusals <= {"not_refundable"}
    assert a.get_order(order["id"])["state"] == "refunded"


def test_concurrent_refund_attempts_pay_back_once(pair: tuple[Backend, Backend]) -> None:
    a, b = pair
    order_id = _dispensing_order(a)
    # Record the failure without running the refund inline: the poller's job then races.
    a.settings.refund_retry = 0.0
    with a.db.tx() as s:
        order = a._lock_order(s, order_id)
        assert order is not None
        order.outcome = "jammed"
        a._move(s, order, a_state("refunding"), "test")
        refund_id = a._new_refund(s, order, 350, "test")
    calls = [(lambda be=(a if i % 2 else b): be.process_refund(refund_id)) for i in range(12)]
    results = _race(calls)
    assert _unexpected(results) == []
    assert set(results) == {"succeeded"}
    assert a.get_order(order_id)["state"] == "refunded"
    with a.db.tx() as s:
        refund = s.get(Refund, refund_id)
        assert refund is not None and refund.status == "succeeded"


def a_state(name: str) -> Any:
    from vendhw.server.states import OrderState

    return OrderState(name)


def test_one_idempotency_key_runs_once(pair: tuple[Backend, Backend]) -> None:
    a, b = pair
    order_id = _dispensing_order(a)
    runs: list[int] = []

    def compute(backend: Backend) -> tuple[int, dict[str, Any]]:
        runs.append(1)
        return 200, backend.report_result("m1", order_id, "delivered")

    calls = [(lambda be=(a if i % 2 else b): be.idempotent("m1", "key-1", b"same", lambda:
                                                            compute(be)))
             for i in range(16)]
    results = _race(calls)
    assert _unexpected(results) == []
    assert len(runs) == 1
    answered = [r for r in results if isinstance(r, tuple)]
    assert answered and all(r[0] == 200 for r in answered)
    assert {r.code for r in results if isinstance(r, ApiError)} <= {"request_in_progress"}
    assert _count(a, IdempotentResponse.key) == 1


def test_a_replay_racing_its_original_runs_once(pair: tuple[Backend, Backend]) -> None:
    """12 copies of one signed request all pass the signature check before any of them
    commits; the nonce, spent in each one's first write transaction, lets one through."""
    import contextvars

    from vendhw.client import signing
    from vendhw.server.db import PENDING_NONCE

    a, b = pair
    body = b'{"slot":"A1"}'
    headers = signing.signed_headers(CATALOGUE["machines"][0]["secret"], "m1", "POST",
                                     "/machine/v1/orders", body, a.clock.now())
    verified = [(be, be.verify_request(headers, "POST", "/machine/v1/orders", body))
                for be in (a, b) * 6]

    def call(be: Backend, pending: Any) -> Any:
        def run() -> Any:
            PENDING_NONCE.set(pending)
            return be.create_order("m1", "A1")
        return lambda: contextvars.copy_context().run(run)

    from vendhw.server.db import ReplayedNonce

    results = _race([call(be, pending) for be, pending in verified])
    orders = [r for r in results if isinstance(r, dict)]
    assert len(orders) == 1, results
    # refused at the nonce's insert (racing), or by the check before the provider call
    # (the original had committed): never run
    assert all(isinstance(r, ReplayedNonce) or (isinstance(r, ApiError)
                                                and r.code == "replayed_nonce")
               for r in results if not isinstance(r, dict)), results
    assert _count(a, Order.id) == 1


def test_one_create_order_key_makes_one_order(pair: tuple[Backend, Backend]) -> None:
    """create order claims its key in the order's own transaction (no "in progress" row
    is ever committed): racing copies of one keyed request still make one order, and every
    answer is that order."""
    a, b = pair
    calls = [(lambda be=(a if i % 2 else b): be.idempotent(
        "m1", "order-key", b"same", lambda: (201, be.create_order("m1", "A1")), together=True))
        for i in range(12)]
    results = _race(calls)
    assert _unexpected(results) == []
    answered = [r for r in results if isinstance(r, tuple)]
    assert answered and {r[0] for r in answered} == {201}
    assert len({r[1]["id"] for r in answered}) == 1
    assert {r.code for r in results if isinstance(r, ApiError)} <= {"request_in_progress"}
    assert _count(a, Order.id) == 1
    assert _count(a, IdempotentResponse.key, IdempotentResponse.status_code == 201) == 1
