"""The motor-board simulator core every family shares: an inventory per slot, a motor and a
drop sensor, device faults and optional persistence.

Device faults (``set_fault`` or URL options, e.g. ``sim://fafb-xy?jam=3``): ``empty``,
``jam``, ``motor_fault``, ``no_drop`` (product stuck), ``sensor_fault`` (value: a board slot
number, or true for every slot), ``slow_motor`` (seconds per vend), ``reset_mid_vend`` (the
board resets half-way through the next vend, after the product fell), plus the line faults
(``silent``...). Options: ``inventory`` (items per slot, default 5), ``motor_time`` (seconds
per vend, default 0.05), ``motor_limit`` (the board's own motor timeout, default the
profile's run limit), ``reset_time``, ``state_file`` (JSON file that keeps inventory and
vends across simulator restarts; nothing persists without it).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

from vendhw.boards.outcomes import Outcome
from vendhw.boards.profile import BoardProfile, load_profile
from vendhw.errors import ConfigurationError
from vendhw.options import FALSE_WORDS, TRUE_WORDS
from vendhw.sim.base import Simulator

MOTOR_TIME = 0.05
"""Default seconds per simulated vend (fast tests); real spirals take 2-5 s."""
RESET_TIME = 0.5
"""Default seconds a simulated board stays silent while it resets."""
DROP_TIME_MS = 35
"""Light-curtain time the simulated product takes (101 reports 1..200 ms)."""
INVENTORY = 5

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


def _first(values: list[int], default: int) -> int:
    return values[0] if values else default
