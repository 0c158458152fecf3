"""Migration 0002 on a database at 0001 with rows in it (SQLite rebuilds the table in batch
mode): the refunds survive, an order may then have several, a request key is unique per order."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError

import vendhw.server.db as dbmod
from vendhw.server.db import Database

REFUND = ("INSERT INTO refunds (order_id, out_refund_no, provider, amount, total, currency, "
          "reason, status, attempts, next_attempt_at, last_error, provider_refund_id, "
          "created_at{extra}) VALUES ('o1', :no, 'sandbox', 100, 350, 'CNY', 'r', 'succeeded', "
          "1, 0, '', '', 0{values})")


def _upgrade(url: str, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(Path(dbmod.__file__).parent / "migrations"))
    engine = create_engine(url)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
    engine.dispose()


def test_0002_keeps_refunds_and_allows_several_per_order(db_url: str) -> None:
    _upgrade(db_url, "0001")
    engine = create_engine(db_url)
    with engine.begin() as c:
        c.execute(text("INSERT INTO machines (id, secret, name, currency, created_at) "
                       "VALUES ('m1', 's', '', 'CNY', 0)"))
        c.execute(text("INSERT INTO orders (id, machine_id, slot, product_id, product_name, "
                       "amount, currency, kind, provider, state, created_at, updated_at, "
                       "expires_at, query_count) VALUES ('o1', 'm1', 'A1', 'cola', '', 350, "
                       "'CNY', 'qr', 'sandbox', 'delivered', 0, 0, 0, 0)"))
        c.execute(text(REFUND.format(extra="", values="")), {"no": "Ro1"})
        with pytest.raises(IntegrityError):  # 0001: one refund per order
            with c.begin_nested():
                c.execute(text(REFUND.format(extra="", values="")), {"no": "Ro1_1"})
    engine.dispose()
    database = Database(db_url)
    assert database.migrate()["to"] is not None
    database.dispose()
    engine = create_engine(db_url)
    with engine.begin() as c:
        assert c.execute(text("SELECT out_refund_no, operator FROM refunds")).all() == [
            ("Ro1", "")]
        with_key = REFUND.format(extra=", operator, request_key", values=", 'alice', 'k1'")
        c.execute(text(with_key), {"no": "Ro1_1"})
        with pytest.raises(IntegrityError):  # the same request key twice on one order
            with c.begin_nested():
                c.execute(text(with_key), {"no": "Ro1_2"})
        assert c.execute(text("SELECT count(*) FROM refunds WHERE order_id = 'o1'")
                         ).scalar() == 2
    engine.dispose()
