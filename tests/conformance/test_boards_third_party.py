"""mohamed-29/try-5, a third-party FA FB host (Python), drives vendhw's FA FB simulator on a pty.

try-5 is on no package registry, so CI cannot install it: the test runs when
``VENDHW_TRY5_FAFB`` names a checkout of github.com/mohamed-29/try-5 (the folder holding
``vmc_protocol.py`` and ``vmc_transport.py``) and is skipped otherwise, in CI too (see
``tests/conformance/BOARDS.md``). try-5's own thread answers the simulator's POLLs, sends its
0x06 direct vend (LEN 6, with its "cart" byte) on a POLL and ACKs the status reports.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from vendhw.devices.boards import load_profile
from vendhw.sim.boards import simulator_class
from vendhw.transport import SimulatorOnPty


def _try5() -> tuple[Any, Any]:
    folder = os.environ.get("VENDHW_TRY5_FAFB", "")
    if not folder or not (Path(folder) / "vmc_transport.py").is_file():
        pytest.skip("try-5 is not installable from a registry: set VENDHW_TRY5_FAFB to a "
                    "checkout of github.com/mohamed-29/try-5 to run this test")
    sys.path.insert(0, folder)
    try:
        return importlib.import_module("vmc_protocol"), importlib.import_module("vmc_transport")
    finally:
        sys.path.remove(folder)


def test_try5_vends_once_and_reads_the_status_reports() -> None:
    protocol, transport = _try5()
    profile = load_profile("fafb-xy")
    sim = simulator_class(profile)(profile=profile, motor_time=0.05)
    reports: list[tuple[int, bytes]] = []
    logs: list[str] = []
    motor = profile.slots()[0]
    with SimulatorOnPty(sim) as server:
        host = transport.VMCTransport(server.port, profile.serial["baudrate"],
                                      lambda cmd, payload: reports.append((cmd, bytes(payload))),
                                      logs.append)
        host.start()
        try:
            host.send_command(0x06, protocol.encode_direct_vend(
                {"selection": motor, "use_drop": True, "use_elevator": False}), "vend")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not any(
                    c == 0x04 and p[1] == 2 for c, p in reports):
                time.sleep(0.05)  # sleep-ok: waiting for a third-party host's thread
        finally:
            host.stop()
    assert [v.motor for v in sim.vends] == [motor] and sim.vends[0].dropped
    statuses = [(p[1], int.from_bytes(p[2:4], "big")) for c, p in reports if c == 0x04]
    assert statuses[-1] == (2, motor)  # 0x04 report: status 2 (success) for that selection
    assert sim.polls_unanswered == 0
