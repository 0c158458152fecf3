"""``sim://NAME``: a simulator in this process behind a memory pipe.

Nothing runs in the background: a write hands the bytes to the simulator at once, and a
read waits on a condition variable until the next reply is due or the deadline passes.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from vendhw.sim.base import Scheduler, Simulator
from vendhw.transport.base import Transport


class SimTransport(Transport):
    """The host's end of an in-process simulator."""

    def __init__(self, simulator: Simulator, url: str | None = None, **options: Any) -> None:
        super().__init__(url or f"sim://{simulator.name}", baudrate=simulator.baudrate,
                         **options)
        self.simulator = simulator
        self._scheduler = Scheduler(simulator)
        self._cond = threading.Condition()

    def _read_some(self, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                now = time.monotonic()
                out = self._scheduler.due(now)
                if out or now >= deadline:
                    return out
                nxt = self._scheduler.next_deadline()
                wake = deadline if nxt is None else min(deadline, nxt)
                self._cond.wait(max(0.0, wake - now))

    def _write(self, data: bytes) -> None:
        with self._cond:
            self._scheduler.on_input(data, time.monotonic())
            self._cond.notify_all()

    def _close(self) -> None:
        with self._cond:
            self._cond.notify_all()
