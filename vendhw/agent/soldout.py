"""Slots the board found empty: shown *Sold out* on the screen until an operator clears them.

When a vend ends ``empty`` (the board says the slot has nothing left), the agent records the
slot here, in ``<data_dir>/sold-out.db`` (SQLite: the running agent and ``vendhw machine
sold-out --clear`` may write at the same time), so a restart keeps it. The screen greys the
tile and the agent refuses new sales of the slot; ``vendhw machine sold-out --config
machine.toml --clear 3`` (or ``--all``) after a refill makes it sellable again.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from vendhw.errors import JournalError

FILE = "sold-out.db"


class SoldOut:
    """The set of slots marked sold out by the board, persisted."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=10,
                                       isolation_level=None)
            self._db.execute("CREATE TABLE IF NOT EXISTS sold_out (slot TEXT PRIMARY KEY, "
                             "since REAL NOT NULL, vend_id TEXT NOT NULL DEFAULT '')")
        except sqlite3.Error as exc:
            raise JournalError(f"{self.path}: cannot open the sold-out list: {exc}") from exc

    def mark(self, slot: str, vend_id: str = "") -> None:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO sold_out (slot, since, vend_id) "
                             "VALUES (?, ?, ?)", (str(slot), time.time(), vend_id))

    def slots(self) -> set[str]:
        with self._lock:
            return {row[0] for row in self._db.execute("SELECT slot FROM sold_out")}

    def rows(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{"slot": slot, "since": since, "vend_id": vend_id}
                    for slot, since, vend_id in self._db.execute(
                        "SELECT slot, since, vend_id FROM sold_out ORDER BY slot")]

    def clear(self, slots: list[str] | None = None) -> list[str]:
        """Clear ``slots`` (all when None); returns the slots that were marked."""
        with self._lock:
            marked = [row[0] for row in self._db.execute(
                "SELECT slot FROM sold_out ORDER BY slot")]
            gone = marked if slots is None else [s for s in marked if s in set(slots)]
            self._db.executemany("DELETE FROM sold_out WHERE slot = ?", [(s,) for s in gone])
            return gone

    def close(self) -> None:
        with self._lock:
            self._db.close()


__all__ = ["FILE", "SoldOut"]
