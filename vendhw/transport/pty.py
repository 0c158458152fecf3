"""Pseudo-terminal pairs: real tty semantics without hardware.

:class:`PtyPair` gives a device path that any serial program can open (``SerialTransport``,
minicom, third-party host software) and a :class:`FdTransport` on the other end.
:class:`SimulatorOnPty` serves a simulator on such a pair from a thread (tests), and
:func:`serve_forever` does the same in the foreground (``vendhw sim NAME``).
"""

from __future__ import annotations

import os
import select
import threading
import time
import tty
from typing import Any

from vendhw.errors import DisconnectedError
from vendhw.sim.base import Scheduler, Simulator
from vendhw.transport.base import Transport


class FdTransport(Transport):
    """A transport on a raw file descriptor (a pty master, a pipe)."""

    def __init__(self, fd: int, url: str = "fd", *, owns_fd: bool = True, **options: Any) -> None:
        super().__init__(url, **options)
        self._fd = fd
        self._owns = owns_fd
        os.set_blocking(fd, False)

    def fileno(self) -> int | None:
        return self._fd

    def _read_some(self, timeout: float) -> bytes:
        try:
            ready, _, _ = select.select([self._fd], [], [], timeout)
            if not ready:
                return b""
            data = os.read(self._fd, 4096)
        except BlockingIOError:
            return b""
        except OSError as exc:
            raise DisconnectedError(f"{self.url}: {exc}") from exc
        if not data:
            raise DisconnectedError(f"{self.url}: other end closed")
        return data

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._fd, view)
            except BlockingIOError:
                select.select([], [self._fd], [], 1.0)
                continue
            except OSError as exc:
                raise DisconnectedError(f"{self.url}: {exc}") from exc
            view = view[n:]

    def _close(self) -> None:
        if self._owns:
            os.close(self._fd)


class PtyPair:
    """A pty pair: ``port`` is the device path, ``master`` a transport on the other end.

    The slave end is kept open here too, so the pair survives the device-side program
    closing and reopening the port.
    """

    def __init__(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        tty.setraw(master)
        self.port = os.ttyname(slave)
        self._slave = slave
        self.master = FdTransport(master, url=f"pty-master:{self.port}")

    def close(self) -> None:
        self.master.close()
        try:
            os.close(self._slave)
        except OSError:
            pass

    def __enter__(self) -> PtyPair:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
