"""Kill-and-restart: a host process dies at each step of a vend; the board vends at most once.

The simulator runs in a separate process on a pty (``sim_process.py``) and outlives the
host, like a real board outlives a crashed vending PC. The host is a subprocess whose
journal calls ``os._exit(137)`` right after the step named by ``VENDHW_CRASH_AT`` is
committed. A new Machine then opens the same journal on the same port, reconciles, and is
asked for the same ``vend_id`` again. The simulator's own motor log (printed when it stops)
is the proof: each slot turned at most once, and exactly once when the command was sent.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from machine_fakes import write_fast_profile

from vendhw.devices.boards import Outcome
from vendhw.machine import Machine
from vendhw.machine.journal import CRASH_ENV, VendState

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
STEPS = ("intent", "sent", "acknowledged", "result")

# Where the board can be asked about a past vend by its sequence number, reconciliation
# records what the board says; the 101 board cannot be asked, so an interrupted vend is
# "unknown" for an operator.
FAMILIES = {
    "fafb-xy": {"queryable": True},
    "easivend-column": {"queryable": True},
    "board101": {"queryable": False},
}

HOST = textwrap.dedent("""
    import sys
    from vendhw.machine import Machine
    profile, port, journal, slot, vend_id = sys.argv[1:6]
    with Machine(profile, port, journal=journal) as machine:
        result = machine.dispense(int(slot), vend_id)
    print(result.outcome.value)
""")


class SimProcess:
    """A board simulator in its own process, serving a pty."""

    def __init__(self, profile: str, options: dict[str, Any]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "sim_process.py"), profile, json.dumps(options)],
            stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline()
        if not first:
            self.proc.kill()
            raise RuntimeError(f"simulator {profile} did not start")
        self.port: str = json.loads(first)["port"]

    def stop(self) -> dict[str, Any]:
        """Stop it and return its own record of motor turns and inventory."""
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=20)
        return dict(json.loads(out.strip().splitlines()[-1]))


@pytest.fixture
def sim_process() -> Iterator[Any]:
    started: list[SimProcess] = []

    def start(name: str, **options: Any) -> SimProcess:
        sim = SimProcess(name, options)
        started.append(sim)
        return sim

    yield start
    for sim in started:
        if sim.proc.poll() is None:
            sim.proc.kill()
            sim.proc.wait()


def motor_of(entry: Any) -> int:
    """The motor number in one entry of a simulator's ``vends`` log."""
    if isinstance(entry, dict):
        for key in ("motor", "slot", "selection", "column"):
            if key in entry:
                return int(entry[key])
    if isinstance(entry, list):
        return int(entry[0])
    return int(entry)


def run_host(profile: str, port: str, journal: Path, slot: int, vend_id: str,
             crash_at: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, CRASH_ENV: crash_at}
    return subprocess.run([sys.executable, "-c", HOST, profile, port, str(journal), str(slot),
                           vend_id], env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("profile", sorted(FAMILIES))
def test_host_killed_at_each_step_never_vends_twice(profile: str, sim_process: Any,
                                                    tmp_path: Path) -> None:
    queryable = FAMILIES[profile]["queryable"]
    # The host and the simulator share a profile file with test timings (same protocol).
    profile_file = str(write_fast_profile(tmp_path, profile))
    sim = sim_process(profile, inventory=5, profile=profile_file, motor_time=0.02)
    journal = tmp_path / "vends.sqlite"
    slots = {step: n + 1 for n, step in enumerate(STEPS)}

    for step in STEPS:
        done = run_host(profile_file, sim.port, journal, slots[step], f"kill-{step}", step)
        assert done.returncode == 137, (step, done.returncode, done.stdout, done.stderr)

        # Restart on the same journal and port: reconcile, then ask for the same vend again.
        with Machine(profile_file, sim.port, journal=journal) as machine:
            record = machine.journal.get(f"kill-{step}")
            assert record is not None and record.state is VendState.RESULT
            again = machine.dispense(slots[step], f"kill-{step}")
            assert again.replayed
            if step == "result":
                assert record.resolved_by == "board"
                assert again.outcome is Outcome.DELIVERED
            elif step == "intent":
                # Killed before the command was written: the board never vended. A board
                # that can be asked says so; the 101 board cannot, so it is an operator's.
                assert record.resolved_by == "reconcile"
                assert again.outcome is not Outcome.DELIVERED
                if not queryable:
                    assert again.outcome is Outcome.UNKNOWN
            else:
                assert record.resolved_by == "reconcile"
                expected = Outcome.DELIVERED if queryable else Outcome.UNKNOWN
                assert again.outcome is expected, again
            pending = {r.vend_id for r in machine.pending()}
            assert (f"kill-{step}" in pending) == (again.outcome is Outcome.UNKNOWN)

    # One more, ordinary vend after all the crashes still works (no sequence clash).
    with Machine(profile_file, sim.port, journal=journal) as machine:
        fresh = machine.dispense(9, "after-crashes")
    assert fresh.outcome is Outcome.DELIVERED and not fresh.replayed

    record = sim.stop()
    turned: dict[int, int] = {}
    for entry in record["vends"]:
        turned[motor_of(entry)] = turned.get(motor_of(entry), 0) + 1
    assert turned.get(slots["intent"], 0) == 0
    for step in ("sent", "acknowledged", "result"):
        assert turned.get(slots[step], 0) == 1, (step, record)
    assert turned.get(9, 0) == 1
    assert sum(turned.values()) == 4
