"""Long-poll across processes on PostgreSQL: ``NOTIFY vendhw_push, '<machine id>'``.

The transaction that creates a ship instruction also runs ``pg_notify('vendhw_push',
machine_id)``; PostgreSQL delivers it to every listening session when (and only if) that
transaction commits. Each backend process keeps one listening connection (a thread) and rings
its own long-polls of that machine, so a machine long-polling process B learns at once of an
order paid through process A. The instruction itself is read from the table as always:
a lost notification (listener reconnecting) only delays a delivery to the long-poll's
timeout, never loses it.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from vendhw.server.push import PushHub

log = logging.getLogger(__name__)

CHANNEL = "vendhw_push"


def notify_in(s: Session, machine_id: str) -> None:
    """Queue the cross-process doorbell in this transaction (PostgreSQL only; no-op else)."""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(select(func.pg_notify(CHANNEL, machine_id)))


class PgDoorbell:
    """A thread listening on :data:`CHANNEL` that rings a :class:`PushHub`."""

    def __init__(self, url: str, hub: PushHub) -> None:
        self.conninfo = make_url(url).set(drivername="postgresql").render_as_string(
            hide_password=False)
        self.hub = hub
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="vendhw-pg-doorbell",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        import psycopg

        while not self._stop.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.ready.set()
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5):
                            self.hub.notify(note.payload)
            except Exception as exc:  # database restarting: listen again shortly
                self.ready.clear()
                log.warning("push doorbell lost its PostgreSQL connection (%s); "
                            "reconnecting", exc)
                self._stop.wait(1.0)


def doorbell_for(db_url: str, hub: PushHub) -> Any:
    """A :class:`PgDoorbell` for PostgreSQL URLs, else None (one process needs none)."""
    if make_url(db_url).get_backend_name() == "postgresql":
        return PgDoorbell(db_url, hub)
    return None


__all__ = ["CHANNEL", "PgDoorbell", "doorbell_for", "notify_in"]
