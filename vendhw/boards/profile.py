"""Board profiles: one TOML file per board model, so a new board of a known family is data.

A profile declares the protocol family, serial settings, timing, capabilities, the slot
layout (how the operator names slots and which board slot number each name drives) and the
mapping of the board's own result codes onto :class:`~vendhw.devices.boards.Outcome`.
Drivers and simulators read everything family-specific from here; ``docs/boards.md`` and
``boards/README.md`` document the keys.
"""

from __future__ import annotations

import dataclasses
import re
import string
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vendhw import registry
from vendhw.boards.outcomes import Outcome
from vendhw.errors import ConfigurationError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

FAMILIES: dict[str, str] = registry.board_families()
"""Protocol family -> driver class (a view of :mod:`vendhw.registry`). A family is code; a
board model is a profile."""


def families() -> dict[str, str]:
    """Every board family: the built-in ones and those of plugins (``vendhw.protocols``)."""
    return {**registry.board_families(registry.plugins()), **FAMILIES}

CAPABILITIES = frozenset({"spiral", "belt", "lift", "drop_sensor", "door", "temperature",
                          "lock"})
"""Capability names a profile may declare."""

PROGRESS = "progress"
"""Pseudo-outcome in result tables: the code means "still working", not a final result."""
OK = "ok"
"""Pseudo-outcome in pre-vend status tables: the slot can vend."""
BUSY = "busy"
"""Pseudo-outcome: the board is busy with another vend; nothing was started."""

_PSEUDO = {PROGRESS, OK, BUSY}
_SERIAL_DEFAULTS: dict[str, Any] = {"baudrate": 9600, "bytesize": 8, "parity": "N",
                                    "stopbits": 1}


@dataclass(frozen=True)
class Timing:
    """A board's timing rules, in seconds (sources are cited in each profile file)."""

    response_timeout: float
    """Host-master: wait this long for a reply. Board-master: silence this long = board gone."""
    motor_run_limit: float
    """Longest a vend may take from command to final result."""
    drop_sensor_wait: float
    """Extra time the drop sensor may need after the motor stops."""
    poll_period: float
    """Board-master: the board's POLL interval. Host-master: how often to ask for a result."""
    retries: int = 3
    """How many times an idempotent command (same sequence) is resent."""

    @property
    def vend_deadline(self) -> float:
        """Seconds from an acknowledged vend command to the latest final result."""
        return self.motor_run_limit + self.drop_sensor_wait + self.response_timeout


@dataclass(frozen=True)
class CodeInfo:
    """One entry of a profile's code table."""

    outcome: str
    """An :class:`Outcome` value or a pseudo-outcome (``progress``, ``ok``, ``busy``)."""
    text: str


class CodeTable:
    """Board code -> (outcome, text), from a ``[results]``-style TOML table.

    In ``bits`` mode the code is a bit field: 0 means success and each set bit is looked up
    in table order (the first bit listed wins), as on the Easivend column board.
    """

    def __init__(self, entries: Mapping[int, CodeInfo], *, bits: bool = False,
                 name: str = "") -> None:
        self.entries = dict(entries)
        self.bits = bits
        self.name = name

    @classmethod
    def from_toml(cls, table: Mapping[str, Any], *, bits: bool, where: str) -> CodeTable:
        entries: dict[int, CodeInfo] = {}
        for key, value in table.items():
            try:
                code = int(key, 0)
            except ValueError:
                raise ConfigurationError(f"{where}: key {key!r} is not a number "
                                         "(write codes as 0x03 or 3)") from None
            if isinstance(value, str):
                outcome, text = value, ""
            elif isinstance(value, Mapping) and "outcome" in value:
                outcome, text = str(value["outcome"]), str(value.get("text", ""))
            else:
                raise ConfigurationError(
                    f"{where}: {key} must be an outcome name or {{ outcome = ..., text = ... }}")
            if outcome not in _PSEUDO and outcome not in {o.value for o in Outcome}:
                known = ", ".join([o.value for o in Outcome] + sorted(_PSEUDO))
                raise ConfigurationError(f"{where}: {key}: unknown outcome {outcome!r}; "
                                         f"known: {known}")
            entries[code] = CodeInfo(outcome, text)
        return cls(entries, bits=bits, name=where)

    def lookup(self, code: int) -> CodeInfo | None:
        """The entry for ``code`` (in bits mode, for the first listed bit that is set)."""
        if not self.bits or code == 0:
            return self.entries.get(code)
        for bit, info in self.entries.items():
            if bit and code & bit == bit:
                return info
        return None

    def describe(self, code: int) -> str:
        """Human text for ``code`` (every set bit in bits mode)."""
        if self.bits and code:
            texts = [info.text or info.outcome for bit, info in self.entries.items()
                     if bit and code & bit == bit]
            return ", ".join(texts) or "undocumented bits"
        info = self.entries.get(code)
        return (info.text or info.outcome) if info else "undocumented code"

    def code_for(self, outcome: str) -> int | None:
        """The first code this table maps to ``outcome`` (simulators use it)."""
        for code, info in self.entries.items():
            if info.outcome == outcome:
                return code
        return None

    def codes_for(self, outcome: str) -> list[int]:
        return [code for code, info in self.entries.items() if info.outcome == outcome]


