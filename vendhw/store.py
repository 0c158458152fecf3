"""One way to open a durable SQLite store (journals, the outbox, the DEX read log).

Why one helper: every store on the controller promises the same thing, that a row committed
before a call returns survives a power cut, and each used to open SQLite its own way (one
forgot WAL, one the busy timeout, one turned a bad path into a traceback). Here:

- autocommit (``isolation_level=None``): each statement is its own transaction unless a
  :meth:`DurableStore.transaction` groups several, so nothing waits uncommitted in Python;
- ``journal_mode=WAL``: readers (``vendhw machine status``) never block the writer;
- ``synchronous=FULL``: the commit is on the disk before the call returns;
- a busy timeout: a second process (a CLI run next to the agent) waits for the lock instead
  of failing;
- one lock for the threads of this process;
- errors as :mod:`vendhw.errors`: a file that cannot be opened is a ``ConfigurationError``,
  a write that fails (full disk, read-only file) is a ``JournalError`` after a rollback, so
  nothing is half-written.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from vendhw.errors import ConfigurationError, JournalError

BUSY_TIMEOUT_MS = 10_000
"""How long a write waits for another process's lock before it fails."""

MEMORY = ":memory:"


class DurableStore:
    """An SQLite database opened for durability, with its lock and its error mapping.

    :param path: the file; ``None`` or ``":memory:"`` keeps it in memory (no crash safety:
        for one-off CLI runs and tests only).
    :param name: what the store is called in errors (``"vend journal"``).
    :param schema: SQL run once at open (``CREATE TABLE IF NOT EXISTS ...``).
    :param folder: ``"exists"``: a missing parent folder is a ``ConfigurationError``;
        ``"create"``: it is created.
    """

    def __init__(self, path: str | Path | None, *, name: str, schema: str = "",
                 folder: Literal["exists", "create"] = "exists") -> None:
        self.name = name
        self.path = MEMORY if path is None or str(path) == MEMORY else str(
            Path(path).expanduser())
        self.lock = threading.RLock()
        if self.path != MEMORY:
            parent = Path(self.path).resolve().parent
            if folder == "create":
                try:
                    parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise ConfigurationError(f"cannot create the folder of {name} "
                                             f"{self.path}: {exc.strerror}") from None
            elif not parent.is_dir():
                raise ConfigurationError(f"{name} folder {parent} does not exist")
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self.db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            if schema:
                self.db.executescript(schema)
        except sqlite3.DatabaseError as exc:
            raise ConfigurationError(f"cannot open {name} {self.path}: {exc}") from None

    def _failed(self, what: str, exc: sqlite3.DatabaseError) -> JournalError:
        return JournalError(f"{self.name} {self.path} cannot record {what} ({exc}): "
                            "free disk space or make it writable")

    def _rollback(self) -> None:
        try:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
        except sqlite3.DatabaseError:
            pass  # the connection is gone or BEGIN itself failed: nothing to undo

    # -- reading -----------------------------------------------------------------------------

    def rows(self, sql: str, args: tuple[Any, ...] | list[Any] = ()) -> list[tuple[Any, ...]]:
        with self.lock:
            return self.db.execute(sql, args).fetchall()

    def row(self, sql: str, args: tuple[Any, ...] | list[Any] = ()) -> tuple[Any, ...] | None:
        with self.lock:
            found: tuple[Any, ...] | None = self.db.execute(sql, args).fetchone()
            return found

    # -- writing -----------------------------------------------------------------------------

    @contextmanager
    def writing(self, what: str) -> Iterator[sqlite3.Connection]:
        """Hold the lock for statements that commit one by one; a failure is a JournalError
        naming ``what`` (an open transaction is rolled back first)."""
        with self.lock:
            try:
                yield self.db
            except sqlite3.DatabaseError as exc:
                self._rollback()
                raise self._failed(what, exc) from exc

    @contextmanager
    def transaction(self, what: str, *, failed: str | None = None
                    ) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` ... ``COMMIT``: all of it is on the disk, or none of it.

        Any exception rolls back; an SQLite error becomes a JournalError (``failed`` replaces
        the default text after the store's name and path, to say what was *not* done)."""
        with self.lock:
            try:
                self.db.execute("BEGIN IMMEDIATE")
                yield self.db
                self.db.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                self._rollback()
                if failed is None:
                    raise self._failed(what, exc) from exc
                raise JournalError(f"{self.name} {self.path} cannot be written ({exc}): "
                                   f"{failed}") from exc
            except BaseException:
                self._rollback()
                raise

    def write(self, sql: str, args: tuple[Any, ...] | list[Any] = (), *, what: str = "a row"
              ) -> int:
        """One statement, committed when this returns; the number of rows it changed."""
        with self.writing(what) as db:
            return db.execute(sql, args).rowcount

    def close(self) -> None:
        with self.lock:
            self.db.close()


__all__ = ["BUSY_TIMEOUT_MS", "DurableStore"]
