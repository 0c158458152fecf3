"""A simulator served on a pty: :class:`SimulatorOnPty` from a thread (tests) and
:func:`serve_forever` in the foreground (``vendhw sim NAME``)."""

from __future__ import annotations

import os
import select
import threading
import time

from vendhw.errors import DisconnectedError
from vendhw.sim.base import Scheduler, Simulator
from vendhw.transport.pty import FdTransport, PtyPair


def _pump(scheduler: Scheduler, link: FdTransport, stop: threading.Event | None,
          wake_fd: int | None) -> None:
    """Serve one simulator on ``link`` until ``stop`` is set or ``wake_fd`` is readable."""
    link_fd = link.fileno()
    assert link_fd is not None
    fds = [link_fd] + ([wake_fd] if wake_fd is not None else [])
    while stop is None or not stop.is_set():
        now = time.monotonic()
        out = scheduler.due(now)
        if out:
            link.write(out)
        nxt = scheduler.next_deadline()
        wait = 0.25 if nxt is None else min(0.25, max(0.0, nxt - time.monotonic()))
        ready, _, _ = select.select(fds, [], [], wait)
        if wake_fd is not None and wake_fd in ready:
            return
        if link_fd in ready:
            try:
                data = os.read(link_fd, 4096)
            except BlockingIOError:
                continue
            except OSError:
                # The device side is closed right now (EIO on Linux); wait for a reopen.
                if stop is not None and stop.wait(0.05):  # sleep-ok: nobody holds the port
                    return
                continue
            if data:
                scheduler.on_input(data, time.monotonic())


class SimulatorOnPty:
    """Run a simulator on a new pty from a background thread; ``port`` is its device path."""

    def __init__(self, simulator: Simulator) -> None:
        self.simulator = simulator
        self.scheduler = Scheduler(simulator)
        self.pair = PtyPair()
        self.port = self.pair.port
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name=f"sim-{simulator.name}",
                                        daemon=True)
        self._lock = threading.Lock()
        self._thread.start()

    def _run(self) -> None:
        try:
            _pump(self.scheduler, self.pair.master, self._stop, self._wake_r)
        except DisconnectedError:
            pass

    def close(self) -> None:
        self._stop.set()
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=5)
        self.pair.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def __enter__(self) -> SimulatorOnPty:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve_forever(simulator: Simulator, pair: PtyPair, wake_fd: int) -> None:
    """Serve in the foreground until ``wake_fd`` becomes readable (a signal handler writes)."""
    _pump(Scheduler(simulator), pair.master, None, wake_fd)
