"""Durable commits per sale: the figure that bounds SQLite's sales per second.

A commit is durable (an fsync of the WAL on SQLite, a WAL flush on PostgreSQL) only when its
transaction wrote something; read-only transactions cost no sync. The counter flags a
connection as dirty on any INSERT/UPDATE/DELETE (or ``pg_notify``) and counts the commits of
dirty connections. docs/backend-fleet.md, "Figures", explains the budget.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from vendhw.testing.backend import InProcessServer

MAX_DURABLE_COMMITS_PER_SALE = 8
"""create order 2 (the sandbox's ledger, which also spends the request's nonce; then the
order with its QR, Idempotency-Key and answer), pay 2 (the sandbox's ledger, then the
payment), long-poll 1, ack 1, result 2 (its key with the nonce, then the outcome with its
answer). Was 16 before issue #17."""

WRITES = ("insert", "update", "delete", "replace")


class CommitCounter:
    """Counts durable (writing) commits on an engine while attached."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.durable = 0
        self.total = 0
        self._dirty: set[int] = set()

    def _execute(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        head = statement.lstrip().lower()
        if head.startswith(WRITES) or "pg_notify" in head:
            self._dirty.add(id(conn))

    def _commit(self, conn: Any) -> None:
        self.total += 1
        if id(conn) in self._dirty:
            self.durable += 1
        self._dirty.discard(id(conn))

    def _rollback(self, conn: Any) -> None:
        self._dirty.discard(id(conn))

    def __enter__(self) -> CommitCounter:
        event.listen(self.engine, "before_cursor_execute", self._execute)
        event.listen(self.engine, "commit", self._commit)
        event.listen(self.engine, "rollback", self._rollback)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._execute)
        event.remove(self.engine, "commit", self._commit)
        event.remove(self.engine, "rollback", self._rollback)


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[InProcessServer]:
    server = InProcessServer(tmp_path / "b.db")
    server.add_machine("m1", slots={"A1": ("cola", 350)})
    yield server
    server.close()


def _sale(server: InProcessServer) -> str:
    with server.client("m1") as client:
        order = client.create_order("A1")
        assert server.pay(order.id).json()["status"] == "paid"
        [ship] = client.next_instructions(wait=0)
        assert client.ack(ship.id, ship.order_id)["order_state"] == "dispensing"
        receipt = client.report_result(order.id, "delivered", instruction_id=ship.id)
        assert receipt.order is not None and receipt.order.state == "delivered"
        return order.id


def test_one_sale_costs_at_most_the_budgeted_durable_commits(srv: InProcessServer) -> None:
    _sale(srv)  # warm: caches (secrets, last seen) as in a running server
    with CommitCounter(srv.backend.db.engine) as counter:
        _sale(srv)
    assert 0 < counter.durable <= MAX_DURABLE_COMMITS_PER_SALE, (counter.durable,
                                                                   counter.total)


def test_a_keyed_redeem_costs_two_durable_commits(srv: InProcessServer) -> None:
    """The key's claim (with the request's nonce), then the reservation with its answer: the
    answer no longer needs a transaction of its own (was 3)."""
    _sale(srv)  # warm
    codes = srv.operator("POST", "/operator/v1/codes",
                         json={"product": "cola", "count": 1, "machine": "m1"}).json()["codes"]
    with srv.client("m1") as client, CommitCounter(srv.backend.db.engine) as counter:
        redemption = client.redeem_code(codes[0]["code"])
    assert redemption.order.state == "paid"
    assert counter.durable == 2, (counter.durable, counter.total)
