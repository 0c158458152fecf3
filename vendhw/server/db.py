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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, create_engine, event, insert, text, update
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from vendhw.errors import ConfigurationError
from vendhw.server.models import Base, Machine, Nonce

BUSY_TIMEOUT_MS = 10_000
BASELINE_REVISION = "0001"
"""The migration equal to the schema vendhw created before it had migrations."""
MIGRATION_LOCK = 0x76656E64  # "vend": advisory lock key held while migrating


class ReplayedNonce(Exception):
    """The request's nonce was already spent (by a replay that committed first)."""


@dataclass
class PendingNonce:
    """A verified request's nonce, spent in the request's first write transaction.

    A signed request used to commit its nonce in a transaction of its own (one durable commit
    per request); now :meth:`Database.tx` inserts it as the first statement of the
    request's first write transaction, so it costs no commit of its own. Whatever happens,
    the guard makes sure it is committed before any answer leaves (a request that wrote
    nothing, or whose transactions all rolled back, spends it in a transaction of its own):
    a nonce can never be replayed.
    """

    machine_id: str
    nonce: str
    expires_at: float
    last_seen: float | None = None
    """Also record the machine as seen at this time (at most every few seconds)."""
    stored: bool = False


PENDING_NONCE: ContextVar[PendingNonce | None] = ContextVar("vendhw_pending_nonce",
                                                           default=None)
"""The current request's nonce, set by the guard (the request's threads see it: Starlette
copies the context into its thread pool)."""


def spend_nonce(session: Session, pending: PendingNonce) -> None:
    """Insert the nonce (and the machine's last-seen time) in ``session``'s transaction."""
    connection = session.connection()  # Core statements: no ORM bookkeeping
    try:
        connection.execute(_INSERT_NONCE, {"machine_id": pending.machine_id,
                                           "nonce": pending.nonce,
                                           "expires_at": pending.expires_at})
    except IntegrityError:
        raise ReplayedNonce(pending.nonce) from None
    if pending.last_seen is not None:
        connection.execute(_SEEN, {"machine": pending.machine_id, "at": pending.last_seen})


_INSERT_NONCE = insert(Nonce)
_SEEN = update(Machine).where(Machine.id == bindparam("machine")).values(
    last_seen=bindparam("at"))


ON_COMMIT = "vendhw_on_commit"
BEFORE_COMMIT = "vendhw_before_commit"


def before_commit(session: Session, callback: Callable[[Session], None]) -> None:
    """Run ``callback(session)`` as the last step of the transaction of ``session`` (a
    :meth:`Database.tx` whose body finished without error), before it commits."""
    session.info.setdefault(BEFORE_COMMIT, []).append(callback)


def _before_commit(session: Session) -> None:
    for callback in session.info.pop(BEFORE_COMMIT, ()):
        callback(session)


def on_commit(session: Session, callback: Callable[[], None]) -> None:
    """Run ``callback`` once the transaction of ``session`` (a :meth:`Database.tx`) has
    committed; never if it rolls back."""
    session.info.setdefault(ON_COMMIT, []).append(callback)


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
        self._own: sessionmaker[Session] | None = None
        """The sessions of :meth:`own_tx` (not SQLite), made on first use."""

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

        The first one of a signed request also spends the request's nonce
        (:class:`PendingNonce`): it is committed with the request's own writes, or not at
        all (then the guard commits it alone before answering).
        """
        if getattr(self._local, "active", False):
            raise RuntimeError("nested Database.tx(): call providers between transactions")
        self._local.active = True
        pending = PENDING_NONCE.get()
        if pending is not None and pending.stored:
            pending = None
        try:
            if self._lock is not None:
                with self._lock, self._sessions.begin() as session:
                    if pending is not None:
                        spend_nonce(session, pending)
                    yield session
                    _before_commit(session)
            else:
                with self._sessions.begin() as session:
                    if pending is not None:
                        spend_nonce(session, pending)
                    yield session
                    _before_commit(session)
            if pending is not None:
                pending.stored = True
            for callback in session.info.get(ON_COMMIT, ()):
                callback()
        finally:
            self._local.active = False

    @contextmanager
    def own_tx(self) -> Iterator[Session]:
        """A short write transaction that never waits for a pooled connection: the
        heartbeat's. Elsewhere than SQLite it runs on a connection of its own, so a pool
        exhausted by request threads (all waiting on one order's lock, say) cannot delay
        it; on SQLite it is :meth:`tx` (one writer at a time anyway: it takes its turn in
        the same fair queue, between two request transactions)."""
        if self.is_sqlite:
            with self.tx() as session:
                yield session
            return
        if self._own is None:
            engine = create_engine(self.url, pool_size=1, max_overflow=0, pool_pre_ping=True)
            self._own = sessionmaker(engine, expire_on_commit=False)
        with self._own.begin() as session:
            yield session

    def spend_pending_nonce(self) -> None:
        """Commit the current request's nonce now unless a transaction of it already did
        (raises :class:`ReplayedNonce` when another request spent it first)."""
        pending = PENDING_NONCE.get()
        if pending is not None and not pending.stored:
            with self.tx():
                pass

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
        if self._own is not None:
            bind = self._own.kw["bind"]
            bind.dispose()


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
        # Straight to the driver: exec_driver_sql's execution context cost ~2 % of the
        # server's CPU per sale for a statement that returns nothing.
        driver = connection.connection.driver_connection
        if connection.get_execution_options().get("vendhw_read_only"):
            driver.execute("BEGIN")
        else:
            driver.execute("BEGIN IMMEDIATE")


__all__ = ["PENDING_NONCE", "Database", "PendingNonce", "ReplayedNonce", "before_commit",
           "on_commit", "spend_nonce"]
