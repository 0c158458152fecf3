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

from typing import TYPE_CHECKING

# Every name of the former single module stays importable from here (not only __all__).
# ruff: noqa: F401
from vendhw.boards.profile import BoardProfile, load_all
from vendhw.sim.boards.base import (
    _FALSE,
    _SLOT_FAULTS,
    _TRUE,
    DROP_TIME_MS,
    INVENTORY,
    MOTOR_TIME,
    RESET_TIME,
    BoardSimulator,
    SimVend,
    VendPlan,
    _as_bool,
    _first,
)
from vendhw.sim.boards.board101 import Board101Simulator
from vendhw.sim.boards.easivend import FAILED_BIT, EasivendSimulator
from vendhw.sim.boards.fafb import FaFbSimulator, _Report

if TYPE_CHECKING:
    from vendhw.sim import SimulatorSpec


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
        "__module__": __name__,  # not abc's: `vendhw sim NAME --help` prints this docstring
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
