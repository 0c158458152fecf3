"""Slots the board found empty: shown *Sold out* on the screen until an operator clears them.

When a vend ends ``empty`` (the board says the slot has nothing left), the agent records the
slot here, in ``<data_dir>/sold-out.db`` (SQLite: the running agent and ``vendhw machine
sold-out --clear`` may write at the same time), so a restart keeps it. The screen greys the
tile and the agent refuses new sales of the slot; ``vendhw machine sold-out --config
machine.toml --clear 3`` (or ``--all``) after a refill makes it sellable again.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from vendhw.store import DurableStore

FILE = "sold-out.db"


_SCHEMA = """
CREATE TABLE IF NOT EXISTS sold_out (slot TEXT PRIMARY KEY, since REAL NOT NULL,
    vend_id TEXT NOT NULL DEFAULT '');
"""


class SoldOut:
    """The set of slots marked sold out by the board, persisted."""

    def __init__(self, path: str | Path) -> None:
        self._store = DurableStore(path, name="sold-out list", schema=_SCHEMA)
        self.path = Path(self._store.path)

    def mark(self, slot: str, vend_id: str = "") -> None:
        self._store.write("INSERT OR IGNORE INTO sold_out (slot, since, vend_id) "
                          "VALUES (?, ?, ?)", (str(slot), time.time(), vend_id),
                          what=f"slot {slot} as sold out")

    def slots(self) -> set[str]:
        return {row[0] for row in self._store.rows("SELECT slot FROM sold_out")}

    def rows(self) -> list[dict[str, Any]]:
        return [{"slot": slot, "since": since, "vend_id": vend_id}
                for slot, since, vend_id in self._store.rows(
                    "SELECT slot, since, vend_id FROM sold_out ORDER BY slot")]

    def clear(self, slots: list[str] | None = None) -> list[str]:
        """Clear ``slots`` (all when None); returns the slots that were marked."""
        with self._store.transaction("the cleared slots") as db:
            marked = [row[0] for row in db.execute("SELECT slot FROM sold_out ORDER BY slot")]
            gone = marked if slots is None else [s for s in marked if s in set(slots)]
            db.executemany("DELETE FROM sold_out WHERE slot = ?", [(s,) for s in gone])
        return gone

    def close(self) -> None:
        self._store.close()


__all__ = ["FILE", "SoldOut"]
