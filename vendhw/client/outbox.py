"""The machine's store-and-forward queue for reports the backend must receive.

A dispense report is written here (SQLite, WAL, ``synchronous=FULL``) *before* it is sent, and
removed only when the backend has answered. While the link is down reports pile up in order;
when it returns they go out oldest first, each with the idempotency key it was queued with, so
a report that did arrive but whose answer was lost is counted once. A report the backend
refuses for good (unknown order, conflicting outcome) is set aside as *dead* instead of
blocking the queue behind it.

The tables are prefixed ``backend_`` so the outbox can live in the machine's vend-journal file.
The same file also remembers which instructions the machine acknowledged, so a redelivered
instruction is recognised after a restart.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vendhw.client.core import Call
from vendhw.store import DurableStore

_SCHEMA = """
CREATE TABLE IF NOT EXISTS backend_outbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    key         TEXT NOT NULL UNIQUE,
    method      TEXT NOT NULL,
    path        TEXT NOT NULL,
    body        TEXT NOT NULL,
    state       TEXT NOT NULL DEFAULT 'queued',
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT NOT NULL DEFAULT '',
    created_at  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS backend_acked (
    instruction_id TEXT PRIMARY KEY,
    order_id       TEXT NOT NULL DEFAULT '',
    acked_at       REAL NOT NULL
);
"""


@dataclass(frozen=True)
class OutboxItem:
    """One queued request, replayed exactly as it was queued (same key, same body)."""

    seq: int
    key: str
    method: str
    path: str
    body: dict[str, Any]
    state: str
    attempts: int
    last_error: str
    created_at: float

    def call(self) -> Call:
        return Call(self.method, self.path, self.body, idempotency_key=self.key)


class Outbox:
    """A durable FIFO of must-deliver requests (``path`` None keeps it in memory)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self._store = DurableStore(path, name="outbox", schema=_SCHEMA, folder="create")
        self.path = self._store.path

    def enqueue(self, call: Call) -> int:
        """Queue ``call`` (its key must be set); queuing the same key again is a no-op."""
        if not call.idempotency_key:
            raise ValueError("only requests with an idempotency key can be queued")
        with self._store.writing(f"the request {call.idempotency_key}") as db:
            db.execute(
                "INSERT OR IGNORE INTO backend_outbox (key, method, path, body, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (call.idempotency_key, call.method, call.target,
                 json.dumps(call.body or {}), time.time()))
            row = db.execute("SELECT seq FROM backend_outbox WHERE key = ?",
                             (call.idempotency_key,)).fetchone()
        return int(row[0])

    def _items(self, where: str, args: tuple[Any, ...] = ()) -> list[OutboxItem]:
        rows = self._store.rows(
            "SELECT seq, key, method, path, body, state, attempts, last_error, created_at "
            f"FROM backend_outbox WHERE {where} ORDER BY seq", args)
        return [OutboxItem(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6], r[7], r[8])
                for r in rows]

    def pending(self) -> list[OutboxItem]:
        """Queued requests, oldest first: the order they must reach the backend in."""
        return self._items("state = 'queued'")

    def dead_letters(self) -> list[OutboxItem]:
        """Requests the backend refused for good (for a person to look at)."""
        return self._items("state = 'dead'")

    def state(self, key: str) -> str | None:
        """``queued``, ``dead``, or None once delivered (or never queued)."""
        row = self._store.row("SELECT state FROM backend_outbox WHERE key = ?", (key,))
        return None if row is None else str(row[0])

    def last_error(self, key: str) -> str:
        row = self._store.row("SELECT last_error FROM backend_outbox WHERE key = ?", (key,))
        return "" if row is None else str(row[0])

    def delivered(self, seq: int) -> None:
        self._store.write("DELETE FROM backend_outbox WHERE seq = ?", (seq,),
                          what=f"the delivery of request {seq}")

    def failed(self, seq: int, error: str) -> None:
        """An attempt that may succeed later: count it and keep the request queued."""
        self._store.write("UPDATE backend_outbox SET attempts = attempts + 1, "
                          "last_error = ? WHERE seq = ?", (error[:500], seq),
                          what=f"an attempt of request {seq}")

    def dead(self, seq: int, error: str) -> None:
        self._store.write("UPDATE backend_outbox SET state = 'dead', attempts = attempts + 1,"
                          " last_error = ? WHERE seq = ?", (error[:500], seq),
                          what=f"the refusal of request {seq}")

    def mark_acked(self, instruction_id: str, order_id: str = "") -> None:
        """Remember that this machine took the instruction (before telling the backend)."""
        self._store.write("INSERT OR IGNORE INTO backend_acked VALUES (?, ?, ?)",
                          (instruction_id, order_id, time.time()),
                          what=f"the ack of {instruction_id}")

    def is_acked(self, instruction_id: str) -> bool:
        row = self._store.row("SELECT 1 FROM backend_acked WHERE instruction_id = ?",
                              (instruction_id,))
        return row is not None

    def close(self) -> None:
        self._store.close()


__all__ = ["Outbox", "OutboxItem"]
