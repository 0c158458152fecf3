"""Waking long-polling machines the moment an instruction exists for them.

Instructions live in the database (table ``instructions``) until acknowledged; this hub only
says "look again" to whoever is waiting for one machine, across threads and event loops.
A long-poll registers its waiter *before* reading the table, so a notification between the
read and the wait is never lost.

The hub also fans every new instruction out to ``listeners``: a later MQTT bridge subscribes
here and publishes the same JSON (topic ``vendhw/<machine>/instructions``, QoS 1), taking
acknowledgements on ``vendhw/<machine>/acks``; the database stays the source of truth and the
redelivery rule (unacknowledged -> sent again) is the same on every channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Listener = Callable[[str, dict[str, Any]], None]
"""Called with (machine id, instruction JSON) after the instruction is committed."""


class Waiter:
    """One long-poll's doorbell: an asyncio event rung from any thread."""

    def __init__(self, machine_id: str) -> None:
        self.machine_id = machine_id
        self.loop = asyncio.get_running_loop()
        self.event = asyncio.Event()

    def ring(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop already closed: nobody waits
            self.loop.call_soon_threadsafe(self.event.set)

    async def wait(self, timeout: float) -> bool:
        """True when rung before ``timeout`` seconds."""
        try:
            await asyncio.wait_for(self.event.wait(), timeout=max(0.0, timeout))
        except asyncio.TimeoutError:
            return False
        return True


class PushHub:
    """Per-machine doorbells plus instruction listeners; safe to call from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, set[Waiter]] = {}
        self.listeners: list[Listener] = []

    def subscribe(self, machine_id: str) -> Waiter:
        """A waiter for one long-poll (call from the event loop that will wait)."""
        waiter = Waiter(machine_id)
        with self._lock:
            self._waiters.setdefault(machine_id, set()).add(waiter)
        return waiter

    def unsubscribe(self, waiter: Waiter) -> None:
        with self._lock:
            waiters = self._waiters.get(waiter.machine_id)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._waiters[waiter.machine_id]

    def waiting(self, machine_id: str) -> int:
        """How many long-polls of this machine are open (the machine is online)."""
        with self._lock:
            return len(self._waiters.get(machine_id, ()))

    def notify(self, machine_id: str, instruction: dict[str, Any] | None = None) -> None:
        """Ring the machine's waiters and tell the listeners about a new instruction."""
        with self._lock:
            waiters = list(self._waiters.get(machine_id, ()))
        for waiter in waiters:
            waiter.ring()
        if instruction is not None:
            for listener in list(self.listeners):
                try:
                    listener(machine_id, instruction)
                except Exception:  # a broken bridge must not break a sale
                    log.exception("instruction listener failed")


__all__ = ["Listener", "PushHub", "Waiter"]
