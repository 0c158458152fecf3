"""`vendhw demo` end to end: real backend and board-simulator processes, every option.

Each run starts the reference server and a board simulator on a pty, ships through the
signed client, the shipping loop and Machine.dispense, and checks the order's final state as
the contract states it: the last JSON line has ``state``; exit 0 when it is the expected one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CASES = [
    (["--auto-pay"], "delivered"),
    (["--pickup"], "delivered"),
    (["--auto-pay", "--fault", "jam"], "refunded"),
    (["--auto-pay", "--fault", "empty"], "refunded"),
    (["--auto-pay", "--fault", "no-drop"], "refunded"),
    (["--auto-pay", "--fault", "power-cut"], "needs_review"),
]


def run_demo(*args: str) -> tuple[int, list[dict]]:
    proc = subprocess.run([sys.executable, "-m", "vendhw", "demo", "--json", *args],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc.returncode, events


@pytest.mark.timeout(180)
@pytest.mark.parametrize(("args", "state"), CASES, ids=[" ".join(a) for a, _ in CASES])
def test_demo_reaches_the_expected_state(args: list[str], state: str) -> None:
    code, events = run_demo(*args)
    assert events, "no JSON output"
    final = events[-1]
    assert final["event"] == "final" and final["state"] == state, events[-3:]
    assert code == 0
    dispensed = [e for e in events if e["event"] == "dispensed"]
    assert len(dispensed) == 1  # exactly one vend reported, never a second
    if state == "delivered":
        assert final["sale_ms"] is not None and final["sale_ms"] > 0


@pytest.mark.timeout(180)
def test_power_cut_never_vends_twice() -> None:
    _, events = run_demo("--auto-pay", "--fault", "power-cut")
    names = [e["event"] for e in events]
    assert "power_cut" in names and "agent_restarted" in names
    (dispensed,) = [e for e in events if e["event"] == "dispensed"]
    assert dispensed["outcome"] == "unknown" and dispensed["replayed"] is True
    assert dispensed["resolved_by"] == "reconcile"


@pytest.mark.timeout(180)
def test_human_output_and_cleanup(tmp_path: Path) -> None:
    # Its own temp folder: another demo on the other test worker must not look like ours.
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "vendhw", "demo", "--auto-pay"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "delivered" in proc.stdout and "pay page: http://127.0.0.1:" in proc.stdout
    assert "█" in proc.stdout or "▀" in proc.stdout  # the QR code in half blocks
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("vendhw-demo-")] == []
