"""The "101" board resetting mid-vend, at the shipped profile's real timings, via the CLI.

A 101 board that rebooted answers READ RESULT with "success, light curtain 0 ms", exactly
what a vend where nothing fell answers. Reading the result once a second (the vendor doc's
rate) misses the reboot silence, and the host used to report ``not_dropped``: a refund for
a product that fell. These tests run the real console script, once on ``sim://`` and once
against ``vendhw sim`` serving the board on a pty.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

VENDHW = shutil.which("vendhw", path=str(Path(sys.executable).parent)) or "vendhw"


def dispense(port: str, *, timeout: float = 60) -> dict[str, object]:
    done = subprocess.run([VENDHW, "dispense", "--port", port, "--board", "board101", "1",
                           "--json"], capture_output=True, text=True, timeout=timeout,
                          check=False)
    assert "Traceback" not in done.stderr, done.stderr
    value = json.loads(done.stdout.strip().splitlines()[-1])
    assert isinstance(value, dict)
    return value


@contextmanager
def board_on_pty(*faults: str) -> Iterator[str]:
    """``vendhw sim board101`` in its own process; yields the pty it prints."""
    args = [VENDHW, "sim", "board101", "--json"]
    for fault in faults:
        args += ["--fault", fault]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, proc.stderr.read() if proc.stderr else "no output"
        yield str(json.loads(line)["port"])
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_reset_mid_vend_via_the_cli_is_unknown_never_not_dropped() -> None:
    report = dispense("sim://board101?reset_mid_vend=true")
    assert report["outcome"] == "unknown", report
    assert "reset" in str(report["detail"])


def test_reset_mid_vend_over_a_pty_at_real_timings_is_unknown() -> None:
    with board_on_pty("reset_mid_vend") as port:
        report = dispense(port)
    assert report["outcome"] == "unknown", report


@pytest.mark.parametrize(("fault", "outcome"), [("no_drop", "not_dropped"),
                                                (None, "delivered")])
def test_a_board_that_stays_up_still_reports_what_happened(fault: str | None,
                                                             outcome: str) -> None:
    with board_on_pty(*([fault] if fault else [])) as port:
        report = dispense(port)
    assert report["outcome"] == outcome, report
