"""Signals: SIGTERM/SIGINT to ``vendhw demo`` stop its children and remove its folder; a
Ctrl-C that also stops the simulator during ``vendhw dispense`` is reported as what it was."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

WAIT = 60  # seconds a step may take on a loaded CI machine (a bound, not an assertion)


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.update(int(t) for t in text)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _start_demo(tmp_path: Path) -> tuple[subprocess.Popen[str], set[int]]:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "vendhw", "demo", "--json"], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    assert proc.stdout is not None
    for line in proc.stdout:  # without --auto-pay the demo waits for a person to pay
        if json.loads(line)["event"] == "waiting_for_payment":
            break
    else:
        pytest.fail(f"demo ended early: {proc.stderr.read() if proc.stderr else ''}")
    children = _children(proc.pid)
    assert len(children) >= 2  # backend serve and sim
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("vendhw-demo-")]
    return proc, children


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["sigterm", "ctrl-c"])
def test_demo_stops_its_children_and_removes_its_folder(tmp_path: Path, how: str) -> None:
    proc, children = _start_demo(tmp_path)
    if how == "sigterm":
        proc.send_signal(signal.SIGTERM)
    else:  # the terminal sends SIGINT to its foreground process group
        os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=WAIT)
    final = json.loads(out.strip().splitlines()[-1])
    assert final == {"event": "final", "state": "interrupted",
                     "signal": "SIGTERM" if how == "sigterm" else "SIGINT"}
    assert proc.returncode == 128 + (15 if how == "sigterm" else 2)
    assert [pid for pid in children if _alive(pid)] == []
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("vendhw-demo-")] == []
    assert "Traceback" not in err


@pytest.mark.timeout(120)
def test_ctrl_c_during_dispense_is_reported_as_an_interrupt(tmp_path: Path) -> None:
    """``vendhw sim`` and ``vendhw dispense`` in one process group (a script, a Makefile):
    Ctrl-C reaches both, the simulator dies first and the port closes under the vend."""
    sim = subprocess.Popen([sys.executable, "-m", "vendhw", "sim", "board101", "--json",
                            "-o", "motor_time=60"], text=True, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                           process_group=0)
    try:
        assert sim.stdout is not None
        port = json.loads(sim.stdout.readline())["port"]
        journal = tmp_path / "vends.db"
        dispense = subprocess.Popen(
            [sys.executable, "-m", "vendhw", "dispense", "--port", port, "--board", "board101",
             "1", "--json", "--journal", str(journal)], text=True, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, process_group=sim.pid)
        # Wait until the command is on the wire (the journal says so), then press Ctrl-C.
        state = None
        pause = threading.Event()
        while state not in ("sent", "acknowledged"):
            assert dispense.poll() is None, dispense.communicate()
            if journal.exists():
                try:
                    with sqlite3.connect(journal) as db:
                        row = db.execute("SELECT state FROM vends").fetchone()
                    state = row[0] if row else None
                except sqlite3.OperationalError:
                    state = None
            pause.wait(0.02)  # poll the journal, not a timed assertion
        os.killpg(sim.pid, signal.SIGINT)
        out, err = dispense.communicate(timeout=WAIT)
        result = json.loads(out.strip().splitlines()[-1])
        assert result["outcome"] == "unknown"
        assert result["interrupted"] == "SIGINT"
        assert "Ctrl-C" in result["detail"]
        assert "Ctrl-C" in err and "Traceback" not in err
        assert dispense.returncode == 130
    finally:
        if sim.poll() is None:
            sim.terminate()
        sim.wait(timeout=WAIT)
