"""``vendhw dispense``, ``vendhw board ...`` and ``vendhw motor scan`` against ``sim://``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from machine_fakes import write_fast_profile

from vendhw.cli import cli
from vendhw.devices.boards import load_profile

PROFILES = ("fafb-xy", "board101", "easivend-column")


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def last_json(stdout: str) -> dict[str, object]:
    value = json.loads(stdout.strip().splitlines()[-1])
    assert isinstance(value, dict)
    return value


def fast(tmp_path: Path, name: str) -> tuple[str, str]:
    """A profile file with test timings, and the sim:// URL of a simulator that uses it."""
    path = write_fast_profile(tmp_path, name)
    return str(path), f"sim://{name}?profile={path}&motor_time=0.01"


@pytest.mark.parametrize("profile", PROFILES)
def test_dispense_json_delivered(profile: str) -> None:
    code, out, _ = run("dispense", "--port", f"sim://{profile}", "--board", profile, "1-2",
                       "--json")
    data = last_json(out)
    assert code == 0, out
    assert data["outcome"] == "delivered" and data["slot"] == "1-2"
    assert isinstance(data["duration_ms"], int)
    assert data["motor"] == load_profile(profile).slot_to_motor("1-2")


def test_dispense_human_output_and_plain_number(tmp_path: Path) -> None:
    board, port = fast(tmp_path, "fafb-xy")
    code, out, _ = run("dispense", "-p", port, "-b", board, "12")
    assert code == 0
    assert "delivered" in out and "motor 12" in out and "2-2" in out


def test_dispense_empty_slot_exits_1_with_the_outcome() -> None:
    code, out, _ = run("dispense", "--port", "sim://easivend-column?inventory=0", "--board",
                       "easivend-column", "3", "--json")
    assert code == 1
    assert last_json(out)["outcome"] in ("empty", "not_dropped")


def test_unknown_slot_is_a_usage_error_before_anything_moves() -> None:
    code, out, err = run("dispense", "--port", "sim://fafb-xy", "--board", "fafb-xy", "99-1",
                         "--json")
    assert code == 2
    assert "99-1" in err and "hint: list the slots with: vendhw board slots --board fafb-xy" \
        in err
    assert "Traceback" not in err + out
    assert last_json(out)["outcome"] is None


def test_unknown_profile_is_a_usage_error() -> None:
    code, _, err = run("dispense", "--port", "sim://fafb-xy", "--board", "no-such-board", "1")
    assert code == 2
    assert "no-such-board" in err and "vendhw board profiles" in err


def test_silent_board_names_port_baud_and_expectation(tmp_path: Path) -> None:
    board, port = fast(tmp_path, "board101")
    code, out, err = run("dispense", "--port", port + "&silent=1", "--board", board, "1",
                         "--json")
    assert code == 1
    assert "sim://board101" in err and "9600" in err and "hint:" in err
    assert "Traceback" not in err
    data = last_json(out)
    assert data["outcome"] is None and data["slot"] == "1"


def test_wrong_profile_for_the_board_is_a_clear_failure(tmp_path: Path) -> None:
    # An Easivend board spoken to as a "101" board: wrong frames, wrong baud in real life.
    board, _ = fast(tmp_path, "board101")
    code, _, err = run("dispense", "--port", "sim://easivend-column", "--board", board, "1")
    assert code == 1
    assert "hint:" in err and "Traceback" not in err


def test_journal_makes_the_cli_idempotent(tmp_path: Path) -> None:
    journal = str(tmp_path / "vends.sqlite")
    board, port = fast(tmp_path, "fafb-xy")
    args = ("dispense", "--port", port, "--board", board, "4", "--json",
            "--journal", journal, "--vend-id", "order-1")
    first = last_json(run(*args)[1])
    second = last_json(run(*args)[1])
    assert first["outcome"] == second["outcome"] == "delivered"
    assert first["replayed"] is False and second["replayed"] is True
    code, out, _ = run("board", "pending", "--journal", journal, "--all", "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["vend_id"] for r in rows] == ["order-1"]


@pytest.mark.parametrize("profile", PROFILES)
def test_board_status_json(profile: str, tmp_path: Path) -> None:
    board, port = fast(tmp_path, profile)
    code, out, _ = run("board", "status", "--port", port, "--board", board, "--json")
    data = last_json(out)
    assert code == 0 and data["ok"] is True and data["unresolved_vends"] == 0


def test_board_status_table(tmp_path: Path) -> None:
    board, port = fast(tmp_path, "fafb-xy")
    code, out, _ = run("board", "status", "--port", port, "--board", board)
    assert code == 0 and "unresolved_vends" in out


def test_board_selftest(tmp_path: Path) -> None:
    board, port = fast(tmp_path, "board101")
    code, out, _ = run("board", "selftest", "--port", port, "--board", board, "--json")
    assert code == 0 and last_json(out)["ok"] is True


def test_profiles_and_slots() -> None:
    code, out, _ = run("board", "profiles", "--json")
    names = {json.loads(line)["name"] for line in out.splitlines()}
    assert code == 0 and set(PROFILES) <= names
    code, out, _ = run("board", "slots", "--board", "fafb-xy", "--json")
    slots = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and slots[0] == {"motor": 1, "label": "1-1"} and len(slots) == 60


def test_motor_scan_range_json(tmp_path: Path) -> None:
    board, port = fast(tmp_path, "board101")
    code, out, _ = run("motor", "scan", "--port", port, "--board", board, "--slots", "1-3,7",
                       "--json")
    data = last_json(out)
    assert code == 0, out
    assert data["scanned"] == 4 and data["outcomes"] == {"delivered": 4}
    results = data["results"]
    assert isinstance(results, list) and [r["motor"] for r in results] == [1, 2, 3, 7]


def test_motor_scan_table_reports_a_jam(tmp_path: Path) -> None:
    board, port = fast(tmp_path, "fafb-xy")
    code, out, _ = run("motor", "scan", "--port", port + "&jam=2", "--board", board,
                       "--slots", "1-3")
    assert code == 1
    assert "jammed" in out and "delivered: 2" in out


def test_motor_scan_bad_range_is_a_usage_error() -> None:
    code, _, err = run("motor", "scan", "--port", "sim://fafb-xy", "--board", "fafb-xy",
                       "--slots", "1-999")
    assert code == 2 and "unknown slot" in err


def test_operator_resolves_an_unknown_from_the_shell(tmp_path: Path) -> None:
    from vendhw.machine.journal import VendJournal

    path = tmp_path / "vends.sqlite"
    with VendJournal(path) as journal:
        journal.begin("v1", board="board101", slot=3, motor=3, drop_sensor=True,
                      sequence_range=None)
        journal.finish("v1", "unknown", detail="link lost", resolved_by="host")
    code, out, _ = run("board", "pending", "--journal", str(path))
    assert code == 0 and "v1" in out
    code, _, err = run("board", "resolve", "--journal", str(path), "v1", "unknown")
    assert code == 2 and "outcome must be one of" in err
    code, out, _ = run("board", "resolve", "--journal", str(path), "v1", "delivered",
                       "--note", "saw it in the tray")
    assert code == 0 and "delivered" in out
    code, out, _ = run("board", "pending", "--journal", str(path), "--json")
    assert code == 0 and out.strip() == ""
