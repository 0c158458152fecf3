"""Simulator framework: line faults, scheduling, the device clock, `vendhw sim` on a pty."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from vendhw import sim as sim_registry
from vendhw.sim.base import LineFaults, Reply, Scheduler, Simulator
from vendhw.sim.echo import EchoSimulator
from vendhw.transport import open_transport


class Ticker(Simulator):
    """A bus master that says 'P' every period (like an FA FB board polling the host)."""

    name = "ticker"
    kind = "test"
    protocol = "raw"

    def __init__(self, start: float, period: float) -> None:
        super().__init__()
        self._next = start
        self.period = period

    def receive(self, data: bytes, now: float) -> list[Reply]:
        return []

    def tick(self, now: float) -> list[Reply]:
        self._next = now + self.period
        return [(0.0, b"P")]

    def next_tick(self) -> float | None:
        return self._next


def test_line_faults() -> None:
    faults = LineFaults()
    assert faults.apply([(0.0, b"abc")]) == [(0.0, b"abc")]
    faults.drop_byte = 1
    (_, data), = faults.apply([(0.0, b"abcd")])
    assert len(data) == 3
    faults.flip_bit = 1
    (_, data), = faults.apply([(0.0, b"\x00\x00")])
    assert len(data) == 2 and bin(int.from_bytes(data, "big")).count("1") == 1
    faults.garbage = b"\xee"
    faults.delay = 0.5
    assert faults.apply([(0.1, b"x")]) == [(0.6, b"\xeex")]
    assert faults.apply([(0.1, b"y")]) == [(0.6, b"y")]  # garbage was once
    faults.silent = True
    assert faults.apply([(0.0, b"z")]) == []


def test_set_fault_by_name_and_unknown_fault() -> None:
    sim = EchoSimulator()
    sim.set_fault("delay", "0.25")
    sim.set_fault("silent", "false")
    assert sim.line.delay == 0.25 and sim.line.silent is False
    with pytest.raises(KeyError, match="unknown fault"):
        sim.set_fault("jam")


def test_scheduler_orders_replies_by_due_time() -> None:
    class Late(Simulator):
        name = kind = protocol = "x"

        def receive(self, data: bytes, now: float) -> list[Reply]:
            return [(0.2, b"late"), (0.1, b"early")]

    s = Scheduler(Late())
    s.on_input(b"q", now=10.0)
    assert s.due(10.05) == b""
    assert s.next_deadline() == pytest.approx(10.1)
    assert s.due(10.15) == b"early"
    assert s.due(10.3) == b"late"
    assert s.next_deadline() is None


def test_scheduler_runs_the_device_clock() -> None:
    s = Scheduler(Ticker(start=1.0, period=0.2))
    assert s.due(0.5) == b""
    assert s.next_deadline() == 1.0
    assert s.due(1.0) == b"P"
    assert s.due(1.1) == b""
    assert s.next_deadline() == pytest.approx(1.2)


def test_registry_lists_echo() -> None:
    specs = sim_registry.available()
    assert specs["echo"].info() == {"name": "echo", "kind": "test", "protocol": "raw",
                                    "description": EchoSimulator.description}


def _vendhw(*args: str, **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "vendhw", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)  # type: ignore[call-overload]


def test_cli_sim_list_json() -> None:
    out = subprocess.run([sys.executable, "-m", "vendhw", "sim", "--list", "--json"],
                         capture_output=True, text=True, check=True).stdout
    entries = [json.loads(line) for line in out.splitlines()]
    assert {"name", "kind", "protocol", "description"} <= set(entries[0])
    assert "echo" in {e["name"] for e in entries}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_sim_serves_on_a_pty_until_signalled(sig: signal.Signals) -> None:
    proc = _vendhw("sim", "echo", "--json")
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert info["port"].startswith("/dev/pts/")
        assert os.path.exists(info["port"])
        t = open_transport(info["port"])
        t.write(b"ping")
        got = b""
        while len(got) < 4:
            chunk = t.read(5.0)
            assert chunk
            got += chunk
        assert got == b"ping"
        t.close()
        proc.send_signal(sig)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_cli_sim_unknown_name_is_usage_error() -> None:
    result = subprocess.run([sys.executable, "-m", "vendhw", "sim", "nope"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "unknown simulator" in result.stderr and "Traceback" not in result.stderr


def test_a_clock_that_fell_behind_does_not_burst() -> None:
    s = Scheduler(Ticker(start=1.0, period=0.2))
    assert s.due(5.0) == b"P"  # 20 periods late: one poll now, not twenty
    assert s.next_deadline() == pytest.approx(5.2)