class SlotMap:
    """Operator slot names <-> board slot numbers, built from a profile's ``[slots]``.

    The operator sees trays (rows, lift floors) and columns; ``label`` is a format string
    over ``tray`` and ``column`` (``"{tray}-{column}"``, ``"L{tray}-{column:02d}"``), and the
    same string, read backwards, parses what the operator types. A board slot number is
    ``first_motor + (tray - first_tray) * tray_stride + (column - first_column)``.
    """

    def __init__(self, table: Mapping[str, Any], where: str) -> None:
        try:
            trays = int(table["trays"])
            columns = int(table["columns"])
        except (KeyError, TypeError, ValueError):
            raise ConfigurationError(f"{where}: [slots] needs integer 'trays' and 'columns'"
                                     ) from None
        first_tray = int(table.get("first_tray", 1))
        first_column = int(table.get("first_column", 1))
        first_motor = int(table.get("first_motor", 1))
        stride = int(table.get("tray_stride", columns))
        self.label_format = str(table.get("label", "{tray}-{column}"))
        self._check_format(where)
        missing = {int(m) for m in table.get("missing", [])}
        self._by_label: dict[str, int] = {}
        self._labels: dict[int, str] = {}
        self._coords: dict[int, tuple[int, int]] = {}
        for t in range(first_tray, first_tray + trays):
            for c in range(first_column, first_column + columns):
                motor = first_motor + (t - first_tray) * stride + (c - first_column)
                if motor in missing:
                    continue
                if motor in self._labels:
                    raise ConfigurationError(f"{where}: slots overlap at board slot {motor} "
                                             "(tray_stride smaller than columns?)")
                label = self.label_format.format(tray=t, column=c)
                self._add(label, motor, where)
                self._coords[motor] = (t, c)
        for label, motor in dict(table.get("extra", {})).items():
            self._add(str(label), int(motor), where)
        if not self._labels:
            raise ConfigurationError(f"{where}: the slot layout has no slots")
        self._pattern = self._compile()

    def _check_format(self, where: str) -> None:
        fields = {f for _, f, _, _ in string.Formatter().parse(self.label_format) if f}
        if not fields <= {"tray", "column"}:
            raise ConfigurationError(f"{where}: slots.label may use only {{tray}} and "
                                     f"{{column}}, got {sorted(fields)}")

    def _add(self, label: str, motor: int, where: str) -> None:
        if motor < 0 or motor > 0xFFFF:
            raise ConfigurationError(f"{where}: board slot {motor} out of range")
        key = label.upper()
        if key in self._by_label:
            raise ConfigurationError(f"{where}: slot label {label!r} used twice")
        self._by_label[key] = motor
        self._labels.setdefault(motor, label)

    def _compile(self) -> re.Pattern[str]:
        parts = []
        for literal, field, _, _ in string.Formatter().parse(self.label_format):
            parts.append(re.escape(literal))
            if field:
                parts.append(rf"(?P<{field}>\d+)")
        return re.compile("".join(parts), re.IGNORECASE)

    def motors(self) -> list[int]:
        return sorted(self._labels)

    def label(self, motor: int) -> str:
        return self._labels.get(motor, str(motor))

    def coords(self, motor: int) -> tuple[int, int] | None:
        return self._coords.get(motor)

    def resolve(self, slot: str | int) -> int | None:
        """The board slot number for ``slot``, or None when it names no slot."""
        if isinstance(slot, bool):
            return None
        if isinstance(slot, int):
            return slot if slot in self._labels else None
        text = str(slot).strip()
        if text.isdigit() and int(text) in self._labels:
            return int(text)
        motor = self._by_label.get(text.upper())
        if motor is not None:
            return motor
        match = self._pattern.fullmatch(text)
        if match:
            values = {k: int(v) for k, v in match.groupdict().items()}
            label = self.label_format.format(**values)
            return self._by_label.get(label.upper())
        return None


