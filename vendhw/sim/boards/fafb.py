"""FA FB board simulator (XY/JSK VMC).

The VMC is bus master. It POLLs every poll period (``tick``), ACKs commands, sends
dispensing status reports until the host ACKs them, and remembers the PackNO of the last
host command: a command with the same PackNO is acknowledged and *not* executed, and the
report of that command is sent again (the host's retry and query mechanism).
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from vendhw.boards.profile import PROGRESS
from vendhw.framing.base import Frame
from vendhw.framing.fafb import ACK, MAX_RESENDS, POLL, FaFbFramer
from vendhw.framing.fafb import Command as FaFbCommand
from vendhw.sim.base import Reply
from vendhw.sim.boards.base import BoardSimulator, _first

# --- FA FB ----------------------------------------------------------------------------------


@dataclass
class _Report:
    data: bytes
    attempts: int = 0


class FaFbSimulator(BoardSimulator):
    """An XY/JSK VMC: bus master, polls the host, PackNO makes a repeat harmless."""

    protocol = "fafb"
    FALLBACK: ClassVar[dict[str, str]] = {"not_dropped": "jammed", "sensor_fault": "delivered"}
    """The FA FB spec has no drop-sensor codes: a product that did not pass the sensor ends as
    "selection jammed"; with a broken sensor the VMC cannot tell, and reports success."""

    def __init__(self, *, poll_period: float | str | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.framer = FaFbFramer()
        self.poll_period = float(poll_period) if poll_period not in (None, "") else \
            self.profile.timing.poll_period
        self._deframer = self.framer.deframer("host")
        self._poll = self.framer.build(code=POLL)
        self._ack = self.framer.build(code=ACK)
        self._outbox: collections.deque[_Report] = collections.deque()
        self._next_poll = time.monotonic()
        self._pack = 0
        self._last_host_pack: int | None = None
        self._last_report: tuple[int, dict[str, Any]] | None = None
        self._running_pack: int | None = None
        self.commands: list[Frame] = []
        """Every command the host sent that the VMC executed (not repeats)."""
        self.polls_sent = 0
        self.polls_unanswered = 0
        """POLLs the host let pass without an answer before the next one (spec: 100 ms),
        counted from the host's first answer: POLLs before it opened the port are not its."""
        self._poll_open = False
        self._host_answered = False

    def forget(self) -> None:
        self._outbox.clear()
        self._pack = 0
        self._last_host_pack = None
        self._last_report = None
        self._running_pack = None

    # -- clock ------------------------------------------------------------------------------

    def next_tick(self) -> float | None:
        event = self.next_event()
        return self._next_poll if event is None else min(self._next_poll, event)

    def tick(self, now: float) -> list[Reply]:
        self._finish(now)
        if now < self._next_poll:
            return []
        # Never fall more than one period behind (no burst of stale POLLs).
        self._next_poll = max(self._next_poll + self.poll_period,
                              time.monotonic() - self.poll_period / 2)
        if self.silenced(now):
            return []
        while self._outbox and self._outbox[0].attempts > MAX_RESENDS:
            self._outbox.popleft()  # the host never ACKed it: the VMC gives up
        if self._outbox:
            report = self._outbox[0]
            report.attempts += 1
            return [(0.0, report.data)]
        if self._poll_open and self._host_answered:
            self.polls_unanswered += 1
        self.polls_sent += 1
        self._poll_open = True
        return [(0.0, self._poll)]

    def _finish(self, now: float) -> None:
        plan = self.advance(now)
        if plan is None:
            return
        self._report(FaFbCommand.DISPENSING_STATUS, plan.seq, status=self._vend_code(plan.outcome),
                     selection=plan.motor)

    def _vend_code(self, outcome: str) -> int:
        return self.code_for(outcome)

    # -- host input -------------------------------------------------------------------------

    def receive(self, data: bytes, now: float) -> list[Reply]:
        self._finish(now)
        frames = [f for f in self._deframer.feed(data, now) if isinstance(f, Frame)]
        if self.silenced(now):
            return []
        replies: list[Reply] = []
        for frame in frames:
            code = frame["code"]
            self._poll_open = False
            self._host_answered = True
            if code == ACK:
                if self._outbox and self._outbox[0].attempts:
                    self._outbox.popleft()
                continue
            if code == POLL:
                continue
            replies.append((0.0, self._ack))
            pack = frame["pack_no"]
            if pack is not None and pack == self._last_host_pack:
                # A resend (or a query) of the last command: never execute it twice.
                if self._last_report is not None:
                    rcode, fields = self._last_report
                    self._queue(rcode, **fields)
                continue
            self._last_host_pack = pack
            self._last_report = None
            self.commands.append(frame)
            self._execute(frame, now)
        return replies

    def _execute(self, frame: Frame, now: float) -> None:
        code = frame["code"]
        pack = frame["pack_no"]
        if code == FaFbCommand.CHECK_SELECTION:
            selection = frame.get("selection", 0)
            self._report(FaFbCommand.SELECTION_STATUS, pack,
                         status=self._selection_status(selection), selection=selection)
        elif code in (FaFbCommand.SELECT_TO_BUY, FaFbCommand.DRIVE_SELECTION):
            motor = frame.get("selection", 0)
            if self.running is not None:
                self._report(FaFbCommand.DISPENSING_STATUS, pack, status=0xFF,  # terminated
                             selection=motor)
                return
            drop = bool(frame.get("drop_sensor", True)) and self.profile.supports("drop_sensor")
            plan = self.plan_vend(motor, pack, now, drop_check=drop)
            if not plan.turned:
                self._report(FaFbCommand.DISPENSING_STATUS, pack,
                             status=self._vend_code(plan.outcome), selection=motor)
                return
            self.start(plan)
            self._running_pack = pack
            progress = self.profile.results.code_for(PROGRESS)
            if progress is not None:
                self._report(FaFbCommand.DISPENSING_STATUS, pack, status=progress,
                             selection=motor)
        elif code == FaFbCommand.STATUS_REQUEST:
            self._report(FaFbCommand.STATUS, pack, status=0)
        elif code == FaFbCommand.MACHINE_STATUS_REQUEST:
            self._report_full_status(pack)
        elif code == FaFbCommand.SET_POLL_INTERVAL and frame.get("interval"):
            self.poll_period = min(2.0, 0.1 * int(frame["interval"]))

    def _selection_status(self, motor: int) -> int:
        table = self.profile.table("selection_status")
        if table is None:
            return 0x01
        if motor not in self.inventory:
            return _first(table.codes_for("motor_fault"), 0x03)
        if self.is_empty(motor):
            return _first(table.codes_for("empty"), 0x02)
        return _first(table.codes_for("ok"), 0x01)

    def _report(self, code: int, pack: int | None, **fields: Any) -> None:
        """Queue a report; remember it as the last command's report if it answers it."""
        if pack is not None and pack == self._last_host_pack:
            self._last_report = (code, fields)
        self._queue(code, **fields)

    def _queue(self, code: int, **fields: Any) -> None:
        self._pack = self._pack % 255 + 1
        self._outbox.append(_Report(self.framer.build(code=code, pack_no=self._pack, **fields)))

    def _report_full_status(self, pack: int | None) -> None:
        text = bytes([0, 0, 0, 0, 0]) + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
        text += b"SIM0000001" + bytes([5, 0, 0, 0, 0, 0, 0, 0]) + bytes([40] + [0] * 7)
        self._pack = self._pack % 255 + 1
        data = self.framer.build(code=FaFbCommand.MACHINE_STATUS, pack_no=self._pack, text=text)
        if pack is not None and pack == self._last_host_pack:
            self._last_report = None
        self._outbox.append(_Report(data))
