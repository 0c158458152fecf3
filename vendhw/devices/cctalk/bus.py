"""The ccTalk sans-I/O steps and the runner that sends them.

* **Steps.** Every operation is a generator that yields :class:`Request` steps (one ccTalk
  command each) and receives the reply data back, and yields
  :class:`~vendhw.devices.engine.Deliver` steps for events that must reach the sink before
  the host moves on.
* **Runner.** :class:`CcTalkBus` builds packets with :class:`~vendhw.framing.cctalk.CcTalkFramer`,
  sends them through :class:`~vendhw.devices.link.FrameLink` with local-echo removal (one
  data wire: the host hears itself), reads replies under the 50 ms inter-byte rule and
  retries idempotent commands (a slave drops a bad packet silently, Part 1 §11).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from vendhw.devices.cash import EventSink
from vendhw.devices.cctalk.tables import RECEIVE_GAP, REPLY_TIMEOUT, RETRIES
from vendhw.devices.engine import Deliver, Op, drive, drive_async
from vendhw.devices.link import FrameLink
from vendhw.errors import DeviceFault, NakError, NoResponseError, VendhwError
from vendhw.framing.base import Frame
from vendhw.framing.cctalk import BUSY, HEADERS, HOST_ADDRESS, NAK, REPLY, CcTalkFramer
from vendhw.transport import Transport

log = logging.getLogger("vendhw.devices.cctalk")  # one logger for the package, as before

T = TypeVar("T")


# --- sans-I/O steps ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One command for the runner to send; the reply's data bytes come back (b"" for ACK).

    A NAK, silence or a corrupt reply is thrown back into the operation as a vendhw error, so
    the core decides what a failure means (a lost dispense reply must not be resent blindly).
    """

    address: int
    header: int
    data: bytes = b""
    retries: int = RETRIES
    """Resends allowed; 0 for commands that must not run twice (dispense)."""
    timeout: float | None = None
    """Reply deadline for slow commands; None = the runner's default."""
    reply_length: int | None = None
    """Data bytes the reply must carry; a reply of another length is a late answer to an
    earlier command (ccTalk replies do not name their command) and is skipped."""

    @property
    def name(self) -> str:
        return HEADERS.get(self.header, f"HEADER {self.header}")


Step = Request | Deliver
"""ccTalk operations yield requests and events (:mod:`vendhw.devices.engine`)."""


# --- the runner -------------------------------------------------------------------------------


class CcTalkBus:
    """One ccTalk line (one or more devices) behind a FrameLink; thread-safe.

    :param checksum: ``"simple"`` (8-bit zero sum) or ``"crc16"`` (CRC-16/XMODEM).
    :param echo: the line echoes what the host sends (true for a plain UART on the single
        data wire; harmless when it does not: the link stops expecting it).
    """

    def __init__(self, transport: Transport, *, checksum: str = "simple", echo: bool = True,
                 reply_timeout: float = REPLY_TIMEOUT, retries: int = RETRIES) -> None:
        self.transport = transport
        self.framer = CcTalkFramer(checksum=checksum)
        self.checksum = checksum
        self.reply_timeout = reply_timeout
        self.retries = retries
        # The 50 ms rule belongs to the deframer (a partial packet older than that is
        # dropped). Handing it to the link as its read gap too would make every read wait
        # 50 ms after the last byte for more, so the link reads what is there and returns.
        self.link = FrameLink(transport, self.framer, incoming="device", gap=None, echo=echo)
        self.link.deframer = self.framer.deframer("device", gap=RECEIVE_GAP)
        self._lock = threading.RLock()

    def packet(self, address: int, header: int, data: bytes = b"") -> bytes:
        return self.framer.build(direction="host", dest=address, src=HOST_ADDRESS,
                                 header=header, data=data)

    def _accept(self, address: int) -> Callable[[Frame], bool]:
        crc = self.checksum == "crc16"

        def accept(frame: Frame) -> bool:
            # CRC-16 replies carry the CRC's low byte where the source address would be.
            return bool(frame["dest"] == HOST_ADDRESS and (crc or frame["src"] == address))

        return accept

    def _receive(self, timeout: float, accept: Callable[[Frame], bool]) -> Frame:
        """The reply within ``timeout``, applying the 50 ms rule during silences too.

        A false packet start in line noise (a ``01`` then a large length byte) would hold
        the real reply behind it until more bytes come; after 50 ms of silence the partial
        packet is stale (Part 1 §11), so the deframer rescans what it held.
        """
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NoResponseError("no ccTalk reply", port=self.transport.url,
                                      baudrate=self.transport.baudrate, timeout=timeout)
            try:
                return self.link.receive(min(remaining, RECEIVE_GAP), accept=accept)
            except NoResponseError:
                if not self.link.deframer.pending:
                    continue
            for item in self.link.deframer.feed(b"", time.monotonic()):
                if isinstance(item, Frame):
                    if accept(item):
                        return item
                else:
                    self.link.garbage.append(item)

    def transact(self, request: Request) -> bytes:
        """Send one command and return its reply data; retries only as ``request`` allows."""
        packet = self.packet(request.address, request.header, request.data)
        timeout = request.timeout or self.reply_timeout
        accept = self._accept(request.address)
        if request.reply_length is not None:
            by_address, length = accept, request.reply_length

            def accept(frame: Frame) -> bool:
                return by_address(frame) and (frame["header"] != REPLY
                                              or len(frame["data"]) == length)
        failure: VendhwError | None = None
        with self._lock:
            for attempt in range(request.retries + 1):
                try:
                    self.link.send(packet)
                    frame = self._receive(timeout, accept)
                except NoResponseError as exc:
                    failure = exc
                    log.debug("%s: no reply to %s (attempt %d)", self.transport.url,
                              request.name, attempt + 1)
                    continue
                header = frame["header"]
                if header == NAK:
                    raise NakError(f"ccTalk address {request.address} answered NAK to "
                                   f"{request.name}")
                if header == BUSY:
                    failure = DeviceFault(f"ccTalk address {request.address} is busy "
                                          f"({request.name})")
                    continue
                return bytes(frame["data"])
        if isinstance(failure, DeviceFault):
            raise failure
        raise NoResponseError(
            f"ccTalk address {request.address} did not answer {request.name} "
            f"({request.retries + 1} attempts; check the address, --checksum "
            f"{'simple' if self.checksum == 'crc16' else 'crc16'}?, encryption and wiring)",
            port=self.transport.url, baudrate=self.transport.baudrate, timeout=timeout)

    def run(self, op: Op[T], sink: EventSink | None = None) -> T:
        """Drive a sans-I/O operation to its end with blocking I/O (threads)."""
        with self._lock:
            return drive(op, self.transact, sink=sink)

    async def arun(self, op: Op[T], sink: EventSink | None = None) -> T:
        """Drive an operation from asyncio (the blocking exchange runs in a worker thread)."""
        return await run_async(op, lambda request: asyncio.to_thread(self.transact, request),
                               sink)

    def close(self) -> None:
        self.link.close()


async def run_async(op: Op[T], transact: Callable[[Request], Awaitable[bytes]],
                    sink: EventSink | None = None) -> T:
    """Drive a sans-I/O operation with any async ``transact(request) -> reply data``."""
    return await drive_async(op, transact, sink=sink)