class BoardProfile:
    """One board model, loaded from ``boards/<name>.toml``."""

    def __init__(self, data: Mapping[str, Any], *, name: str = "",
                 path: Path | None = None) -> None:
        where = str(path) if path else (name or "profile")
        self.path = path
        self.raw: dict[str, Any] = dict(data)
        self.name: str = str(data.get("name") or name)
        if not self.name:
            raise ConfigurationError(f"{where}: the profile has no name")
        family = data.get("family")
        if family not in families():
            raise ConfigurationError(f"{where}: family must be one of "
                                     f"{', '.join(sorted(families()))}, got {family!r}")
        self.family: str = str(family)
        self.description: str = str(data.get("description", ""))
        serial = dict(_SERIAL_DEFAULTS)
        serial.update(dict(data.get("serial", {})))
        self.serial: dict[str, Any] = serial
        self.timing = self._timing(data.get("timing", {}), where)
        caps = data.get("capabilities", [])
        if isinstance(caps, Mapping):
            caps = [k for k, v in caps.items() if v]
        unknown = set(caps) - CAPABILITIES
        if unknown:
            raise ConfigurationError(f"{where}: unknown capabilities {sorted(unknown)}; "
                                     f"known: {', '.join(sorted(CAPABILITIES))}")
        self.capabilities: frozenset[str] = frozenset(caps)
        self.protocol: dict[str, Any] = dict(data.get("protocol", {}))
        bits = self.protocol.get("result_mode", "code") == "bits"
        self.results = CodeTable.from_toml(data.get("results", {}), bits=bits,
                                           where=f"{where} [results]")
        if not self.results.entries:
            raise ConfigurationError(f"{where}: [results] maps no board code to an outcome")
        self.tables: dict[str, CodeTable] = {
            key: CodeTable.from_toml(value, bits=False, where=f"{where} [{key}]")
            for key, value in data.items()
            if key.endswith("_status") and isinstance(value, Mapping)
        }
        if "slots" not in data:
            raise ConfigurationError(f"{where}: the profile has no [slots] layout")
        self._slots = SlotMap(data["slots"], where)

    @staticmethod
    def _timing(table: Mapping[str, Any], where: str) -> Timing:
        names = [f.name for f in dataclasses.fields(Timing)]
        unknown = set(table) - set(names)
        if unknown:
            raise ConfigurationError(f"{where}: unknown [timing] keys {sorted(unknown)}")
        try:
            values: dict[str, Any] = {k: (int(v) if k == "retries" else float(v))
                                      for k, v in table.items()}
            return Timing(**values)
        except TypeError:
            raise ConfigurationError(
                f"{where}: [timing] needs response_timeout, motor_run_limit, "
                "drop_sensor_wait and poll_period (seconds)") from None
        except ValueError as exc:
            raise ConfigurationError(f"{where}: [timing]: {exc}") from None

    # -- the contract ---------------------------------------------------------------------

    def supports(self, capability: str) -> bool:
        """True when the board model has ``capability`` (``"drop_sensor"``, ``"lift"``...)."""
        return capability in self.capabilities

    def slot_to_motor(self, slot: str | int) -> int:
        """The board slot number for an operator slot name or a plain board number.

        :raises ~vendhw.errors.ConfigurationError: unknown slot (before anything moves).
        """
        motor = self._slots.resolve(slot)
        if motor is None:
            motors = self.slots()
            raise ConfigurationError(
                f"slot {slot!r} is not on board profile {self.name!r}: use a board slot "
                f"number ({self._number_ranges(motors)}) or a label like "
                f"{self.slot_label(motors[0])!r}..{self.slot_label(motors[-1])!r}")
        return motor

    def slots(self) -> list[int]:
        """Every valid board slot number, ascending."""
        return self._slots.motors()

    def slot_label(self, motor: int) -> str:
        """How the operator sees board slot ``motor`` (``"3-5"``, ``"L2-04"``)."""
        return self._slots.label(motor)

    def slot_coords(self, motor: int) -> tuple[int, int] | None:
        """``(tray, column)`` of a board slot, when it comes from the matrix layout."""
        return self._slots.coords(motor)

    # -- helpers for drivers, simulators and tools -----------------------------------------

    def interpret(self, code: int) -> tuple[str, str]:
        """``(outcome or pseudo-outcome, detail)`` for a board result code."""
        info = self.results.lookup(code)
        digits = 2 if code <= 0xFF else 4
        text = self.results.describe(code)
        detail = f"board code 0x{code:0{digits}X}: {text}"
        if info is None:
            return Outcome.UNKNOWN.value, detail + " (not in the profile's [results])"
        return info.outcome, detail

    def table(self, name: str) -> CodeTable | None:
        """A secondary code table such as ``[selection_status]``."""
        return self.tables.get(name)

    def option(self, key: str, default: Any = None) -> Any:
        """A family-specific ``[protocol]`` setting."""
        return self.protocol.get(key, default)

    def serial_options(self) -> dict[str, Any]:
        return dict(self.serial)

    def replace(self, *, timing: Mapping[str, float] | None = None,
                protocol: Mapping[str, Any] | None = None) -> BoardProfile:
        """A copy with some timing or protocol values changed (tests, field tuning)."""
        data = dict(self.raw)
        data["name"] = self.name
        if timing:
            data["timing"] = {**dict(self.raw.get("timing", {})), **dict(timing)}
        if protocol:
            data["protocol"] = {**dict(self.raw.get("protocol", {})), **dict(protocol)}
        return BoardProfile(data, name=self.name, path=self.path)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (``vendhw board profiles --json``)."""
        motors = self.slots()
        return {
            "name": self.name, "family": self.family, "description": self.description,
            "serial": dict(self.serial), "timing": dataclasses.asdict(self.timing),
            "capabilities": sorted(self.capabilities), "slots": len(motors),
            "first_slot": self.slot_label(motors[0]), "last_slot": self.slot_label(motors[-1]),
        }

    @staticmethod
    def _number_ranges(motors: Iterable[int]) -> str:
        runs: list[list[int]] = []
        for m in motors:
            if runs and m == runs[-1][1] + 1:
                runs[-1][1] = m
            else:
                runs.append([m, m])
        text = ", ".join(f"{a}" if a == b else f"{a}..{b}" for a, b in runs[:6])
        return text + (", ..." if len(runs) > 6 else "")

    def __repr__(self) -> str:
        return f"<BoardProfile {self.name} ({self.family}, {len(self.slots())} slots)>"


def _boards_dir() -> Path:
    from vendhw.resources import data_dir

    return data_dir("boards")


def profile_names() -> list[str]:
    """Names of the profiles shipped in ``boards/``, sorted."""
    return sorted(p.stem for p in _boards_dir().glob("*.toml"))


def load_profile(name_or_path: str | Path) -> BoardProfile:
    """Load a profile by name (from ``boards/``) or from a path to a ``.toml`` file.

    :raises ~vendhw.errors.ConfigurationError: unknown name (listing the known ones) or a
        malformed file (naming the key).
    """
    text = str(name_or_path)
    path = Path(text)
    looks_like_path = (isinstance(name_or_path, Path) or text.endswith(".toml")
                       or "/" in text or "\\" in text)
    if not looks_like_path:
        path = _boards_dir() / f"{text}.toml"
        if not path.is_file():
            raise ConfigurationError(
                f"unknown board profile {text!r}; known profiles: "
                f"{', '.join(profile_names()) or 'none'} (or pass a path to a .toml file)")
    if not path.is_file():
        raise ConfigurationError(f"board profile file {path} not found")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot read: {exc}") from None
    return BoardProfile(data, name=path.stem, path=path)


def load_all() -> list[BoardProfile]:
    """Every shipped profile (the simulators are generated from these)."""
    return [load_profile(name) for name in profile_names()]


__all__ = ["BUSY", "CAPABILITIES", "FAMILIES", "OK", "PROGRESS", "BoardProfile", "CodeInfo",
           "CodeTable", "SlotMap", "Timing", "families",
           "load_all", "load_profile", "profile_names"]
