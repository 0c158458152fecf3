"""The VMC's 9-bit link: a command, its reply within the response time, RET on a bad
checksum, the ACK; shared by every device on one port."""

from __future__ import annotations

import logging
import threading
import time

from vendhw.devices.mdb.tables import RETRANSMISSIONS
from vendhw.errors import FramingError, NakError, NoResponseError
from vendhw.framing.base import Frame, Garbage
from vendhw.framing.mdb import MAX_BLOCK, RESPONSE_TIMEOUT, MdbFramer
from vendhw.transport import Transport

log = logging.getLogger("vendhw.devices.mdb")  # one logger for the package, as before


class MdbLink:
    """One VMC on a 9-bit link (in-band mode bits: ``mdb9://`` or ``sim://mdb-…``).

    :param response_timeout: the peripheral's reply window (5 ms by the spec; allow more
        behind USB adapters and ptys).
    """

    def __init__(self, transport: Transport, *,
                 response_timeout: float = RESPONSE_TIMEOUT) -> None:
        self.transport = transport
        self.response_timeout = response_timeout
        self.lock = threading.RLock()
        """Held from a command to the ACK of its reply: a command from another thread (a
        payout while the poller polls) must not come between, or the ACK is late and the
        peripheral repeats its data."""
        self.framer = MdbFramer(wire="9bit")
        self._ack = self.framer.build(direction="host", control="ACK")
        self._ret = self.framer.build(direction="host", control="RET")
        self.bus_key: str | None = None
        """Set when the link is the shared bus of a port (:func:`shared_link`)."""
        self.users = 0
        """Devices holding this shared link; the port closes when the last one releases it."""

    def release(self) -> None:
        """A device is done with the link: close the port, or, on a shared bus, when the
        last device on it is done."""
        if self.bus_key is None:
            self.transport.close()
            return
        with _BUSES_LOCK:
            self.users -= 1
            if self.users > 0:
                return
            if _BUSES.get(self.bus_key) is self:
                del _BUSES[self.bus_key]
        self.transport.close()

    def _read_reply(self, longest: int | None = None) -> Frame | Garbage:
        """The next reply block, or the garbage it starts with; one carrying more than
        ``longest`` data bytes is a late answer to an earlier command (MDB replies do not
        name their command): skipped, and the reply to this one read after it."""
        deframer = self.framer.deframer("device")
        deadline = time.monotonic() + self.response_timeout
        buf = b""
        while True:
            remaining = deadline - time.monotonic()
            chunk = self.transport.read(max(remaining, 0.0))  # back as soon as a block is whole
            if not chunk:
                if buf:
                    leftovers = deframer.flush()
                    return leftovers[0] if leftovers else Garbage("mdb", buf, "incomplete")
                raise NoResponseError("no MDB reply", port=self.transport.url,
                                      baudrate=self.transport.baudrate,
                                      timeout=self.response_timeout)
            buf += chunk
            items: list[Frame | Garbage] = []
            for item in deframer.feed(chunk):
                size = len(item.get("data", b"")) if isinstance(item, Frame) else 0
                if longest is not None and size > longest:
                    log.info("%s: skipped a %d-byte reply, too long for this command: the "
                             "late answer to an earlier one", self.transport.url, size)
                    buf = b""  # this command's own reply comes after it
                else:
                    items.append(item)
            if items:
                # A reply starts with its first byte. Garbage first means its start was
                # damaged, and a block found after it is a fragment whose 8-bit sum happens
                # to match (a byte lost and a bit flipped can cancel out): RET, not data.
                return items[0]
            if len(buf) > 3 * MAX_BLOCK:
                return Garbage("mdb", buf, "reply too long")

    def transact(self, address: int, command: int, data: bytes = b"", *,
                 longest: int | None = None) -> bytes | None:
        """Send one command; ``None`` for ACK, the reply data otherwise (not yet ACKed).

        Call :meth:`ack` after handling returned data (holding :attr:`lock` across both);
        without it the peripheral repeats it. ``longest``: the most data bytes a reply to
        this command carries; a longer one is a late answer to an earlier command, skipped
        (and never ACKed).
        """
        with self.lock:
            return self._transact(address, command, data, longest)

    def _transact(self, address: int, command: int, data: bytes,
                  longest: int | None = None) -> bytes | None:
        block = self.framer.build(direction="host", address=address, command=command,
                                  data=data)
        self.transport.discard_input()
        self.transport.write(block)
        for attempt in range(RETRANSMISSIONS + 1):
            reply = self._read_reply(longest)
            if isinstance(reply, Frame):
                if reply["command"] == "ACK":
                    return None
                if reply["command"] == "NAK":
                    raise NakError(f"MDB 0x{address | command:02X}: peripheral answered NAK")
                return bytes(reply["data"])
            log.info("%s: bad MDB reply (%s), attempt %d", self.transport.url, reply.reason,
                     attempt + 1)
            if attempt < RETRANSMISSIONS:
                self.transport.write(self._ret)
        self.transport.write(self.framer.build(direction="host", control="NAK"))
        raise FramingError("peripheral reply still corrupt after RET", protocol="mdb")

    def ack(self) -> None:
        """Acknowledge the data of the last reply."""
        self.transport.write(self._ack)

    def command(self, address: int, command: int, data: bytes = b"") -> bytes | None:
        """Send a command whose reply data needs no journaling, and ACK it at once."""
        with self.lock:
            reply = self.transact(address, command, data)
            if reply is not None:
                self.ack()
        return reply


_BUSES: dict[str, MdbLink] = {}
"""The open MDB buses of this process, by port (:func:`bus_key`)."""
_BUSES_LOCK = threading.Lock()
