"""``mdbascii:///dev/ttyACM0``: an MDB bus behind a USB/serial adapter with a line-based
ASCII master command set, presented as the same in-band 9-bit byte pipe as ``mdb9://``.
The adapter may be named by its identity, ``mdbascii://usb-serial://VID:PID?serial=SN``
(resolved at every open, :mod:`vendhw.transport.identity`).

The command set is the Qibixx MDB-USB / MDB Pi HAT "Generic Master" API
(https://docs.qibixx.com/mdb-products/api-generic-master, serial 115200 8N1 per
https://docs.qibixx.com/mdb-products/api-general):

==================  =========================================================
host sends          adapter answers
==================  =========================================================
``M,1``             ``m,ACK`` (master mode on; ``m,NACK`` on a bad parameter)
``R,xx,yyyy``       ``p,ACK`` (the peripheral ACKed), ``p,NACK`` (no answer),
                    ``p,YYYY`` (the peripheral's reply data, hex)
``R,RESET``         a bus reset
==================  =========================================================

``xx`` is the first (mode-bit) byte of the block, address | command (``R,14,01``: READER
ENABLE to the cashless reader at 0x10), ``yyyy`` the data, both hex. The adapter computes
and checks the checksum and **ACKs the peripheral's reply data itself** before it prints
``p,YYYY``; the VMC cannot withhold or delay that ACK, nor ask for a RET.

This transport takes the blocks ``MdbLink`` writes in the in-band 9-bit form, turns an
addressed block into an ``R`` line, and answers with the in-band form of the reply (ACK, or
data + a mode-bit checksum), so :class:`vendhw.devices.mdb.MdbLink` works unchanged. The
host's own ACK after a reply is absorbed (:attr:`MdbAsciiTransport.acks_itself`): the
adapter already sent it on the wire, which only moves the ACK earlier, so the
ACK-then-journal order of docs/conformance-mdb.md still holds (no data is ever repeated
and so never credited twice; the crash window is unchanged: adapter ACK to journal
commit). A host RET is answered from the last reply (the ASCII line already passed the
adapter's checksum check); a host NAK is dropped. Assumption, not stated by the source:
``p,YYYY`` carries the data without the checksum byte.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from vendhw.errors import ConfigurationError, NoResponseError, VendhwError
from vendhw.framing.mdb import ACK, NAK, RET, decode_9bit, encode_9bit
from vendhw.transport.base import Transport
from vendhw.transport.identity import SCHEME, UsbSerialTransport, resolve
from vendhw.transport.serial import SerialTransport

log = logging.getLogger(__name__)

ADAPTER_BAUDRATE = 115200
"""The adapter's serial speed (the MDB side runs at 9600 behind it)."""
HANDSHAKE_TIMEOUT = 2.0
"""Seconds to wait for ``m,ACK`` after ``M,1``."""


def command_line(code: int, data: bytes) -> bytes:
    """The ``R`` line that sends one addressed block (``R,0B`` or ``R,0F,0200``)."""
    line = f"R,{code:02X}"
    if data:
        line += "," + data.hex().upper()
    return line.encode("ascii") + b"\n"


def reply_block(line: str) -> bytes | None:
    """The in-band 9-bit form of a ``p,...`` line; ``None`` for ``p,NACK`` (no answer)."""
    body = line[2:].strip()
    if body == "ACK":
        return encode_9bit([(ACK, True)])
    if body == "NACK":
        return None
    data = bytes.fromhex(body.replace(",", ""))
    check = sum(data) & 0xFF
    return encode_9bit([(b, False) for b in data] + [(check, True)])


