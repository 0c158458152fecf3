"""vendhw probe: each simulator's protocol is named, over a pty; silent and garbled lines."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from toolbox_helpers import Garbler, json_lines, run, sim_process

from vendhw.sim import create
from vendhw.tools.probe import all_attempts, run_attempt
from vendhw.transport import SimulatorOnPty

EXPECTED = {
    "ssp": ("ssp", "9600 8N2", "serial_number"),
    "cctalk-coin": ("cctalk", "9600 8N1", "manufacturer"),
    "cctalk-bill": ("cctalk", "9600 8N1", "category"),
    "cctalk-hopper": ("cctalk", "9600 8N1", "category"),
    "id003": ("id003", "9600 8E1", "status"),
    "mdb-changer": ("mdb", "9600 9-bit (in-band)", "device"),
    "mdb-bill": ("mdb", "9600 9-bit (in-band)", "device"),
    "board101": ("board101", "9600 8N1", "version"),
    "easivend-column": ("easivend", "9600 8N1", "status"),
    "fafb-xy": ("fafb", "57600 8N1", "polling"),
    "fafb-lift": ("fafb", "57600 8N1", "polling"),
}


def _probe(name: str) -> tuple[str, list[tuple[str, str, dict[str, object]]]]:
    served = SimulatorOnPty(create(name))
    try:
        results = [run_attempt(served.port, a, timeout=0.15) for a in all_attempts(served.port)]
    finally:
        served.close()
    return name, [(r.attempt.protocol, r.attempt.settings.label, r.identity)
                  for r in results if r.answered]


def test_probe_names_every_simulators_protocol_and_only_it() -> None:
    with ThreadPoolExecutor(max_workers=len(EXPECTED)) as pool:
        found = dict(pool.map(_probe, EXPECTED))
    for name, (protocol, settings, key) in EXPECTED.items():
        answered = found[name]
        assert {p for p, _, _ in answered} == {protocol}, (name, answered)
        assert answered[0][1] == settings
        assert key in answered[0][2], (name, answered)
    assert found["cctalk-bill"][0][2]["category"] == "Bill Validator"
    assert found["mdb-bill"][0][2]["device"] == "bill validator"
    assert found["id003"][0][2]["status"] == "POWER UP"


def test_probe_cli_json_one_object_per_attempt() -> None:
    with sim_process("ssp") as port:
        done = run("probe", port, "--json", "--timeout", "0.15")
    assert done.returncode == 0, done.stderr
    rows = json_lines(done.stdout)
    assert len(rows) == len(all_attempts(port))
    for row in rows:
        assert {"protocol", "settings", "answered", "identity"} <= set(row)
    answered = [r for r in rows if r["answered"]]
    assert [(r["protocol"], r["settings"]) for r in answered] == [("ssp", "9600 8N2")]
    assert answered[0]["identity"]["unit_type"] == "smart payout"


def test_probe_silent_port_says_nothing_answered() -> None:
    with sim_process("ssp", "--fault", "silent") as port:
        done = run("probe", port, "--protocol", "ssp", "--protocol", "cctalk",
                   "--timeout", "0.1")
    assert done.returncode == 1
    assert "no reply" in done.stdout
    assert f"{port}: nothing answered (4 attempts)" in done.stdout
    assert "Traceback" not in done.stderr


def test_probe_wrong_baud_rate_reports_garbage() -> None:
    with Garbler() as line:
        done = run("probe", line.port, "--protocol", "ssp", "--json", "--timeout", "0.1")
    assert done.returncode == 1
    (row,) = json_lines(done.stdout)
    assert row["answered"] is False
    assert row["garbage_bytes"] > 0
    assert "wrong baud rate" in row["note"]


def test_probe_missing_port_is_one_line() -> None:
    done = run("probe", "/dev/ttyNOSUCH0")
    assert done.returncode == 1
    assert "no such port" in done.stderr
    assert "Traceback" not in done.stderr


def test_probe_unknown_protocol_refused() -> None:
    done = run("probe", "/dev/null", "--protocol", "nosuch")
    assert done.returncode == 2
    assert "unknown protocol 'nosuch'" in done.stderr


@pytest.mark.parametrize("name", ["id003"])
def test_probe_twice_on_a_parity_pty(name: str) -> None:
    """Regression: opening a pty with even parity twice made pyserial fail with EINVAL."""
    with sim_process(name) as port:
        for _ in range(2):
            done = run("probe", port, "--protocol", "id003", "--json", "--timeout", "0.2")
            assert done.returncode == 0, done.stderr
            assert json_lines(done.stdout)[0]["answered"] is True


def test_probe_other_line_speeds() -> None:
    with sim_process("cctalk-coin") as port:
        done = run("probe", port, "--protocol", "cctalk", "-b", "4800", "-b", "19200",
                   "--json", "--timeout", "0.15")
    rows = json_lines(done.stdout)
    assert [r["settings"] for r in rows] == ["4800 8N1", "19200 8N1"] * 3
    assert done.returncode == 0  # a pty has no line speed: the simulator answers at any
