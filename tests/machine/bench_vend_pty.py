"""Vend round trip over a real pty against a board simulator (not a test; a measurement).

    python tests/machine/bench_vend_pty.py PROFILE [N] [motor_time] [fast]

Opens ``Machine(PROFILE, <pty>)`` on ``SimulatorOnPty(vendhw.sim.create(PROFILE, ...))`` and
times N dispenses (journal in a temporary file, WAL + synchronous=FULL, so the fsyncs are
included). Prints min / median / p90 in milliseconds. With ``fast`` the profile's timings
are the tests' (50 ms FA FB poll, 50 ms result polling), which shows the floor under the
protocol's own waits.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared helpers
from machine_fakes import FAST_TIMING

from vendhw import sim
from vendhw.devices.boards import load_profile
from vendhw.machine import Machine
from vendhw.transport import SimulatorOnPty


def main() -> None:
    profile = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    motor_time = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    board = load_profile(profile)
    if len(sys.argv) > 4 and sys.argv[4] == "fast":
        board = board.replace(timing=FAST_TIMING)
    simulator = sim.create(profile, profile=board, inventory=n + 10, motor_time=motor_time)
    times: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, SimulatorOnPty(simulator) as served, \
            Machine(board, served.port, journal=Path(tmp) / "j.sqlite") as machine:
        slot = machine.profile.slots()[0]
        machine.dispense(slot)  # warm up
        for _ in range(n):
            start = time.perf_counter()
            result = machine.dispense(slot)
            times.append((time.perf_counter() - start) * 1000)
            assert result.delivered, result
    times.sort()
    median, p90 = statistics.median(times), times[int(n * 0.9) - 1]
    print(f"{profile}: n={n} motor_time={motor_time}s poll={board.timing.poll_period}s  "
          f"min {times[0]:.1f} ms  median {median:.1f} ms  p90 {p90:.1f} ms")


if __name__ == "__main__":
    main()
