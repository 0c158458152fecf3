"""Easivend column board simulator: answers each 8-byte request; a request repeating the
last SN is a status check, never a second vend; the dispense reply comes when the motor has
finished.
"""

from __future__ import annotations

from typing import Any, ClassVar

from vendhw.boards.outcomes import Outcome
from vendhw.boards.profile import PROGRESS
from vendhw.framing.base import Frame
from vendhw.framing.easivend import DISPENSE, EasivendFramer
from vendhw.sim.base import Reply
from vendhw.sim.boards.base import BoardSimulator, VendPlan

FAILED_BIT = 0x01
"""Easivend CP_FAIL: set with every failure bit."""


# --- Easivend column --------------------------------------------------------------------


class EasivendSimulator(BoardSimulator):
    """An Easivend column board: SN memory as in ``CP_recv``, reply when the motor stops."""

    protocol = "easivend"
    FALLBACK: ClassVar[dict[str, str]] = {"jammed": "timeout"}
    """No jam bit: a stalled spiral does not get home in time."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.framer = EasivendFramer()
        self._deframer = self.framer.deframer("host")
        self.forget()

    def forget(self) -> None:
        self.sn = 0
        self.mt = 0
        self.column = 0
        self.status = 0
        self._pending = False

    def next_tick(self) -> float | None:
        return self.next_event()

    def tick(self, now: float) -> list[Reply]:
        plan = self.advance(now)
        if plan is None or not self._pending:
            return []
        self._pending = False
        self.status = self._status(plan)
        return [(0.0, self._reply(self.sn, self.mt, self.column, self.status))]

    def _status(self, plan: VendPlan) -> int:
        """STATUS bits: 0 for success, else the outcome's bit plus CP_FAIL (0x01)."""
        if plan.outcome == Outcome.DELIVERED.value:
            return 0
        return self.code_for(plan.outcome) | FAILED_BIT

    def _reply(self, sn: int, mt: int, column: int, status: int) -> bytes:
        return self.framer.build(direction="device", status=status, sn=sn, mt=mt, column=column)

    def receive(self, data: bytes, now: float) -> list[Reply]:
        replies = self.tick(now) if self.running is not None else []
        frames = [f for f in self._deframer.feed(data, now) if isinstance(f, Frame)]
        if self.silenced(now):
            return []
        for frame in frames:
            reply = self._answer(frame, now)
            if reply:
                replies.append((0.0, reply))
        return replies

    def _answer(self, frame: Frame, now: float) -> bytes | None:
        sn, mt, column = frame["sn"], frame["mt"], frame["column"]
        if self.running is not None:
            busy = self.code_for(PROGRESS) if self.has_code(PROGRESS) else 0x02
            if sn == self.sn:
                return self._reply(self.sn, self.mt, self.column, busy)
            return self._reply(sn, mt, column, busy)
        if sn != 0 and sn == self.sn:
            return self._reply(self.sn, self.mt, self.column, self.status)  # a status check
        self.sn, self.mt, self.column = sn, mt, column
        if mt != DISPENSE:
            return self._reply(sn, mt, column, self.status)
        plan = self.plan_vend(column, sn, now, drop_check=frame["d1"] == 1)
        if not plan.turned:
            self.status = self._status(plan)
            return self._reply(sn, mt, column, self.status)
        self.start(plan)
        self._pending = True
        return None
