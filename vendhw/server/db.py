"""The database handle: one engine, and transactions that never interleave badly.

SQLite (the embedded default) gets WAL, ``synchronous=FULL`` (a committed payment survives a
power cut), a busy timeout, and ``BEGIN IMMEDIATE`` for every transaction, so two writers
never deadlock upgrading a read lock; inside one process a lock queues transactions fairly
instead of leaving them to SQLite's sleeping busy handler (first come, first served: see
:class:`FairLock`). Other databases (PostgreSQL for
fleets) use row locks (``SELECT ... FOR UPDATE``) taken by the service.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

from vendhw.errors import ConfigurationError
from vendhw.server.models import Base

BUSY_TIMEOUT_MS = 10_000
BASELINE_REVISION = "0001"
"""The migration equal to the schema vendhw created before it had migrations."""
MIGRATION_LOCK = 0x76656E64  # "vend": advisory lock key held while migrating


class FairLock:
    """A FIFO lock: a releasing thread hands the lock to the longest waiter.

    ``threading.Lock`` lets the thread that just released it take it straight back, so a
    loop of short transactions (an operator batch in chunks) could starve the machines'
    requests queued behind it; with this lock each waiter gets its turn between two chunks.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._held = False
        self._waiters: deque[threading.Lock] = deque()

    def acquire(self) -> None:
        with self._mutex:
            if not self._held and not self._waiters:
                self._held = True
                return
            gate = threading.Lock()
            gate.acquire()
            self._waiters.append(gate)
        gate.acquire()  # released by the owner's release(): the lock is ours, still held

    def release(self) -> None:
        with self._mutex:
            if self._waiters:
                self._waiters.popleft().release()  # hand over: _held stays True
            else:
                self._held = False

    def __enter__(self) -> FairLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Database:
    """An engine plus :meth:`tx`, the only way the backend touches its tables."""

    def __init__(self, url: str) -> None:
        try:
            parsed = make_url(url)
        except ArgumentError as exc:
            raise ConfigurationError(f"not a database URL: {url!r} ({exc})") from exc
        self.url = url
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            database = parsed.database or ""
            if database and database != ":memory:" and not database.startswith("file:"):
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000}
            if not database or database == ":memory:":
                from sqlalchemy.pool import StaticPool

                kwargs["poolclass"] = StaticPool
        else:
            # One connection per request thread (Starlette runs sync endpoints on 40), checked
            # before use so a restarted PostgreSQL costs no failed request.
            kwargs.update(pool_size=10, max_overflow=30, pool_pre_ping=True)
        try:
            self.engine: Engine = create_engine(url, **kwargs)
        except Exception as exc:  # missing driver, bad options: say which URL
            raise ConfigurationError(f"cannot open database {url!r}: {exc}") from exc
        if self.is_sqlite:
            _tune_sqlite(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._readers = sessionmaker(self.engine.execution_options(vendhw_read_only=True),
                                     expire_on_commit=False)
        self._lock = FairLock() if self.is_sqlite else None
        self._one_connection = kwargs.get("poolclass") is not None
        """In-memory SQLite: every thread shares one connection, so reads queue too."""
        self._local = threading.local()

    def create_schema(self) -> None:
        """Bring the schema to the newest migration (see :meth:`migrate`)."""
        self.migrate()

    def migrate(self) -> dict[str, str | None]:
        """Apply the Alembic migrations; returns ``{"from": rev, "to": rev}``.

        * an empty database gets the models' tables at once (``create_all``) and is stamped
          with the newest revision (Alembic's recipe for new databases);
        * a database made before migrations existed (tables, no ``alembic_version``) is
          stamped ``0001`` (that schema) and upgraded;
        * otherwise ``upgrade head``.

        Several processes starting together are serialised: a PostgreSQL advisory lock (on
        SQLite the write lock of ``BEGIN IMMEDIATE``).
        """
        from alembic import command
        from alembic.config import Config
        from alembic.runtime.migration import MigrationContext
        from sqlalchemy import inspect

        config = Config()
        config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        with self.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                                   {"key": MIGRATION_LOCK})
            config.attributes["connection"] = connection
            before = MigrationContext.configure(connection).get_current_revision()
            tables = set(inspect(connection).get_table_names())
            if before is None and not tables - {"alembic_version"}:
                Base.metadata.create_all(connection)
                command.stamp(config, "head")
            else:
                if before is None:
                    command.stamp(config, BASELINE_REVISION)
                command.upgrade(config, "head")
            after = MigrationContext.configure(connection).get_current_revision()
        return {"from": before, "to": after}

    @contextmanager
    def tx(self) -> Iterator[Session]:
        """A session inside one transaction: commit on success, roll back on any error.

        Transactions never nest: a provider call (network) must happen between two of them,
        never inside one, so a slow provider cannot hold the database.
        """
        if getattr(self._local, "active", False):
            raise RuntimeError("nested Database.tx(): call providers between transactions")
        self._local.active = True
        try:
            if self._lock is not None:
                with self._lock, self._sessions.begin() as session:
                    yield session
            else:
                with self._sessions.begin() as session:
                    yield session
        finally:
            self._local.active = False

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only transaction: on SQLite a deferred ``BEGIN`` outside the writers' queue
        (WAL readers see the last commit and never wait for a writer's fsync); elsewhere the
        same as :meth:`tx`. Writing in it is a bug (SQLite would take the write lock late)."""
        if self._one_connection:
            with self.tx() as session:
                yield session
            return
        if getattr(self._local, "active", False):
            raise RuntimeError("nested Database transaction")
        self._local.active = True
        try:
            with self._readers.begin() as session:
                yield session
        finally:
            self._local.active = False

    def ping(self) -> bool:
        """True when a trivial query answers (the readiness check)."""
        with self.tx() as session:
            return session.execute(text("SELECT 1")).scalar() == 1

    def dispose(self) -> None:
        """Close pooled connections (end of the app, end of a test)."""
        self.engine.dispose()


def _tune_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Python's sqlite3 would issue its own BEGIN; take over so it can be IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        if connection.get_execution_options().get("vendhw_read_only"):
            connection.exec_driver_sql("BEGIN")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")


__all__ = ["Database"]
