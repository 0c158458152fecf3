"""The Transport interface: a byte pipe with deadline-driven reads, tracing and capture.

A transport knows nothing of frames. Subclasses implement only :meth:`_read_some` (block up
to a timeout for at least one byte, then return whatever is already waiting),
:meth:`_write` and :meth:`_close`. The public :meth:`Transport.read` owns the deadline rules
every protocol needs: the first byte within the response timeout, then the rest as long as
each next byte comes within the protocol's inter-byte gap. The gap is enforced here, not by
pyserial's ``inter_byte_timeout`` (a no-op on POSIX).

A 9-bit MDB link and a USB device fit the same interface: the MDB link carries the mode bit
in-band (PARMRK-style escapes, see :mod:`vendhw.framing.mdb`), and a USB transport's
``_read_some`` is a bulk read with a finite timeout.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from abc import ABC, abstractmethod
from typing import IO, Any, TextIO

from vendhw.errors import DisconnectedError, TransportError


def trace_enabled() -> bool:
    """True when ``--trace`` or ``VENDHW_TRACE=1`` asked for hexdumps."""
    return os.environ.get("VENDHW_TRACE", "").strip().lower() in ("1", "true", "yes", "on")


class Tracer:
    """Prints ``TRACE +0.003 TX port 5 bytes: 7F 80 ...`` lines (esptool style)."""

    def __init__(self, port: str, stream: TextIO | None = None) -> None:
        self.port = port
        self.stream = stream or sys.stderr
        self._start = time.monotonic()
        self._last = self._start

    def __call__(self, direction: str, data: bytes) -> None:
        now = time.monotonic()
        delta, self._last = now - self._last, now
        self.stream.write(
            f"TRACE +{delta:.3f} {direction} {self.port} {len(data)} bytes: "
            f"{data.hex(' ').upper()}\n"
        )
        self.stream.flush()


class CaptureWriter:
    """Records every byte with time and direction as JSON Lines, for replay and bug reports.

    One object per read or write: ``{"t": seconds since open, "dir": "tx"|"rx", "hex": ...}``.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._file: IO[str] = open(path, "a", encoding="utf-8")
        self._start = time.monotonic()
        self._lock = threading.Lock()

    def __call__(self, direction: str, data: bytes) -> None:
        record = {"t": round(time.monotonic() - self._start, 6),
                  "dir": "tx" if direction == "TX" else "rx", "hex": data.hex()}
        with self._lock:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()

    def close(self) -> None:
        self._file.close()


class Transport(ABC):
    """A byte pipe to one device (or one bus).

    :param url: what it was opened from, for messages.
    :param baudrate: the line speed, if any, for messages and wire-time figures.
    """

    def __init__(self, url: str, *, baudrate: int | None = None, trace: bool | None = None,
                 capture: str | os.PathLike[str] | None = None) -> None:
        self.url = url
        self.baudrate = baudrate
        self._hooks: list[Any] = []
        if trace if trace is not None else trace_enabled():
            self._hooks.append(Tracer(url))
        self._capture = CaptureWriter(capture) if capture else None
        if self._capture:
            self._hooks.append(self._capture)
        self.closed = False
        self.identity: str | None = None
        """The stable URL this port was resolved from (``usb-serial://...``), if any."""
        self.lost: DisconnectedError | None = None
        """Set when a read or write found the device gone (unplugged, pty closed): the
        layers above tell "the port vanished" from "the device is silent" by it, whatever
        their drivers made of the error."""

    # -- what subclasses implement --------------------------------------------------------

    @abstractmethod
    def _read_some(self, timeout: float) -> bytes:
        """Block up to ``timeout`` s for one byte, then return it with all that is waiting."""

    @abstractmethod
    def _write(self, data: bytes) -> None:
        """Send all of ``data``."""

    @abstractmethod
    def _close(self) -> None:
        """Release the port."""

    def fileno(self) -> int | None:
        """A file descriptor that selects readable when bytes wait, if the transport has one."""
        return None

    def discard_input(self) -> bytes:
        """Drop whatever is waiting (stale bytes before a new request) and return it."""
        stale = b""
        while True:
            chunk = self._read_guarded(0.0)
            if not chunk:
                return stale
            stale += chunk

    def _read_guarded(self, timeout: float) -> bytes:
        try:
            return self._read_some(timeout)
        except DisconnectedError as exc:
            self.lost = exc
            raise

    # -- public API -------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Send ``data`` now."""
        if self.closed:
            raise TransportError(f"{self.url}: transport is closed")
        for hook in self._hooks:
            hook("TX", data)
        try:
            self._write(data)
        except DisconnectedError as exc:
            self.lost = exc
            raise

    def read(self, timeout: float, gap: float | None = None) -> bytes:
        """What arrives: the first byte within ``timeout``, then the rest of the burst.

        After the first byte, whatever is waiting is drained; with ``gap`` the read goes on
        while each next byte comes within ``gap`` seconds of the previous one. Returns
        ``b""`` when nothing came before the deadline (the caller decides whether silence is
        an error, since for a poll it is not).
        """
        if self.closed:
            raise TransportError(f"{self.url}: transport is closed")
        data = self._read_guarded(max(timeout, 0.0))
        if data and gap is not None and gap > 0:
            while True:
                more = self._read_guarded(gap)
                if not more:
                    break
                data += more
        if data:
            for hook in self._hooks:
                hook("RX", data)
        return data

    def read_until(self, deadline: float) -> bytes:
        """One burst that starts before the monotonic ``deadline`` (or ``b""``)."""
        return self.read(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        """Release the port; safe to call twice."""
        if self.closed:
            return
        self.closed = True
        try:
            self._close()
        finally:
            if self._capture:
                self._capture.close()

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        baud = f" {self.baudrate} baud" if self.baudrate else ""
        return f"<{type(self).__name__} {self.url}{baud}>"
