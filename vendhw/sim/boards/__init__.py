"""Motor-board simulators: one per board profile in ``boards/``, named after it.

Each simulated machine has an inventory per slot, a motor and a drop sensor, and speaks its
family's wire protocol through the framers (never the host drivers):

* FA FB: the VMC is bus master. It POLLs every poll period (``tick``), ACKs commands, sends
  dispensing status reports until the host ACKs them, and remembers the PackNO of the last
  host command: a command with the same PackNO is acknowledged and *not* executed, and the
  report of that command is sent again (the host's retry and query mechanism).
* 101: answers each 20-byte request; the vend result (code + light-curtain time) is read
  with command 0x03 while and after the motor runs.
* Easivend column: answers each 8-byte request; a request repeating the last SN is a status
  check, never a second vend; the dispense reply comes when the motor has finished.

Device faults (``set_fault`` or URL options, e.g. ``sim://fafb-xy?jam=3``): ``empty``,
``jam``, ``motor_fault``, ``no_drop`` (product stuck), ``sensor_fault`` (value: a board slot
number, or true for every slot), ``slow_motor`` (seconds per vend), ``reset_mid_vend`` (the
board resets half-way through the next vend, after the product fell), plus the line faults
(``silent``...). Options: ``inventory`` (items per slot, default 5), ``motor_time`` (seconds
per vend, default 0.05), ``motor_limit`` (the board's own motor timeout, default the
profile's run limit), ``reset_time``, ``poll_period`` (FA FB), ``state_file`` (JSON file that
keeps inventory and vends across simulator restarts; nothing persists without it).
"""

from __future__ import annotations

import collections
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from vendhw.boards.outcomes import Outcome
from vendhw.boards.profile import PROGRESS, BoardProfile, load_all, load_profile
from vendhw.errors import ConfigurationError
from vendhw.framing.base import Frame
from vendhw.framing.board101 import (
    CURTAIN_READ,
    READ_RESULT,
    READ_VERSION,
    START_MOTOR,
    Board101Framer,
)
from vendhw.framing.easivend import DISPENSE, EasivendFramer
from vendhw.framing.fafb import ACK, MAX_RESENDS, POLL, FaFbFramer
from vendhw.framing.fafb import Command as FaFbCommand
from vendhw.options import FALSE_WORDS, TRUE_WORDS
from vendhw.sim.base import Reply, Simulator

if TYPE_CHECKING:
    from vendhw.sim import SimulatorSpec

MOTOR_TIME = 0.05
"""Default seconds per simulated vend (fast tests); real spirals take 2-5 s."""
RESET_TIME = 0.5
"""Default seconds a simulated board stays silent while it resets."""
DROP_TIME_MS = 35
"""Light-curtain time the simulated product takes (101 reports 1..200 ms)."""
INVENTORY = 5
FAILED_BIT = 0x01
"""Easivend CP_FAIL: set with every failure bit."""

_SLOT_FAULTS = ("empty", "jam", "motor_fault", "no_drop", "sensor_fault")
_TRUE = TRUE_WORDS | {"all"}
_FALSE = FALSE_WORDS | {"none"}


@dataclass(frozen=True)
class SimVend:
    """One motor the simulator actually turned."""

    motor: int
    seq: int | None
    outcome: str
    """What the board will report: an :class:`Outcome` value."""
    dropped: bool
    """A product really left the slot."""
    at: float


@dataclass
class VendPlan:
    motor: int
    seq: int | None
    outcome: str
    turned: bool
    dropped: bool
    ends_at: float
    drop_time_ms: int
    reset_at: float | None = None


