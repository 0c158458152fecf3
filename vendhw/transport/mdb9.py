"""``mdb9:///dev/ttyUSB0``: a 9-bit MDB link on an ordinary Linux UART (sticky parity).

The parity bit stands in for MDB's mode bit: a byte is sent with MARK parity when its mode bit
is 1 and SPACE parity when it is 0 (``CMSPAR``), and the line is received with SPACE parity
and ``PARMRK|INPCK``, so a received byte whose mode bit is 1 arrives as ``FF 00 b`` and a
literal ``FF`` as ``FF FF``. That escaped form is also what vendhw's MDB framer reads and
writes (``MdbFramer(wire="9bit")``), so the layers above see an ordinary byte pipe.

The port is a device path (``mdb9:///dev/ttyUSB0``) or a USB adapter's identity
(``mdb9://usb-serial://0403:6001?serial=SN``, :mod:`vendhw.transport.identity`), resolved at
every open, so an MDB interface plugged back at another path is found again; the transport
is then named by the whole URL, not the path it was found at.

Sources: temoto/vender ``hardware/mdb/client/io_file.go`` (the same trick in Go),
pymultidropbus (pyserial ``PARITY_MARK``/``PARITY_SPACE``).
"""

from __future__ import annotations

import sys
from typing import Any

import serial

from vendhw.errors import ConfigurationError, DisconnectedError
from vendhw.framing.mdb import decode_9bit
from vendhw.transport.identity import SCHEME, resolve
from vendhw.transport.serial import SerialTransport

try:
    import termios
except ImportError:  # pragma: no cover - Windows
    termios = None  # type: ignore[assignment]

CMSPAR = 0o10000000000
"""Linux ``CMSPAR`` (termios bits of asm-generic/termbits.h); not exported by Python."""


def runs_by_mode(words: list[tuple[int, bool]]) -> list[tuple[bool, bytes]]:
    """Group consecutive words with the same mode bit, so parity changes once per run."""
    runs: list[tuple[bool, bytearray]] = []
    for value, mode in words:
        if runs and runs[-1][0] == mode:
            runs[-1][1].append(value)
        else:
            runs.append((mode, bytearray((value,))))
    return [(mode, bytes(data)) for mode, data in runs]


class Mdb9BitTransport(SerialTransport):
    """A serial port driven as a 9-bit MDB line (Linux only)."""

    def __init__(self, url: str, **options: Any) -> None:
        if not sys.platform.startswith("linux") or termios is None:
            raise ConfigurationError("mdb9:// needs Linux (CMSPAR sticky parity); "
                                     "use an MDB adapter on other systems")
        path = url.split("://", 1)[1]
        if not path:
            raise ConfigurationError(f"{url}: mdb9:// needs a port, e.g. mdb9:///dev/ttyUSB0 "
                                     "or mdb9://usb-serial://VID:PID?serial=SN")
        identity = path.startswith(f"{SCHEME}://")
        if identity:
            path = resolve(path)  # the adapter's current path; PortNotFoundError if absent
        options.setdefault("baudrate", 9600)
        super().__init__(path, parity=serial.PARITY_SPACE, **options)
        self.url = url
        self.device = path
        """The device path the port was opened at (with an identity: found at this open)."""
        if identity:
            self.identity = url
        fd = self.fileno()
        if fd is None:
            raise ConfigurationError(f"{url}: not a tty device")
        attrs = termios.tcgetattr(fd)
        attrs[0] |= termios.PARMRK | termios.INPCK  # iflag: mark parity errors in-band
        attrs[0] &= ~(termios.IGNPAR | termios.ISTRIP)
        attrs[2] |= termios.PARENB | CMSPAR  # cflag: sticky parity
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
        self._mark = False

    def _set_mark(self, mark: bool) -> None:
        if mark == self._mark:
            return
        fd = self.fileno()
        assert fd is not None
        termios.tcdrain(fd)  # bytes already queued keep their parity
        attrs = termios.tcgetattr(fd)
        if mark:
            attrs[2] |= termios.PARODD
        else:
            attrs[2] &= ~termios.PARODD
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
        self._mark = mark

    def _write(self, data: bytes) -> None:
        words, used = decode_9bit(data)
        if used != len(data):
            raise ConfigurationError("mdb9:// write ends inside a 9-bit escape")
        try:
            for mode, chunk in runs_by_mode(words):
                self._set_mark(mode)
                self.serial.write(chunk)
            self._set_mark(False)  # receive with SPACE parity
        except (serial.SerialException, OSError) as exc:
            raise DisconnectedError(f"{self.url}: write failed ({exc})") from exc
