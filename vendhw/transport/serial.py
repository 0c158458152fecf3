"""Serial ports and every pyserial URL (``loop://``, ``socket://``, ``rfc2217://``, ``spy://``).

Real ports open with ``exclusive=True`` so a second program gets a clear "busy" error
instead of stealing bytes. On POSIX ports the read is ``select`` + ``os.read`` on the file
descriptor: one system call per burst, no per-read ``tcsetattr`` for the timeout.
"""

from __future__ import annotations

import errno
import os
import select
import time
from typing import Any

import serial

from vendhw.errors import DisconnectedError, PortBusyError, PortNotFoundError, TransportError
from vendhw.transport.base import Transport


def _open_error(url: str, exc: Exception) -> TransportError:
    text = str(exc)
    code = getattr(exc, "errno", None)
    if code == errno.ENOENT or "No such file" in text or "could not find" in text.lower():
        return PortNotFoundError(f"{url}: no such port ({text})")
    if code in (errno.EBUSY, errno.EAGAIN) or "exclusively lock" in text or "busy" in text.lower():
        return PortBusyError(f"{url}: port is busy, another program holds it ({text})")
    if code == errno.EACCES or "Permission denied" in text:
        return TransportError(f"{url}: permission denied (add yourself to the dialout group?)")
    return TransportError(f"{url}: cannot open ({text})")


try:
    import termios

    _TERMIOS_ERRORS: tuple[type[Exception], ...] = (termios.error,)
except ImportError:  # pragma: no cover - Windows
    _TERMIOS_ERRORS = ()

WRITE_TIMEOUT = 2.0
"""Seconds a write may wait for room in the driver's buffer before the port counts as gone."""


class SerialTransport(Transport):
    """A pyserial port or URL.

    :param low_latency: ask the driver for low latency (FTDI's 16 ms timer -> 1 ms).
    """

    def __init__(
        self, url: str, *, baudrate: int = 9600, bytesize: int = 8, parity: str = "N",
        stopbits: float = 1, low_latency: bool = False, exclusive: bool = True,
        **options: Any,
    ) -> None:
        super().__init__(url, baudrate=baudrate, trace=options.pop("trace", None),
                         capture=options.pop("capture", None))
        kwargs: dict[str, Any] = {"baudrate": baudrate, "bytesize": bytesize, "parity": parity,
                                      "stopbits": stopbits, "timeout": 0,
                                      "write_timeout": WRITE_TIMEOUT}
        if "://" not in url:
            kwargs["exclusive"] = exclusive
            if parity != serial.PARITY_NONE and os.path.realpath(url).startswith("/dev/pts/"):
                # A pty has no parity bit: Linux drops PARENB, and pyserial's next open of
                # the same pty then fails with EINVAL. Simulators do not care.
                kwargs["parity"] = serial.PARITY_NONE
        kwargs.update(options)
        try:
            self.serial = serial.serial_for_url(url, **kwargs)
        except (serial.SerialException, OSError, ValueError, *_TERMIOS_ERRORS) as exc:
            raise _open_error(url, exc) from exc
        if low_latency and hasattr(self.serial, "set_low_latency_mode"):
            try:
                self.serial.set_low_latency_mode(True)
            except (OSError, ValueError, serial.SerialException):
                pass  # the driver has no such mode; latency stays as it is
        fd: int | None = None
        if "://" not in url and hasattr(self.serial, "fileno"):
            try:
                fd = self.serial.fileno()
            except (serial.SerialException, OSError, AttributeError):
                fd = None
        self._fd = fd
        self._timeout_set: float | None = None

    def fileno(self) -> int | None:
        return self._fd

    def _read_some(self, timeout: float) -> bytes:
        if self._fd is not None:
            return self._read_fd(timeout)
        if self._timeout_set != timeout:
            self.serial.timeout = timeout
            self._timeout_set = timeout
        try:
            data = self.serial.read(1)
            if data:
                waiting = self.serial.in_waiting
                if waiting:
                    data += self.serial.read(waiting)
            return bytes(data)
        except serial.SerialException as exc:
            raise DisconnectedError(f"{self.url}: {exc}") from exc

    def _read_fd(self, timeout: float) -> bytes:
        fd = self._fd
        assert fd is not None
        try:
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                return b""
            data = os.read(fd, 4096)
        except BlockingIOError:
            return b""
        except OSError as exc:
            raise DisconnectedError(f"{self.url}: device went away ({exc})") from exc
        if not data:
            raise DisconnectedError(
                f"{self.url}: device reports readiness to read but returned no data "
                "(unplugged, or another program is using the port)"
            )
        return data

    def _write(self, data: bytes) -> None:
        if self._fd is not None:
            self._write_fd(data)
            return
        try:
            self.serial.write(data)
        except (serial.SerialException, OSError) as exc:
            raise DisconnectedError(f"{self.url}: write failed ({exc})") from exc

    def _write_fd(self, data: bytes) -> None:
        """os.write straight to the non-blocking fd; wait for room only when it is full."""
        fd = self._fd
        assert fd is not None
        view = memoryview(data)
        deadline = time.monotonic() + WRITE_TIMEOUT
        try:
            while view:
                try:
                    view = view[os.write(fd, view):]
                except BlockingIOError:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or not select.select([], [fd], [], remaining)[1]:
                        raise DisconnectedError(
                            f"{self.url}: write timed out after {WRITE_TIMEOUT:g} s "
                            "(flow control stuck or device gone)") from None
        except OSError as exc:
            raise DisconnectedError(f"{self.url}: write failed ({exc})") from exc

    def _close(self) -> None:
        try:
            self.serial.close()
        except (serial.SerialException, OSError):
            pass