class BoardSimulator(Simulator):
    """Shared machine model: inventory, motor, drop sensor, device faults."""

    kind = "board"
    profile_name: ClassVar[str] = ""
    device_faults = (*_SLOT_FAULTS, "slow_motor", "reset_mid_vend")
    FALLBACK: ClassVar[dict[str, str]] = {}
    """Outcome to report when the profile has no code for the true one (family-specific)."""

    def __init__(self, *, profile: BoardProfile | str | None = None,
                 inventory: int | str = INVENTORY, motor_time: float | str = MOTOR_TIME,
                 motor_limit: float | str | None = None, reset_time: float | str = RESET_TIME,
                 drop_time_ms: int | str = DROP_TIME_MS, fault: str = "",
                 state_file: str | None = None, **options: Any) -> None:
        faults = {k: options.pop(k) for k in list(options) if k in self.device_faults}
        unknown = sorted(set(options) - {"baudrate"})
        if unknown:
            raise ConfigurationError(
                f"{self.name}: unknown simulator options {unknown}; options: inventory, "
                "motor_time, motor_limit, reset_time, drop_time_ms, fault, state_file, and "
                f"the faults {', '.join(self.device_faults)}")
        options.pop("baudrate", None)  # a pty or memory pipe has no line speed
        super().__init__(**options)
        if isinstance(profile, BoardProfile):
            self.profile = profile
        else:
            self.profile = load_profile(profile or self.profile_name)
        self.motor_time = float(motor_time)
        self.motor_limit = float(motor_limit) if motor_limit not in (None, "") else \
            self.profile.timing.motor_run_limit
        self.reset_time = float(reset_time)
        self.drop_time_ms = int(drop_time_ms)
        self.inventory: dict[int, int] = {m: int(inventory) for m in self.profile.slots()}
        self.vends: list[SimVend] = []
        self.resets = 0
        self._slot_faults: dict[str, set[int] | bool] = {}
        self.slow_motor = 0.0
        self.reset_mid_vend = False
        self.silent_until = 0.0
        self.running: VendPlan | None = None
        self._state_file = Path(state_file) if state_file else None
        if self._state_file and self._state_file.is_file():
            self._load_state()
        for name, value in faults.items():
            self.set_fault(name, value)
        for item in filter(None, (s.strip() for s in str(fault).split(","))):
            name, _, value = item.partition(":")
            self.set_fault(name, value if value else True)

    # -- faults ---------------------------------------------------------------------------

    def set_fault(self, name: str, value: Any = True) -> None:
        """Device faults by slot (``value`` = board slot number, or True for all), the
        ``slow_motor`` seconds, the one-shot ``reset_mid_vend``, or a line fault."""
        if name in _SLOT_FAULTS:
            self._set_slot_fault(name, value)
        elif name == "slow_motor":
            self.slow_motor = 0.0 if value is False or str(value).lower() in _FALSE \
                else float(value if not isinstance(value, bool) else 30.0)
        elif name == "reset_mid_vend":
            self.reset_mid_vend = _as_bool(value)
        else:
            super().set_fault(name, value)

    def _set_slot_fault(self, name: str, value: Any) -> None:
        if isinstance(value, bool) or str(value).strip().lower() in _TRUE | _FALSE:
            on = value if isinstance(value, bool) else str(value).strip().lower() in _TRUE
            if on:
                self._slot_faults[name] = True
            else:
                self._slot_faults.pop(name, None)
            return
        items = value if isinstance(value, (list, tuple, set)) else \
            str(value).replace(";", ",").split(",")
        current = self._slot_faults.get(name)
        motors: set[int] = current if isinstance(current, set) else set()
        for item in items:
            motors.add(self.profile.slot_to_motor(item if isinstance(item, int)
                                                  else str(item).strip()))
        self._slot_faults[name] = motors

    def fault_on(self, name: str, motor: int) -> bool:
        value = self._slot_faults.get(name)
        return value is True or (isinstance(value, set) and motor in value)

    def is_empty(self, motor: int) -> bool:
        return self.fault_on("empty", motor) or self.inventory.get(motor, 0) <= 0

    def refill(self, count: int = INVENTORY) -> None:
        for motor in self.inventory:
            self.inventory[motor] = count

    def vend_count(self, seq: int | None = None, motor: int | None = None) -> int:
        """How many times a motor really turned (for one seq and/or motor)."""
        return sum(1 for v in self.vends
                   if (seq is None or v.seq == seq) and (motor is None or v.motor == motor))

    # -- the machine model ----------------------------------------------------------------

    def code_for(self, outcome: str) -> int:
        """The profile's code for ``outcome`` (or the family fallback's code)."""
        code = self.profile.results.code_for(outcome)
        if code is None and outcome in self.FALLBACK:
            code = self.profile.results.code_for(self.FALLBACK[outcome])
        if code is None:
            raise ConfigurationError(f"{self.profile.name}: the profile maps no code to "
                                     f"{outcome!r} and the simulator has no fallback")
        return code

    def has_code(self, outcome: str) -> bool:
        return self.profile.results.code_for(outcome) is not None

    def plan_vend(self, motor: int, seq: int | None, now: float, *,
                  drop_check: bool) -> VendPlan:
        """Decide now what this vend will come to (the motor then runs for a while)."""
        if motor not in self.inventory or self.fault_on("motor_fault", motor):
            return VendPlan(motor, seq, Outcome.MOTOR_FAULT.value, False, False,
                            now + min(self.motor_time, 0.01), 0)
        duration = self.slow_motor or self.motor_time
        if duration > self.motor_limit:
            return self._plan(motor, seq, now, Outcome.TIMEOUT, self.motor_limit, drop=False)
        if self.fault_on("jam", motor):
            return self._plan(motor, seq, now, Outcome.JAMMED, duration, drop=False)
        if self.is_empty(motor) or self.fault_on("no_drop", motor):
            outcome = Outcome.NOT_DROPPED if drop_check else Outcome.DELIVERED
            return self._plan(motor, seq, now, outcome, duration, drop=False)
        if self.fault_on("sensor_fault", motor) and drop_check:
            return self._plan(motor, seq, now, Outcome.SENSOR_FAULT, duration, drop=True)
        return self._plan(motor, seq, now, Outcome.DELIVERED, duration, drop=True)

    def _plan(self, motor: int, seq: int | None, now: float, outcome: Outcome,
              duration: float, *, drop: bool) -> VendPlan:
        plan = VendPlan(motor, seq, outcome.value, True, drop, now + duration,
                        self.drop_time_ms if drop else 0)
        if self.reset_mid_vend:
            self.reset_mid_vend = False
            plan.reset_at = now + duration / 2
        return plan

    def start(self, plan: VendPlan) -> None:
        """The motor starts: record it and take the product out of the slot."""
        if not plan.turned:
            return
        self.running = plan
        self.vends.append(SimVend(plan.motor, plan.seq, plan.outcome, plan.dropped,
                                  plan.ends_at))
        if plan.dropped or plan.reset_at is not None:
            self.inventory[plan.motor] = max(0, self.inventory[plan.motor] - 1)
        self._save_state()

    def advance(self, now: float) -> VendPlan | None:
        """Run the clock: a reset or the end of the running vend. Returns a finished vend."""
        plan = self.running
        if plan is None:
            return None
        if plan.reset_at is not None and now >= plan.reset_at:
            self.running = None
            self.reset(plan.reset_at)
            return None
        if now >= plan.ends_at:
            self.running = None
            return plan
        return None

    def reset(self, now: float) -> None:
        """Power-cycle: silent for ``reset_time``, volatile memory lost."""
        self.resets += 1
        self.silent_until = now + self.reset_time
        self.forget()

    def forget(self) -> None:
        """Clear the protocol memory a reset loses (subclasses)."""

    def silenced(self, now: float) -> bool:
        return now < self.silent_until

    def next_event(self) -> float | None:
        plan = self.running
        if plan is None:
            return None
        return plan.reset_at if plan.reset_at is not None else plan.ends_at

    # -- optional persistence ---------------------------------------------------------------

    def _load_state(self) -> None:
        assert self._state_file is not None
        try:
            data = json.loads(self._state_file.read_text(encoding="utf-8"))
            for key, value in dict(data.get("inventory", {})).items():
                if int(key) in self.inventory:
                    self.inventory[int(key)] = int(value)
            self.vends = [SimVend(**v) for v in data.get("vends", [])]
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigurationError(f"simulator state file {self._state_file}: {exc}") from None

    def _save_state(self) -> None:
        if self._state_file is None:
            return
        data = {"inventory": self.inventory, "vends": [asdict(v) for v in self.vends]}
        tmp = self._state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        tmp.replace(self._state_file)

    def snapshot(self) -> dict[str, Any]:
        """JSON-able state for tests and ``vendhw sim`` status lines."""
        return {"inventory": dict(self.inventory), "vends": [asdict(v) for v in self.vends],
                "resets": self.resets}


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() not in _FALSE


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


def _first(values: list[int], default: int) -> int:
    return values[0] if values else default


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


# --- registry ---------------------------------------------------------------------------

SIMULATORS: dict[str, type[BoardSimulator]] = {
    "fafb": FaFbSimulator,
    "board101": Board101Simulator,
    "easivend": EasivendSimulator,
}


def simulator_class(profile: BoardProfile) -> type[BoardSimulator]:
    """A simulator class named after ``profile`` (so ``sim://<profile>`` finds it)."""
    base = SIMULATORS[profile.family]
    return type(f"{base.__name__}[{profile.name}]", (base,), {
        "name": profile.name, "profile_name": profile.name,
        "baudrate": int(profile.serial.get("baudrate", 9600)),
        "description": f"simulated {profile.description}",
    })


def specs() -> list[SimulatorSpec]:
    """One simulator per shipped profile."""
    from vendhw.sim import SimulatorSpec

    return [SimulatorSpec.of(simulator_class(p)) for p in load_all()]


__all__ = ["Board101Simulator", "BoardSimulator", "EasivendSimulator", "FaFbSimulator",
           "SimVend", "simulator_class", "specs"]
