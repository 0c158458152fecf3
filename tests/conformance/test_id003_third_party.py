"""Kopachris/py-id003, a third-party ID-003 host, drives vendhw's acceptor simulator over a pty.

py-id003 is on no package registry, so CI cannot install it: the test runs when
``VENDHW_PY_ID003`` names its ``src/id003.py`` (for example a checkout of
github.com/Kopachris/py-id003) and is skipped otherwise, in CI too (see
``tests/conformance/ID003.md``). It uses py-id003's own ``power_on``/``initialize``,
``req_status``, ``send_command`` and ``read_response`` on a real pty.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from vendhw.sim.id003 import Id003Simulator
from vendhw.transport import SimulatorOnPty

VENDHW = shutil.which("vendhw", path=str(Path(sys.executable).parent)) or "vendhw"


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


def test_lamassu_id003rs232_reads_the_simulators_currency_table_and_stacks() -> None:
    """lamassu-machine's own ``Id003Rs232`` (Node) against ``vendhw sim id003`` on a pty:
    its ``_denominations`` must read the simulator's CURRENCY ASSIGN table. Opt-in, like
    py-id003: ``VENDHW_LAMASSU_ID003`` = its ``lib/id003`` folder, ``VENDHW_LAMASSU_NODE_PATH``
    = a node_modules with serialport, async and lodash."""
    lib = os.environ.get("VENDHW_LAMASSU_ID003", "")
    modules = os.environ.get("VENDHW_LAMASSU_NODE_PATH", "")
    node = shutil.which("node")
    if not (node and lib and (Path(lib) / "id003rs232.js").is_file() and modules):
        pytest.skip("lamassu-machine is not installable from a registry: set "
                    "VENDHW_LAMASSU_ID003 (its lib/id003) and VENDHW_LAMASSU_NODE_PATH "
                    "(node_modules with serialport, async, lodash) to run this test")
    sim = subprocess.Popen([VENDHW, "sim", "id003", "--json", "-o", "country=1", "-o",
                            "denominations=1,0,5,10,20,50,100,0", "-o", "auto_insert=3"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert sim.stdout is not None
        port = json.loads(sim.stdout.readline())["port"]
        done = subprocess.run([node, str(Path(__file__).with_name("id003_lamassu_host.js")),
                               port, lib], capture_output=True, text=True, timeout=60,
                              check=False, env={**os.environ, "NODE_PATH": modules})
    finally:
        sim.terminate()
        sim.wait(timeout=10)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])  # lamassu logs on stdout too
    assert seen["denominations"] == {"97": 1, "99": 5, "100": 10, "101": 20, "102": 50,
                                     "103": 100}
    assert seen["escrow"] == {"denomination": 5, "code": 0x63}
    assert (seen["reset"], seen["stack"], seen["after"]) == ("ack", "ack", "stacked")
    assert seen["badFrames"] == 0 and not seen["rejectedCurrency"]
