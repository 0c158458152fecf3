"""What one backend process knows about itself: the Idempotency-Keys its requests are
running now (:class:`InFlight`), and the thread that keeps its ``server_instances`` row
alive (:class:`Heartbeat`).

Together they decide whether a key left "in progress" belongs to a request that is still
running (never run it twice) or to one that died (take it over at once): see
``AuthMixin.idempotent`` and docs/backend-fleet.md, "Dead requests and Idempotency-Key".
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable

log = logging.getLogger("vendhw.server.instances")

Key = tuple[str, str]
"""(machine id, Idempotency-Key)."""


def new_instance_id() -> str:
    """A random id per process start: a restarted process is never taken for the dead one."""
    return "si" + secrets.token_hex(12)


class InFlight:
    """The keys this process's requests are inside ``idempotent()`` with, counted (two
    requests with one key may both be inside: the second only to be told 409).

    A request enters its key before its claim can commit and leaves after the key's row got
    its answer or was deleted, so a key held in the database by this process and entered by
    nobody else is provably not running here. A request that leaves while still holding the
    key in the database (its cleanup failed: the database was down) leaves an *orphan*; the
    heartbeat releases orphans (:meth:`take_orphans`), since other processes cannot see
    this set and would otherwise trust this live process's key forever.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count: dict[Key, int] = {}
        self._orphans: set[Key] = set()

    def enter(self, key: Key) -> None:
        with self._lock:
            self._count[key] = self._count.get(key, 0) + 1

    def leave(self, key: Key, *, orphaned: bool = False) -> None:
        with self._lock:
            left = self._count.get(key, 0) - 1
            if left > 0:
                self._count[key] = left
            else:
                self._count.pop(key, None)
            if orphaned:
                self._orphans.add(key)

    def others(self, key: Key) -> bool:
        """Whether a request other than the caller (who entered the key) is running it."""
        with self._lock:
            return self._count.get(key, 0) > 1

    def running(self) -> int:
        """How many keyed requests are inside ``idempotent()`` now."""
        with self._lock:
            return sum(self._count.values())

    def take_orphans(self) -> list[Key]:
        """The orphans nobody is running now, entered on behalf of the caller (so a request
        arriving meanwhile sees them running); give them back with :meth:`put_orphans`."""
        with self._lock:
            taken = sorted(k for k in self._orphans if k not in self._count)
            for key in taken:
                self._count[key] = 1
            return taken

    def put_orphans(self, keys: list[Key], *, released: bool) -> None:
        with self._lock:
            for key in keys:
                left = self._count.get(key, 0) - 1
                if left > 0:
                    self._count[key] = left
                else:
                    self._count.pop(key, None)
                if released:
                    self._orphans.discard(key)


class Heartbeat:
    """Runs ``beat`` every ``interval`` seconds on a daemon thread of its own (not the
    event loop, not the request pool: a busy process still beats), until :meth:`stop`.

    A failed beat is logged and the next one comes on time; ``beat`` itself decides what a
    beat writes. The thread waits on an event between beats (no sleeping poll), so
    :meth:`stop` returns at once.
    """

    def __init__(self, beat: Callable[[], None], interval: float) -> None:
        self._beat = beat
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="vendhw-heartbeat",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._beat()
            except Exception:
                log.exception("heartbeat failed; trying again in %.1f s", self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None


__all__ = ["Heartbeat", "InFlight", "Key", "new_instance_id"]
