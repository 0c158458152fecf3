"""The "101" board simulator: answers each 20-byte request; the vend result (code +
light-curtain time) is read with command 0x03 while and after the motor runs.
"""

from __future__ import annotations

from typing import Any, ClassVar

from vendhw.boards.outcomes import Outcome
from vendhw.boards.profile import PROGRESS
from vendhw.framing.base import Frame
from vendhw.framing.board101 import (
    CURTAIN_READ,
    READ_RESULT,
    READ_VERSION,
    START_MOTOR,
    Board101Framer,
)
from vendhw.sim.base import Reply
from vendhw.sim.boards.base import BoardSimulator, VendPlan, _first

# --- 101 --------------------------------------------------------------------------------


class Board101Simulator(BoardSimulator):
    """A "101" board: start motor, read result (code + light-curtain time), curtain."""

    protocol = "board101"
    FALLBACK: ClassVar[dict[str, str]] = {}
    VERSION = "SIM101-1.0"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.framer = Board101Framer()
        self._deframer = self.framer.deframer("host")
        self.address = int(self.profile.option("address", 1))
        self.index_base = int(self.profile.option("motor_index_base", 1))
        self._light = True
        self.forget()

    def forget(self) -> None:
        self.result = 0
        self.result_drop = 0

    def next_tick(self) -> float | None:
        return self.next_event()

    def tick(self, now: float) -> list[Reply]:
        self._finish(now)
        return []

    def _finish(self, now: float) -> None:
        plan = self.advance(now)
        if plan is not None:
            self._store(plan)

    def _store(self, plan: VendPlan) -> None:
        if plan.outcome in (Outcome.DELIVERED.value, Outcome.NOT_DROPPED.value):
            self.result = self.code_for(Outcome.DELIVERED.value)
        else:
            self.result = self.code_for(plan.outcome)
        self.result_drop = plan.drop_time_ms if plan.dropped and self._light else 0

    def receive(self, data: bytes, now: float) -> list[Reply]:
        self._finish(now)
        frames = [f for f in self._deframer.feed(data, now) if isinstance(f, Frame)]
        if self.silenced(now):
            return []
        replies: list[Reply] = []
        for frame in frames:
            if frame["address"] != self.address:
                continue
            reply = self._answer(frame, now)
            if reply:
                replies.append((0.0, reply))
        return replies

    def _answer(self, frame: Frame, now: float) -> bytes:
        code = frame["code"]
        build = self.framer.build
        if code == READ_VERSION:
            return build(direction="device", code=code, version=self.VERSION)
        if code == START_MOTOR:
            return build(direction="device", code=code, start_result=self._start(frame, now))
        if code == READ_RESULT:
            if self.running is not None:
                progress = self.profile.results.code_for(PROGRESS)
                return build(direction="device", code=code,
                             result=progress if progress is not None else self.result)
            return build(direction="device", code=code, result=self.result,
                         drop_time_ms=self.result_drop)
        if code == CURTAIN_READ:
            blocked = self._slot_faults.get("sensor_fault") is not None
            return build(direction="device", code=code, curtain=0 if blocked else 1)
        return build(direction="device", code=code)

    def _start(self, frame: Frame, now: float) -> int:
        status = self.profile.table("start_status")
        if self.running is not None:
            return _first(status.codes_for("busy") if status else [], 2)
        motor = frame["motor_index"] + self.index_base
        if motor not in self.inventory:
            return _first(status.codes_for("motor_fault") if status else [], 1)
        self._light = frame["light_type"] != 0
        plan = self.plan_vend(motor, None, now, drop_check=self._light)
        if plan.outcome == Outcome.SENSOR_FAULT.value:
            # Channel.md code 4: the curtain failed its self test, the motor never started.
            self.result, self.result_drop = self.code_for(plan.outcome), 0
            return _first(status.codes_for("ok") if status else [], 0)
        self.result, self.result_drop = 0, 0
        if not plan.turned:
            self._store(plan)
        else:
            self.start(plan)
        return _first(status.codes_for("ok") if status else [], 0)
