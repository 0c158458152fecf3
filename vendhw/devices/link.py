"""FrameLink: the thin runner between a sans-I/O engine and a transport.

It writes frames, reads with the protocol's deadlines (response timeout for the first
byte, inter-byte gap for the rest), feeds the deframer and hands back whole frames. Garbage
is logged and counted, never fatal; silence becomes a :class:`~vendhw.errors.NoResponseError`
that names the port, the baud rate and the deadline. On single-wire buses (ccTalk) the
echo of our own transmission is removed before deframing.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable

from vendhw.errors import NoResponseError
from vendhw.framing.base import Direction, Frame, Framer, Garbage
from vendhw.transport.base import Transport

log = logging.getLogger(__name__)


class FrameLink:
    """Frames over one transport.

    :param incoming: who sends the frames we receive (``"device"`` for a host engine).
    :param gap: the protocol's inter-byte gap: a partial frame older than this is stale.
    :param echo: the line echoes what we send (ccTalk single-wire, some RS-485 adapters).
    """

    def __init__(
        self, transport: Transport, framer: Framer, *, incoming: Direction = "device",
        gap: float | None = None, echo: bool = False,
    ) -> None:
        self.transport = transport
        self.framer = framer
        self.gap = gap
        self.echo = echo
        self.deframer = framer.deframer(direction=incoming, gap=gap)
        self._frames: collections.deque[Frame] = collections.deque()
        self._echo_pending = b""
        self.garbage: collections.deque[Garbage] = collections.deque(maxlen=32)
        """The last garbage spans seen, for diagnostics and bug reports."""

    def send(self, data: bytes, *, discard_stale: bool = True) -> None:
        """Write one frame; stale input (late replies, noise) is dropped first and logged."""
        if discard_stale:
            stale = self.transport.discard_input()
            if stale:
                log.debug("%s: discarded %d stale bytes before sending: %s",
                          self.transport.url, len(stale), stale.hex(" "))
            self._frames.clear()
            self.deframer.reset()
        if self.echo:
            self._echo_pending += data
        self.transport.write(data)

    def _strip_echo(self, data: bytes) -> bytes:
        pending = self._echo_pending
        if not pending or not data:
            return data
        n = 0
        limit = min(len(pending), len(data))
        while n < limit and pending[n] == data[n]:
            n += 1
        if n == 0:
            # The echo was lost (a line without loop-back): stop expecting it.
            self._echo_pending = b""
            return data
        self._echo_pending = pending[n:]
        return data[n:]

    def receive(self, timeout: float, *, accept: Callable[[Frame], bool] | None = None) -> Frame:
        """The next frame (that ``accept`` likes) arriving within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            while self._frames:
                frame = self._frames.popleft()
                if accept is None or accept(frame):
                    return frame
                log.debug("%s: ignored frame %r", self.transport.url, frame)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NoResponseError(
                    f"no {self.framer.name} reply", port=self.transport.url,
                    baudrate=self.transport.baudrate, timeout=timeout,
                )
            # No gap on the read: return with the first complete frame instead of waiting for
            # the line to go quiet. While a partial frame is pending, read in slices of the
            # gap so that silence lets the deframer drop a stale false start and rescan it.
            pending = self.gap is not None and self.deframer.pending > 0
            data = self.transport.read(min(remaining, self.gap) if pending and self.gap
                                       else remaining)
            if not data and not pending:
                continue
            data = self._strip_echo(data)
            for item in self.deframer.feed(data, time.monotonic()):
                if isinstance(item, Frame):
                    self._frames.append(item)
                else:
                    self.garbage.append(item)
                    log.info("%s: skipped %d bytes: %s", self.transport.url, len(item.raw),
                             item.reason)

    def request(self, data: bytes, timeout: float, *,
                accept: Callable[[Frame], bool] | None = None) -> Frame:
        """Send one frame and return the reply frame."""
        self.send(data)
        return self.receive(timeout, accept=accept)

    def close(self) -> None:
        self.transport.close()
