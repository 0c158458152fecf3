"""``vendhw mdb scan``: which peripherals answer on a bus, with setup and identification."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from click.testing import CliRunner

from vendhw.cli import cli
from vendhw.sim import create
from vendhw.sim.base import Reply, Simulator
from vendhw.transport import SimulatorOnPty


class Bus(Simulator):
    """Several simulated peripherals on one line: each answers only its own address."""

    name = "test-mdb-bus"
    kind = "test"
    protocol = "mdb"

    def __init__(self, *members: Simulator) -> None:
        super().__init__()
        self.members = members

    def receive(self, data: bytes, now: float) -> list[Reply]:
        out: list[Reply] = []
        for member in self.members:
            out += member.receive(data, now)
        return out


def test_scan_a_bus_over_a_pty() -> None:
    bus = Bus(create("mdb-changer"), create("mdb-bill"), create("mdb-cashless"),
              create("mdb-cashless", address="96", level="1"))
    with SimulatorOnPty(bus) as served:
        done = subprocess.run(
            [sys.executable, "-m", "vendhw", "mdb", "scan", "--port", served.port, "--inband",
             "--json", "--timeout", "0.12"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    found: dict[str, dict[str, Any]] = {}
    for line in done.stdout.splitlines():
        entry = json.loads(line)
        found[entry["address"]] = entry
    assert sorted(found) == ["0x08", "0x10", "0x30", "0x60"]
    assert found["0x08"]["setup"]["currency"] == "EUR"
    assert found["0x08"]["identification"]["model"] == "SIM-CHANGER"
    assert found["0x30"]["setup"]["bill_values"][:4] == [500, 1000, 2000, 5000]
    assert found["0x10"]["setup"]["level"] == 3 and found["0x10"]["poll_events"] == [
        "just_reset"]
    assert found["0x10"]["identification"]["serial"] == "SIMCARD00001"
    assert found["0x60"]["setup"]["level"] == 1
    assert "features" not in found["0x60"]["identification"]  # level 1: 30-byte id


def test_scan_lists_silent_addresses_on_request() -> None:
    result = CliRunner().invoke(cli, ["mdb", "scan", "--port", "sim://mdb-cashless", "--json",
                                      "--all", "--timeout", "0.01"])
    assert result.exit_code == 0, result.output
    entries = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["address"] for e in entries if e["present"]] == ["0x10"]
    assert len(entries) == 13


def test_scan_refuses_a_plain_port_in_one_line() -> None:
    result = CliRunner().invoke(cli, ["mdb", "scan", "--port", "/dev/ttyUSB0"])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "9-bit" in result.stderr