class MdbAsciiTransport(Transport):
    """An ASCII MDB master adapter as an in-band 9-bit MDB byte pipe."""

    acks_itself = True
    """The adapter ACKs a peripheral's reply data before the host sees it; the host's ACK
    is absorbed here (see the module docstring for why that is safe)."""

    def __init__(self, url: str, *, baudrate: int | None = None, trace: bool | None = None,
                 capture: str | None = None, **options: Any) -> None:
        path = url.split("://", 1)[1]
        if not path:
            raise ConfigurationError(f"{url}: mdbascii:// needs a port, e.g. "
                                     "mdbascii:///dev/ttyACM0")
        super().__init__(url, baudrate=ADAPTER_BAUDRATE, trace=trace, capture=capture)
        # ``baudrate`` is the MDB bus speed the host asks for (9600); the adapter's own
        # serial line runs at ADAPTER_BAUDRATE.
        if path.startswith(f"{SCHEME}://"):
            # An identity: the adapter found at its current path, named by the whole URL.
            self.port: SerialTransport = UsbSerialTransport(
                path, resolve(path), baudrate=ADAPTER_BAUDRATE, **options)
            self.identity = url
        else:
            self.port = SerialTransport(path, baudrate=ADAPTER_BAUDRATE, **options)
        self.device = str(getattr(self.port, "device", path))
        """The device path the adapter was opened at (with an identity: found at this open)."""
        self._lines = b""
        self._out = b""
        self._last_reply = b""
        self.host_acks_absorbed = 0
        try:
            self._start_master()
        except BaseException:  # e.g. the adapter went away during the handshake
            self.port.close()
            raise

    def _start_master(self) -> None:
        self.port.write(b"M,1\n")
        deadline = time.monotonic() + HANDSHAKE_TIMEOUT
        while True:
            line = self._next_line(deadline)
            if line is None:
                self.port.close()
                raise NoResponseError(f"{self.url}: no m,ACK from the MDB adapter after M,1",
                                      port=self.url, baudrate=ADAPTER_BAUDRATE,
                                      timeout=HANDSHAKE_TIMEOUT)
            if line.startswith("m,"):
                if line != "m,ACK":
                    self.port.close()
                    raise ConfigurationError(f"{self.url}: adapter refused master mode "
                                             f"({line})")
                return

    def _next_line(self, deadline: float) -> str | None:
        while b"\n" not in self._lines:
            chunk = self.port.read(max(0.0, deadline - time.monotonic()))
            if not chunk:
                return None
            self._lines += chunk
        raw, self._lines = self._lines.split(b"\n", 1)
        return raw.decode("ascii", "replace").strip()

    def fileno(self) -> int | None:
        return self.port.fileno()

    def _write(self, data: bytes) -> None:
        words, used = decode_9bit(data)
        if used != len(data):
            raise ConfigurationError("mdbascii:// write ends inside a 9-bit escape")
        if not words:
            return
        if not words[0][1]:  # a host control byte: ACK, RET or NAK
            control = words[0][0]
            if control == ACK:
                self.host_acks_absorbed += 1  # the adapter ACKed already
            elif control == RET:
                self._out += self._last_reply
            elif control != NAK:
                log.info("%s: stray host byte 0x%02X dropped", self.url, control)
            return
        block = [value for value, _ in words]
        self._out = b""
        self.port.write(command_line(block[0], bytes(block[1:-1])))

    def _read_some(self, timeout: float) -> bytes:
        if self._out:
            out, self._out = self._out, b""
            return out
        deadline = time.monotonic() + timeout
        while True:
            line = self._next_line(deadline)
            if line is None:
                return b""
            if not line.startswith("p,"):
                if line:
                    log.debug("%s: adapter line ignored: %s", self.url, line)
                continue
            try:
                reply = reply_block(line)
            except ValueError:
                log.info("%s: bad adapter reply %r", self.url, line)
                continue
            if reply is None:  # p,NACK: the peripheral did not answer
                continue
            self._last_reply = reply
            return reply

    def _close(self) -> None:
        with contextlib.suppress(VendhwError, OSError):  # closing anyway
            self.port.write(b"M,0\n")
        self.port.close()


def open_mdbascii(url: str, **options: Any) -> MdbAsciiTransport:
    """Opener for :func:`vendhw.transport.open_transport` (``mdbascii://PORT``)."""
    return MdbAsciiTransport(url, **options)
