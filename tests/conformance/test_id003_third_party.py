"""Kopachris/py-id003, a third-party ID-003 host, drives vendhw's acceptor simulator over a pty.

py-id003 is on no package registry, so CI cannot install it: the test runs when
``VENDHW_PY_ID003`` names its ``src/id003.py`` (for example a checkout of
github.com/Kopachris/py-id003) and is skipped otherwise, in CI too (see
``tests/conformance/ID003.md``). It uses py-id003's own ``power_on``/``initialize``,
``req_status``, ``send_command`` and ``read_response`` on a real pty.
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from vendhw.sim.id003 import Id003Simulator
from vendhw.transport import SimulatorOnPty


def _py_id003() -> ModuleType:
    path = os.environ.get("VENDHW_PY_ID003", "")
    if not path or not Path(path).is_file():
        pytest.skip("py-id003 is not installable from a registry: set VENDHW_PY_ID003 to its "
                    "src/id003.py (github.com/Kopachris/py-id003) to run this test")
    spec = importlib.util.spec_from_file_location("py_id003", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _until(bv: Any, wanted: set[int], seconds: float = 10.0) -> tuple[int, bytes]:
    deadline = time.monotonic() + seconds
    seen = []
    while time.monotonic() < deadline:
        status, data = bv.req_status()
        seen.append(status)
        if status in wanted:
            return status, data
        time.sleep(0.05)  # sleep-ok: a test pacing a third-party host's polls
    raise AssertionError(f"no status in {sorted(wanted)}; saw {seen[-10:]}")


def test_py_id003_powers_up_initialises_stacks_and_reads_rejects(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    id003 = _py_id003()
    monkeypatch.chdir(tmp_path)  # py-id003 may write debug.log / raw.log in the cwd
    sim = Id003Simulator(speed=10)
    with SimulatorOnPty(sim) as server:
        bv = id003.BillVal(server.port)
        try:
            assert bv.power_on() == id003.POW_UP  # GET_VERSION, RESET until ACK, initialize
            assert sim.received[:3] == [0x11, 0x88, 0x40]
            assert sim.settings[0xC0] == bytes((0x82, 0)) and sim.settings[0xC3] == b"\x00"
            _until(bv, {id003.IDLE})
            sim.insert_note(3)
            _status, data = _until(bv, {id003.ESCROW})
            assert data[0] == id003.DENOM_3 and bv.bv_denoms[data[0]] == "$5"
            bv.accepting_denom = bv.bv_denoms[data[0]]  # as py-id003's _on_escrow does
            bv.send_command(id003.STACK_1)
            assert bv.read_response()[0] == id003.ACK
            _until(bv, {id003.VEND_VALID})
            bv._on_vend_valid(b"")  # py-id003's handler: ACK
            _until(bv, {id003.STACKED})
            _until(bv, {id003.IDLE})
            assert sim.stacked == [0x63]
            sim.set_fault("rejected", 0x72)
            sim.insert_note(1)
            _status, data = _until(bv, {id003.REJECTING})
            assert id003.REJECT_REASONS[data[0]] == "Magnetic sensor error"
        finally:
            bv.com.close()
