"""The two conversation styles of motor boards, over the same framers.

* :class:`HostMasterSession` (101, Easivend): the host writes a request and reads the reply
  within the profile's response timeout. A retry resends the *same bytes* (so the same
  sequence number): a board that got the first copy treats it as a repeat, not a new vend.
* :class:`BoardMasterSession` (FA FB): the board polls. A reader thread answers every POLL at
  once (well inside the spec's 100 ms window) with ACK, or with the command at the head of
  the queue; the command is resent on the next POLLs until the board ACKs it, up to the
  profile's retry count, always with the same bytes. Data the board sends on its own
  (dispensing status, status replies) is ACKed at once, de-duplicated (a resent report is
  the same report) and handed to the caller through :meth:`BoardMasterSession.take`.
  A board resends an un-ACKed report in place of its next POLL, so a copy is a frame equal
  to the previous report with no POLL in between; comparing further back would drop real
  reports after a board reset restarts its own PackNO counter.

Neither sleeps: every wait is a transport read with a deadline or a condition variable.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from vendhw.devices.link import FrameLink
from vendhw.errors import NoResponseError, VendhwError
from vendhw.framing.base import Frame, Framer, Garbage
from vendhw.transport.base import Transport

log = logging.getLogger(__name__)

READ_SLICE = 0.05
"""Board-master reader: longest single read, so the thread notices close() and silence."""

Accept = Callable[[Frame], bool]


class HostMasterSession:
    """Request and reply: the host speaks first (101 board, Easivend column board)."""

    def __init__(self, transport: Transport, framer: Framer, *, response_timeout: float,
                 retries: int, gap: float | None = None) -> None:
        self.link = FrameLink(transport, framer, incoming="device", gap=gap)
        self.transport = transport
        self.response_timeout = response_timeout
        self.retries = retries
        self.writes = 0
        """Frames written so far (tells "nothing was sent" from "sent, no reply")."""

    def send(self, data: bytes) -> None:
        """Write one frame (stale input is dropped first)."""
        self.link.send(data)
        self.writes += 1

    def receive(self, timeout: float, accept: Accept | None = None) -> Frame | None:
        """The next accepted frame within ``timeout``, or None on silence."""
        try:
            return self.link.receive(timeout, accept=accept)
        except NoResponseError:
            return None

    def request(self, data: bytes, *, accept: Accept | None = None,
                timeout: float | None = None, retries: int | None = None) -> Frame | None:
        """Send ``data``; on silence resend the same bytes up to ``retries`` times.

        Returns the reply, or None when every try went unanswered. Only use it for commands
        that are safe to repeat (reads, or requests whose sequence number makes a repeat a
        status check).
        """
        tries = 1 + (self.retries if retries is None else retries)
        wait = self.response_timeout if timeout is None else timeout
        for attempt in range(tries):
            if attempt:
                log.info("%s: no reply, resending the same frame (%d/%d)",
                         self.transport.url, attempt, tries - 1)
            self.send(data)
            reply = self.receive(wait, accept)
            if reply is not None:
                return reply
        return None

    @property
    def garbage(self) -> collections.deque[Garbage]:
        return self.link.garbage

    def close(self) -> None:
        self.link.close()


@dataclass(eq=False)
class Outgoing:
    """A command waiting for the board's next POLL, then for its ACK."""

    data: bytes
    label: str
    attempts: int = 0
    first_sent_at: float | None = None
    sent: threading.Event = field(default_factory=threading.Event)
    acked: threading.Event = field(default_factory=threading.Event)
    failed: threading.Event = field(default_factory=threading.Event)


