"""Pseudo-terminal pairs: real tty semantics without hardware.

:class:`PtyPair` gives a device path that any serial program can open (``SerialTransport``,
minicom, third-party host software) and a :class:`FdTransport` on the other end.
:class:`~vendhw.sim.pty.SimulatorOnPty` and :func:`~vendhw.sim.pty.serve_forever` (moved to
:mod:`vendhw.sim.pty`, still importable from here) serve a simulator on such a pair.
"""

from __future__ import annotations

import os
import select
import tty
from typing import Any

from vendhw.errors import DisconnectedError
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


def __getattr__(name: str) -> Any:
    # Old names, now in vendhw.sim.pty: loaded on first use, so transport imports no simulator.
    if name in ("SimulatorOnPty", "serve_forever"):
        import importlib

        return getattr(importlib.import_module("vendhw.sim.pty"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
