"""A small in-memory Board that follows the B1 contract, for Machine and journal tests.

It counts every motor turn (``vends``), keeps an inventory and remembers each sequence
number's report the way FA FB / Easivend boards do, and can be told to fail at a chosen
point of a vend (silent before the write, link lost after it, exception after the ack).
"""

from __future__ import annotations

import re
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from vendhw.devices.boards import Board, Outcome, VendReport
from vendhw.errors import ConfigurationError, DisconnectedError, NoResponseError


class FakeProfile:
    """Ten slots labelled ``"1-1"``..``"1-10"`` (tray-column), board numbers 1..10."""

    def __init__(self, name: str = "fake", *, slots: int = 10,
                 capabilities: frozenset[str] = frozenset({"spiral", "drop_sensor"})) -> None:
        self.name = name
        self.family = "fake"
        self.description = "in-memory test board"
        self.capabilities = capabilities
        self._slots = list(range(1, slots + 1))

    def supports(self, capability: str) -> bool:
        return capability in self.capabilities

    def slots(self) -> list[int]:
        return list(self._slots)

    def slot_label(self, motor: int) -> str:
        return f"1-{motor}"

    def slot_to_motor(self, slot: str | int) -> int:
        if isinstance(slot, int) or (isinstance(slot, str) and slot.isascii() and slot.isdigit()):
            motor = int(slot)
        elif isinstance(slot, str) and slot.startswith("1-") and slot[2:].isascii() \
                and slot[2:].isdigit():
            motor = int(slot[2:])
        else:
            motor = -1
        if motor not in self._slots:
            raise ConfigurationError(f"{self.name}: unknown slot {slot!r}")
        return motor


@dataclass
class FakeBoard:
    """The contract's Board, in memory. ``fail`` picks how the next vend goes wrong."""

    profile: FakeProfile = field(default_factory=FakeProfile)
    sequence_range: tuple[int, int] | None = (1, 255)
    inventory: dict[int, int] = field(default_factory=dict)
    vends: list[tuple[int, int | None]] = field(default_factory=list)
    """(motor, seq) of every motor actually turned."""
    fail: str | None = None
    """How the next vend goes wrong: ``silent`` (NoResponseError, nothing written),
    ``refuse`` (ConfigurationError, nothing written), ``lost`` (written, then the link died:
    UNKNOWN), ``raise_after_ack`` (DisconnectedError after the ack), ``jam``, ``empty``."""
    remember: bool = True
    """Whether query_vend can answer (False plays a board that forgot)."""
    on_vend: Callable[[int, int | None], None] | None = None
    closed: bool = False
    queries: list[tuple[int, int]] = field(default_factory=list)
    _reports: dict[int, VendReport] = field(default_factory=dict)
    _last_seq: int | None = None

    def __post_init__(self) -> None:
        for motor in self.profile.slots():
            self.inventory.setdefault(motor, 5)
        self.transport = types.SimpleNamespace(url="fake://board")

    def vend(self, motor: int, seq: int | None, *, drop_sensor: bool = True,
             on_sent: Callable[[], None] | None = None,
             on_ack: Callable[[], None] | None = None) -> VendReport:
        fail, self.fail = self.fail, None
        if fail == "silent":
            raise NoResponseError("no fake reply", port="fake://board", timeout=0.1)
        if fail == "refuse":
            raise ConfigurationError(f"fake board refuses motor {motor}")
        if seq is not None and seq == self._last_seq and seq in self._reports:
            # The last sequence number again is a retry: report, never turn again.
            if on_sent:
                on_sent()
            return self._reports[seq]
        if on_sent:
            on_sent()
        self._last_seq = seq
        if fail == "lost":
            self._turn(motor, seq)
            return VendReport(Outcome.UNKNOWN, None, None, "link lost after the command")
        if on_ack:
            on_ack()
        if fail == "raise_after_ack":
            self._turn(motor, seq)
            raise DisconnectedError("fake://board: unplugged")
        if fail == "jam":
            report = VendReport(Outcome.JAMMED, 0x03, None, "jammed")
        elif fail == "empty" or self.inventory.get(motor, 0) <= 0:
            report = VendReport(Outcome.EMPTY, 0x02, None, "empty")
        else:
            self._turn(motor, seq)
            report = VendReport(Outcome.DELIVERED, 0x02, 42 if drop_sensor else None, "ok")
        if seq is not None:
            self._reports[seq] = report
        return report

    def _turn(self, motor: int, seq: int | None) -> None:
        self.vends.append((motor, seq))
        self.inventory[motor] = max(0, self.inventory.get(motor, 0) - 1)
        if seq is not None:
            self._reports[seq] = VendReport(Outcome.DELIVERED, 0x02, 42, "ok")
        if self.on_vend:
            self.on_vend(motor, seq)

    def query_vend(self, motor: int, seq: int) -> VendReport | None:
        self.queries.append((motor, seq))
        if self.sequence_range is None or not self.remember:
            return None
        return self._reports.get(seq)

    def status(self) -> dict[str, Any]:
        return {"ok": True, "door_open": False}

    def selftest(self) -> dict[str, Any]:
        return {"ok": True, "motors": self.profile.slots()}

    def close(self) -> None:
        self.closed = True


FAST_TIMING = {"poll_period": 0.05, "motor_run_limit": 0.6, "drop_sensor_wait": 0.1,
               "response_timeout": 0.3}
"""Board timings for tests: tens of milliseconds instead of the hardware's seconds."""


def write_fast_profile(folder: Path, name: str) -> Path:
    """Copy profile ``name`` to ``folder`` with :data:`FAST_TIMING` (same name, same slots).

    The CLI and subprocesses take a profile path, so this is how they get test timings.
    """
    from vendhw.devices.boards import load_profile

    source = load_profile(name).path
    assert source is not None
    text = Path(source).read_text(encoding="utf-8")
    for key, value in FAST_TIMING.items():
        text, count = re.subn(rf"(?m)^({key}\s*=\s*)[0-9.]+", rf"\g<1>{value}", text)
        assert count == 1, (name, key)
    # The 101 light-curtain self test waits 1 s between "on" and "read" (vendor doc).
    text = re.sub(r"(?m)^(curtain_settle\s*=\s*)[0-9.]+", r"\g<1>0.05", text)
    target = folder / f"{name}.toml"
    target.write_text(text, encoding="utf-8")
    return target


def as_board(fake: FakeBoard) -> Board:
    """The fake, typed as the contract's Board (it follows the contract structurally)."""
    return cast(Board, fake)
