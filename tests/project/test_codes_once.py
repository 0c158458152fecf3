"""Protocol codes are declared once: as enums in the protocol's framing module, used by the
host, the simulator and the decoder. A module-level constant in a host or simulator named
like one of those enum members is a second declaration that can drift from the first."""

from __future__ import annotations

import ast
import importlib
from enum import IntEnum
from pathlib import Path

import pytest

import vendhw

ROOT = Path(vendhw.__file__).parent
# protocol -> the modules that must use its framing enums instead of their own constants
USERS = {
    "id003": ("devices/id003.py", "sim/id003.py"),
    "ssp": ("devices/ssp/__init__.py", "devices/ssp/tables.py", "devices/ssp/session.py",
            "devices/ssp/setup.py", "devices/ssp/events.py", "devices/ssp/core.py",
            "devices/ssp/payout.py", "devices/ssp/device.py", "sim/ssp.py"),
    "cctalk": ("devices/cctalk/__init__.py", "devices/cctalk/tables.py",
               "devices/cctalk/counter.py", "devices/cctalk/bus.py", "devices/cctalk/device.py",
               "devices/cctalk/acceptors.py", "devices/cctalk/hopper.py",
               "devices/cctalk/openers.py", "sim/cctalk.py"),
    "mdb": ("devices/mdb/__init__.py", "devices/mdb/tables.py", "devices/mdb/setup.py",
            "devices/mdb/polls.py", "devices/mdb/link.py", "devices/mdb/core.py",
            "devices/mdb/runner.py", "devices/mdb/changer.py", "devices/mdb/bill.py",
            "devices/mdb/openers.py", "sim/mdb.py", "devices/mdb_cashless/__init__.py",
            "devices/mdb_cashless/tables.py", "devices/mdb_cashless/polls.py",
            "devices/mdb_cashless/core.py", "devices/mdb_cashless/reader.py",
            "sim/mdb_cashless.py", "sim/mdb_ascii.py"),
    "fafb": ("devices/boards/fafb.py", "sim/boards/__init__.py", "sim/boards/base.py",
             "sim/boards/fafb.py", "sim/boards/board101.py", "sim/boards/easivend.py"),
}


def _enum_members(protocol: str) -> dict[str, int]:
    module = importlib.import_module(f"vendhw.framing.{protocol}")
    members: dict[str, int] = {}
    for value in vars(module).values():
        if isinstance(value, type) and issubclass(value, IntEnum) and value is not IntEnum \
                and value.__module__ == module.__name__:
            members.update({m.name: int(m) for m in value})
    return members


def _module_constants(path: Path) -> dict[str, int]:
    """Module-level ``NAME = <int>`` and ``A, B = <ints>`` assignments."""
    found: dict[str, int] = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if not isinstance(node, ast.Assign):
            continue
        for target in node.targets:
            names = target.elts if isinstance(target, ast.Tuple) else [target]
            values = (node.value.elts if isinstance(node.value, ast.Tuple)
                      else [node.value])
            if isinstance(node.value, ast.Call) or len(values) != len(names):
                continue
            for name, value in zip(names, values, strict=True):
                if isinstance(name, ast.Name) and isinstance(value, ast.Constant) \
                        and isinstance(value.value, int):
                    found[name.id] = value.value
    return found


@pytest.mark.parametrize("protocol", sorted(USERS))
def test_hosts_and_simulators_do_not_declare_codes_again(protocol: str) -> None:
    members = _enum_members(protocol)
    assert members, f"vendhw.framing.{protocol} declares no code enums"
    for rel in USERS[protocol]:
        again = {name: value for name, value in _module_constants(ROOT / rel).items()
                 if name in members}
        assert not again, f"{rel} declares {protocol} codes again: {again}"


def test_the_check_catches_a_second_declaration(tmp_path: Path) -> None:
    sample = tmp_path / "m.py"
    sample.write_text("IDLING, DISABLED = 0x11, 0x1A\nACK = 0x50\nOTHER = f(1)\n")
    assert _module_constants(sample) == {"IDLING": 0x11, "DISABLED": 0x1A, "ACK": 0x50}


def test_cctalk_header_names_come_from_the_one_enum() -> None:
    from vendhw.framing.cctalk import HEADERS, Header

    assert set(HEADERS) == {int(h) for h in Header}
    assert HEADERS[Header.REQUEST_PAYOUT_HIGH_LOW_STATUS] == "REQUEST PAYOUT HIGH / LOW STATUS"
    assert HEADERS[229] == "READ BUFFERED CREDIT OR ERROR CODES"
