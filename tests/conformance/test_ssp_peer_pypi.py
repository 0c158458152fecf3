"""Third-party host: the pure-Python ``eSSP`` package from PyPI (pc-coholic/eSSP 1.0.2, written
for Python 2) drives vendhw's SMART Payout simulator over a pty in plain SSP.

It runs as far as it runs on Python 3.11 with the few bytes/str edits listed in
``ssp_peers.PYPI_PATCHES`` (its ``__init__`` is bypassed). It has no eSSP, no byte stuffing
and its own CRC and sequence-flag code: SYNC, setup request, serial number, inhibits, enable,
polls until a note is credited, disable.
"""

from __future__ import annotations

import time
from typing import Any

from ssp_peers import pypi_essp

from vendhw.sim.ssp import SspSimulator
from vendhw.transport import SimulatorOnPty


def test_pypi_essp_host_syncs_enables_and_polls_a_credit() -> None:
    module = pypi_essp()
    sim = SspSimulator(speed=20, auto_insert="3", insert_interval=0.1)
    with SimulatorOnPty(sim) as served:
        host: Any = module.eSSP(served.port, 0, timeout=2)
        assert host.sync() == "0xf0"
        unit, firmware, country, _multi, channels, values, _security, real, protocol = (
            host.setup_request())
        assert (unit, firmware, country, channels, values) == (6, "0420", "EUR", 4,
                                                                [5, 10, 20, 50])
        assert (real, protocol) == (100, 6)
        assert host.serial_number() == sim.serial
        assert host.set_inhibits(host.easy_inhibit([1, 1, 1, 1]), "0x0") == "0xf0"
        assert host.enable() == "0xf0"
        seen: list[Any] = []
        deadline = time.monotonic() + 20  # a bound on the loop, not a timing assertion
        while time.monotonic() < deadline:
            polled = host.poll()
            seen += polled
            if ["0xee", 3] in polled:
                break
        assert host.disable() == "0xf0"
    assert ["0xee", 3] in seen and sim.credited == [2000]
    assert sim.inhibits == 0x0F and not sim.enabled
    assert sim.executed[:5] == [0x11, 0x05, 0x0C, 0x02, 0x0A]
