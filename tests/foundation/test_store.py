"""Every durable store on the controller opens the same way (``vendhw.store``): WAL,
``synchronous=FULL``, a busy timeout, and failures as one-line vendhw errors."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vendhw.agent.card import CardJournal
from vendhw.agent.shipper import Shipper
from vendhw.agent.soldout import SoldOut
from vendhw.client.outbox import Outbox
from vendhw.dex.collect import ReadLog
from vendhw.errors import ConfigurationError, JournalError
from vendhw.machine.cash import CashJournal
from vendhw.machine.journal import VendJournal
from vendhw.store import BUSY_TIMEOUT_MS, DurableStore

STORES: dict[str, Callable[[Path], Any]] = {
    "vend journal": VendJournal,
    "cash journal": CashJournal,
    "ship journal": lambda path: Shipper(None, None, path),
    "card journal": CardJournal,
    "outbox": Outbox,
    "DEX read log": ReadLog,
    "sold-out list": SoldOut,
}


@pytest.mark.parametrize("name", sorted(STORES))
def test_every_store_is_durable(tmp_path: Path, name: str) -> None:
    store = STORES[name](tmp_path / "x.db")
    try:
        db = store._store.db
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert db.execute("PRAGMA busy_timeout").fetchone()[0] == BUSY_TIMEOUT_MS
        assert store._store.name == name
    finally:
        store.close()


@pytest.mark.parametrize("name", sorted(set(STORES) - {"outbox"}))
def test_a_missing_folder_is_one_line(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigurationError, match=f"^{name} folder .* does not exist$"):
        STORES[name](tmp_path / "nowhere" / "x.db")


def test_the_outbox_creates_its_folder(tmp_path: Path) -> None:
    Outbox(tmp_path / "new" / "outbox.db").close()
    assert (tmp_path / "new" / "outbox.db").is_file()


def test_a_file_that_is_no_database_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "x.db"
    bad.write_bytes(b"this is not SQLite at all, " * 10)
    with pytest.raises(ConfigurationError, match=r"^cannot open cash journal .*x.db: "):
        CashJournal(bad)


def test_a_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    store = DurableStore(tmp_path / "t.db", name="test store",
                         schema="CREATE TABLE t (k TEXT PRIMARY KEY);")
    store.write("INSERT INTO t VALUES ('a')")
    with pytest.raises(JournalError, match=r"^test store .* cannot record two rows \(UNIQUE"):
        with store.transaction("two rows") as db:
            db.execute("INSERT INTO t VALUES ('b')")
            db.execute("INSERT INTO t VALUES ('a')")  # fails: 'b' must go too
    assert store.rows("SELECT k FROM t") == [("a",)]
    with pytest.raises(KeyError):  # not an SQLite error: rolled back and passed on as is
        with store.transaction("anything") as db:
            db.execute("INSERT INTO t VALUES ('c')")
            raise KeyError("c")
    assert store.rows("SELECT k FROM t") == [("a",)] and not store.db.in_transaction
    with pytest.raises(JournalError, match=r"cannot be written .*: nothing was kept$"):
        with store.transaction("x", failed="nothing was kept") as db:
            db.execute("INSERT INTO t VALUES ('a')")
    store.close()


class _FullDisk:
    """A connection whose writes fail as SQLite does on a full disk."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def execute(self, sql: str, args: Any = ()) -> Any:
        if sql.lstrip().split(None, 1)[0].upper() in ("INSERT", "UPDATE", "DELETE"):
            raise sqlite3.OperationalError("database or disk is full")
        return self.db.execute(sql, args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


def test_card_journal_and_outbox_writes_fail_as_journal_errors(tmp_path: Path) -> None:
    """Before the shared helper these two let a raw sqlite3 error through."""
    cards = CardJournal(tmp_path / "cards.db")
    outbox = Outbox(tmp_path / "outbox.db")
    try:
        cards._store.db = _FullDisk(cards._store.db)  # type: ignore[assignment]
        with pytest.raises(JournalError, match=r"^card journal .* cannot record the approval "
                                               r"of r1 .*disk is full"):
            cards.approved("r1", "1", 500)
        outbox._store.db = _FullDisk(outbox._store.db)  # type: ignore[assignment]
        with pytest.raises(JournalError, match=r"^outbox .* cannot record the ack of i1"):
            outbox.mark_acked("i1")
    finally:
        cards._store.db = cards._store.db.db  # type: ignore[attr-defined]
        outbox._store.db = outbox._store.db.db  # type: ignore[attr-defined]
        cards.close()
        outbox.close()
