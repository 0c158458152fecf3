"""A simulator behind a pipe whose clock only moves when the test or the host waits.

With a virtual clock the MDB ACK window (5 ms) is checked without depending on how busy the
machine is: the time between the peripheral's reply and the host's ACK is exactly the time
the test says the journal took (``clock.advance``), plus whatever the host waited for.
"""

from __future__ import annotations

from typing import Any

from vendhw.devices.cash import CashEvent
from vendhw.machine.cash import CashJournal
from vendhw.sim.base import Scheduler, Simulator
from vendhw.transport.base import Transport


class VirtualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def advance(self, seconds: float) -> None:
        self.now += seconds


class VirtualClockTransport(Transport):
    """The host's end of ``simulator``; reads move the virtual clock to the next reply."""

    def __init__(self, simulator: Simulator, clock: VirtualClock) -> None:
        super().__init__(f"sim://{simulator.name}", baudrate=simulator.baudrate)
        self.simulator = simulator
        self.clock = clock
        self._scheduler = Scheduler(simulator)

    def _read_some(self, timeout: float) -> bytes:
        out = self._scheduler.due(self.clock.now)
        if out:
            return out
        nxt = self._scheduler.next_deadline()
        if nxt is not None and nxt <= self.clock.now + timeout:
            self.clock.now = max(self.clock.now, nxt)
            return self._scheduler.due(self.clock.now)
        self.clock.advance(timeout)
        return b""

    def _write(self, data: bytes) -> None:
        self._scheduler.on_input(data, self.clock.now)

    def _close(self) -> None:
        pass


class SlowJournal:
    """A real CashJournal whose every commit takes ``commit_time`` on the virtual clock
    (an fsync on an SD card), so anything the host does after it is that much later."""

    def __init__(self, journal: CashJournal, clock: VirtualClock, commit_time: float) -> None:
        self.journal = journal
        self.clock = clock
        self.commit_time = commit_time

    def record(self, event: CashEvent) -> Any:
        self.clock.advance(self.commit_time)
        return self.journal.record(event)
