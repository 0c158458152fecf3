"""This process as a server instance: its heartbeat row, and who holds a key in progress."""

from __future__ import annotations

import os
import socket
from typing import Any, cast

from sqlalchemy import delete, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from vendhw.errors import ConfigurationError
from vendhw.server.instances import Heartbeat
from vendhw.server.models import IdempotentResponse, ServerInstance
from vendhw.server.service.core import BackendCore, log

INSTANCE_KEEP_S = 86400.0
"""Rows of instances not seen for this long are purged (a missing holder is judged by the
lease, which ran out long before)."""


class InstancesMixin(BackendCore):
    """This process as a server instance: its heartbeat row, and who holds a key."""

    def start_heartbeat(self) -> None:
        """Write this instance's row and renew it every ``instance_heartbeat`` seconds on a
        thread of its own (the app starts it; a Backend used without the app has none, and
        other processes judge its keys by the lease)."""
        if self._heartbeat is not None:
            return
        interval = self.settings.instance_heartbeat
        timeout = self.settings.instance_timeout
        if not interval > 0 or not timeout >= 2 * interval:
            raise ConfigurationError(
                f"instance_timeout ({timeout:g} s) must be at least twice instance_heartbeat "
                f"({interval:g} s, positive): a process is dead after missing a few beats")
        self.heartbeat()  # the row exists before the first request is served
        self._heartbeat = Heartbeat(self.heartbeat, interval)
        self._heartbeat.start()

    def heartbeat(self) -> None:
        """One beat: renew this instance's row and release the keys its requests failed to
        release (orphans: see :class:`~vendhw.server.instances.InFlight`)."""
        now = self.clock.now()
        until = now + self.settings.instance_timeout
        if self._alive_until is not None and now > self._alive_until:
            log.error("this process (instance %s) was not seen for %.1f s, longer than its "
                      "instance timeout: other processes may have taken over keys of requests "
                      "it was running", self.instance_id, now - self._alive_until
                      + self.settings.instance_timeout)
        orphans = self.inflight.take_orphans()
        released = False
        try:
            with self.db.own_tx() as s:
                renewed = cast(CursorResult[Any], s.execute(
                    update(ServerInstance).where(ServerInstance.id == self.instance_id)
                    .values(seen_at=now, alive_until=until))).rowcount
                if not renewed:  # the first beat (or the row was purged meanwhile)
                    s.add(ServerInstance(id=self.instance_id, host=socket.gethostname()[:255],
                                         pid=os.getpid(), started_at=self._started_at,
                                         seen_at=now, alive_until=until))
                for machine_id, key in orphans:
                    s.execute(delete(IdempotentResponse).where(
                        IdempotentResponse.machine_id == machine_id,
                        IdempotentResponse.key == key, IdempotentResponse.status_code == 0,
                        IdempotentResponse.holder == self.instance_id))
            released = True
            self._alive_until = until
        finally:
            self.inflight.put_orphans(orphans, released=released)
        if orphans:
            log.warning("released %d Idempotency-Key(s) whose requests ended without "
                        "releasing them", len(orphans))

    def stop_heartbeat(self) -> None:
        """Stop beating. With no keyed request running the row is marked stopped
        (``alive_until`` 0): anything it still held is taken over at once. Otherwise it is
        left to time out (a request still running must not be run twice)."""
        beat, self._heartbeat = self._heartbeat, None
        if beat is None:
            return
        beat.stop()
        if self.inflight.running():
            return
        try:
            with self.db.own_tx() as s:
                s.execute(update(ServerInstance).where(ServerInstance.id == self.instance_id)
                          .values(alive_until=0.0))
        except Exception:
            log.exception("could not mark instance %s stopped; it times out instead",
                          self.instance_id)

    def _holder_alive(self, s: Session, holder: str, now: float) -> float | None:
        """Seconds the instance ``holder`` is still alive for (> 0), 0 when it is dead (its
        beats stopped, or it stopped), None when it cannot be judged (no row: it never
        beat, or was purged): then the lease decides."""
        until = s.execute(select(ServerInstance.alive_until)
                          .where(ServerInstance.id == holder)).scalar()
        if until is None:
            return None
        return max(0.0, float(until) - now)

    def _purge_instances(self, s: Session, now: float) -> None:
        s.execute(delete(ServerInstance).where(ServerInstance.seen_at < now - INSTANCE_KEEP_S,
                                               ServerInstance.id != self.instance_id))
