"""MDB through the ``vendhw`` command line, as a new user would run it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

pytestmark = pytest.mark.slow


def vendhw(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vendhw", *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def changer_pty() -> Iterator[str]:
    """``vendhw sim mdb-changer`` in its own process; yields the port it prints."""
    proc = subprocess.Popen([sys.executable, "-m", "vendhw", "sim", "mdb-changer", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield json.loads(proc.stdout.readline())["port"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize("form", ["{port}", "mdb9://{port}"])
def test_the_port_the_simulator_prints_opens_with_cash_status(changer_pty: str,
                                                              form: str) -> None:
    port = form.format(port=changer_pty)
    result = vendhw("cash", "status", "--port", port, "--protocol", "mdb-changer", "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["currency"] == "EUR"
    assert status["coin_values"][:6] == [5, 10, 20, 50, 100, 200]
    assert status["identity"]["model"] == "SIM-CHANGER"


def test_payout_over_the_simulators_pty_finishes(changer_pty: str) -> None:
    result = vendhw("cash", "payout", "35", "--port", changer_pty, "--protocol", "mdb-changer",
                    "--json", "--interval", "0.01", "--timeout", "20")
    assert result.returncode == 0, result.stderr
    last = json.loads(result.stdout.splitlines()[-1])
    assert (last["kind"], last["value"], last["requested"]) == ("payout_done", 35, 35)


def test_a_plain_serial_path_still_says_mdb_needs_9_bits() -> None:
    result = vendhw("cash", "status", "--port", "/dev/ttyS99", "--protocol", "mdb-changer")
    assert result.returncode == 2
    assert "9-bit" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(("amount", "port"), [
    (5, "sim://mdb-changer"), (270, "sim://mdb-changer"), (385, "sim://mdb-changer"),
    (385, "sim://mdb-changer?alternative_payout=1"),  # level 3: EXPANSION PAYOUT
])
def test_cash_payout_ends_with_payout_done_of_the_value_paid(amount: int, port: str) -> None:
    result = vendhw("cash", "payout", str(amount), "--port", port, "--json",
                    "--interval", "0.01", "--timeout", "20")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(e["kind"], e["value"], e["requested"]) for e in events
            if e["kind"].startswith("payout")] == [("payout_done", amount, amount)]


def test_cash_payout_the_changer_cannot_finish_exits_1() -> None:
    result = vendhw("cash", "payout", "400", "--port",
                    "sim://mdb-changer?reset_during_payout=1", "--json", "--interval", "0.01",
                    "--timeout", "20")
    assert result.returncode == 1
    last = json.loads(result.stdout.splitlines()[-1])
    assert (last["kind"], last["value"], last["requested"]) == ("payout_incomplete", 200, 400)