class BoardMasterSession:
    """The board polls; a reader thread answers every POLL in time (FA FB).

    :param poll_period: the board's POLL interval (for wait budgets).
    :param silence_limit: no frame at all for this long means the board is gone.
    :param retries: resends of an un-ACKed command (same bytes) on the following POLLs.
    :param report_key: identity of a board report, to drop resent copies.
    """

    def __init__(self, transport: Transport, framer: Framer, *, poll_period: float,
                 silence_limit: float, retries: int, gap: float | None = None,
                 is_poll: Accept | None = None, is_ack: Accept | None = None,
                 ack: bytes | None = None,
                 report_key: Callable[[Frame], Hashable] | None = None) -> None:
        self.transport = transport
        self.framer = framer
        self.poll_period = poll_period
        self.silence_limit = silence_limit
        self.retries = retries
        self._is_poll = is_poll or (lambda f: f.get("command") == "POLL")
        self._is_ack = is_ack or (lambda f: f.get("command") == "ACK")
        self._ack = ack if ack is not None else framer.build(command="ACK")
        self._key = report_key or (lambda f: f.raw)
        self._deframer = framer.deframer(direction="device", gap=gap)
        self._cond = threading.Condition()
        self._queue: collections.deque[Outgoing] = collections.deque()
        self._current: Outgoing | None = None
        self._inbox: collections.deque[Frame] = collections.deque(maxlen=256)
        self._last_report: Hashable | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_rx: float | None = None
        self._last_poll: float | None = None
        self._error: VendhwError | None = None
        self.polls = 0
        self.garbage: collections.deque[Garbage] = collections.deque(maxlen=32)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start answering polls (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name=f"board-master {self.transport.url}")
            self._thread.start()

    @property
    def started(self) -> bool:
        return self._thread is not None

    def close(self) -> None:
        """Stop the reader thread and fail whatever is still queued."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2 * READ_SLICE + 1.0)
        with self._cond:
            for out in [*self._queue, *([self._current] if self._current else [])]:
                out.failed.set()
            self._queue.clear()
            self._current = None
            self._cond.notify_all()

    # -- state ------------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """A frame arrived within the silence limit."""
        with self._cond:
            return self._alive(time.monotonic())

    def _alive(self, now: float) -> bool:
        return (self._error is None and self._last_rx is not None
                and now - self._last_rx <= self.silence_limit)

    @property
    def error(self) -> VendhwError | None:
        """The transport error that stopped the reader, if any."""
        return self._error

    def wait_alive(self, timeout: float) -> bool:
        """Wait for a POLL (the board is talking); False when none came in time."""
        self.start()
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                now = time.monotonic()
                if self._last_poll is not None and self._alive(now):
                    return True
                if now >= deadline or self._error is not None:
                    return False
                self._cond.wait(deadline - now)

    # -- commands -------------------------------------------------------------------------

    def submit(self, data: bytes, label: str = "") -> Outgoing:
        """Queue a command for the next POLL."""
        out = Outgoing(data, label)
        with self._cond:
            self._queue.append(out)
        return out

    def cancel(self, out: Outgoing) -> bool:
        """Withdraw a command that was never written; False if it already went out."""
        with self._cond:
            if out in self._queue:
                self._queue.remove(out)
                out.failed.set()
                return True
            return False

    def wait_sent(self, out: Outgoing, timeout: float) -> bool:
        """Wait until the command was first written (handed over on a POLL)."""
        return self._wait(lambda: out.sent.is_set() or out.failed.is_set(),
                          timeout) and out.sent.is_set()

    def wait_ack(self, out: Outgoing, timeout: float) -> str:
        """``"acked"``, ``"failed"`` (resends exhausted), ``"dead"`` (silence) or ``"timeout"``."""
        ok = self._wait(lambda: out.acked.is_set() or out.failed.is_set()
                        or not self._alive(time.monotonic()), timeout)
        if out.acked.is_set():
            return "acked"
        if out.failed.is_set():
            return "failed"
        return "dead" if ok else "timeout"

    def take(self, accept: Accept, timeout: float) -> Frame | None:
        """Remove and return the first board report ``accept`` likes, waiting up to
        ``timeout``; None on timeout or when the board went silent."""
        found: list[Frame] = []

        def ready() -> bool:
            for frame in self._inbox:
                if accept(frame):
                    self._inbox.remove(frame)
                    found.append(frame)
                    return True
            return not self._alive(time.monotonic())

        self._wait(ready, timeout)
        return found[0] if found else None

    def drain(self, accept: Accept) -> list[Frame]:
        """Drop (and return) queued reports ``accept`` likes: stale ones before a command."""
        with self._cond:
            gone = [f for f in self._inbox if accept(f)]
            for frame in gone:
                self._inbox.remove(frame)
            return gone

    def _wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, self.silence_limit))
            return True

    # -- the reader thread ----------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.transport.read(READ_SLICE)
            except VendhwError as exc:
                with self._cond:
                    self._error = exc
                    self._cond.notify_all()
                log.warning("%s: board-master reader stopped: %s", self.transport.url, exc)
                return
            now = time.monotonic()
            items = self._deframer.feed(data, now)
            with self._cond:
                for item in items:
                    if isinstance(item, Frame):
                        try:
                            self._handle(item, now)
                        except VendhwError as exc:
                            self._error = exc
                            self._cond.notify_all()
                            return
                    else:
                        self.garbage.append(item)
                        log.info("%s: skipped %d bytes: %s", self.transport.url,
                                 len(item.raw), item.reason)
                self._cond.notify_all()

    def _handle(self, frame: Frame, now: float) -> None:
        """Answer one board frame (called with the lock held)."""
        self._last_rx = now
        if self._is_poll(frame):
            self._last_poll = now
            self._last_report = None  # a resent report never follows a POLL
            self.polls += 1
            if self._current is None and self._queue:
                self._current = self._queue.popleft()
            out = self._current
            if out is not None and out.attempts > self.retries:
                out.failed.set()
                self._current = None
                log.warning("%s: %s never acknowledged after %d tries", self.transport.url,
                            out.label, out.attempts)
                out = None
            if out is None:
                self.transport.write(self._ack)
                return
            self.transport.write(out.data)
            out.attempts += 1
            if out.first_sent_at is None:
                out.first_sent_at = now
                out.sent.set()
            return
        if self._is_ack(frame):
            if self._current is not None and self._current.attempts:
                self._current.acked.set()
                self._current = None
            return
        # Data the board sends on its own: ACK at once, then hand it over once.
        self.transport.write(self._ack)
        key = self._key(frame)
        if key == self._last_report:
            log.debug("%s: resent report ignored: %r", self.transport.url, frame)
            return
        self._last_report = key
        self._inbox.append(frame)


__all__ = ["BoardMasterSession", "HostMasterSession", "Outgoing"]
