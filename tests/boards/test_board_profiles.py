"""Board profiles: loading, slot addressing, errors, and "a new board is a new data file"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from board_helpers import FAMILY_OF, PROFILES, fast_profile, make_sim
from click.testing import CliRunner

from vendhw.cli import cli
from vendhw.devices.boards import (
    BoardProfile,
    Outcome,
    load_profile,
    open_board,
    profile_names,
)
from vendhw.errors import ConfigurationError

CUSTOM = """
name = "acme-fafb"
family = "fafb"
description = "Acme 4x6 spiral machine on FA FB with vendor drop codes"
capabilities = ["spiral", "drop_sensor"]
[serial]
baudrate = 57600
[timing]
response_timeout = 0.3
motor_run_limit = 0.6
drop_sensor_wait = 0.1
poll_period = 0.2
retries = 5
[slots]
trays = 4
columns = 6
label = "{tray}{column}"
first_motor = 101
tray_stride = 100
[protocol]
check_before_vend = true
[results]
0x01 = "progress"
0x02 = { outcome = "delivered", text = "ok" }
0x03 = { outcome = "jammed", text = "jam" }
0x06 = { outcome = "motor_fault", text = "no motor" }
0x30 = { outcome = "not_dropped", text = "vendor: drop sensor saw nothing" }
0x31 = { outcome = "sensor_fault", text = "vendor: drop sensor fault" }
[selection_status]
0x01 = "ok"
0x02 = "empty"
"""


def test_shipped_profiles_load_and_cover_every_family() -> None:
    names = profile_names()
    assert set(PROFILES) <= set(names)
    families = set()
    for name in names:
        profile = load_profile(name)
        families.add(profile.family)
        assert profile.slots() and profile.description
        assert profile.timing.response_timeout > 0 and profile.timing.motor_run_limit > 0
        assert profile.serial["baudrate"] in (9600, 19200, 38400, 57600, 115200)
        for motor in profile.slots():
            assert profile.slot_to_motor(profile.slot_label(motor)) == motor
            assert profile.slot_to_motor(motor) == motor
            assert profile.slot_to_motor(str(motor)) == motor
    assert families == {"fafb", "board101", "easivend"}


def test_operator_addressing() -> None:
    xy = load_profile("fafb-xy")
    assert xy.slot_to_motor("3-5") == 25 and xy.slot_label(25) == "3-5"
    assert xy.slot_to_motor(" 3-5 ") == 25
    lift = load_profile("fafb-lift")
    assert lift.slot_to_motor("L2-04") == 24 == lift.slot_to_motor("l2-4")
    assert lift.slot_label(24) == "L2-04" and lift.supports("lift")
    b101 = load_profile("board101")
    assert b101.slot_to_motor("1-0") == 1 and b101.slot_label(60) == "6-9"
    assert b101.slot_coords(1) == (1, 0)


@pytest.mark.parametrize("bad", ["9-9", "0", 0, 61, "L2-04", "", "1-", True, "abc"])
def test_unknown_slots_are_refused_with_the_valid_range(bad: object) -> None:
    with pytest.raises(ConfigurationError, match=r"not on board profile 'board101'.*1\.\.60"):
        load_profile("board101").slot_to_motor(bad)  # type: ignore[arg-type]


def test_unknown_profile_lists_the_known_ones() -> None:
    with pytest.raises(ConfigurationError, match="known profiles: board101, easivend-column"):
        load_profile("no-such-board")


@pytest.mark.parametrize(("change", "message"), [
    (lambda t: t.replace('family = "fafb"', 'family = "mystery"'), "family must be one of"),
    (lambda t: t.replace('"jammed", text = "jam"', '"exploded", text = "jam"'),
     "unknown outcome 'exploded'"),
    (lambda t: t.replace("[slots]", "[slotz]"), "no \\[slots\\]"),
    (lambda t: t.replace("retries = 5", "retries = 5\nwarp = 9"), "unknown \\[timing\\] keys"),
    (lambda t: t.replace('label = "{tray}{column}"', 'label = "{row}"'), "slots.label"),
    (lambda t: t.replace('capabilities = ["spiral", "drop_sensor"]', 'capabilities = ["x"]'),
     "unknown capabilities"),
    (lambda t: t + "\n[[[", "not valid TOML"),
    (lambda t: t.replace("tray_stride = 100", "tray_stride = 2"), "slots overlap"),
])
def test_malformed_profiles_name_the_problem(tmp_path: Path, change, message: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "acme-fafb.toml"
    path.write_text(change(CUSTOM), encoding="utf-8")
    with pytest.raises(ConfigurationError, match=message):
        load_profile(str(path))


def test_profile_copies_with_other_timing_keep_the_rest() -> None:
    xy = load_profile("fafb-xy")
    fast = xy.replace(timing={"poll_period": 0.05})
    assert fast.timing.poll_period == 0.05 and fast.timing.retries == xy.timing.retries
    assert fast.slots() == xy.slots() and fast.name == xy.name
    assert xy.timing.poll_period == 0.2


def test_bit_mode_results_pick_the_first_listed_bit() -> None:
    easi = load_profile("easivend-column")
    assert easi.interpret(0x00)[0] == "delivered"
    assert easi.interpret(0x21) == ("not_dropped", "board code 0x21: drop check on, no "
                                    "product detected, vend failed")
    assert easi.interpret(0xA1)[0] == "sensor_fault"
    assert easi.interpret(0x11)[0] == "timeout"
    assert easi.interpret(0x40)[0] == "unknown"  # an undocumented bit is never guessed


def test_a_new_board_is_a_data_file_with_its_own_simulator(tmp_path: Path) -> None:
    path = tmp_path / "acme-fafb.toml"
    path.write_text(CUSTOM, encoding="utf-8")
    profile = fast_profile(load_profile(str(path)))
    assert profile.slot_to_motor("23") == 203 and profile.slot_label(406) == "46"
    sim = make_sim(profile)
    assert sim.name == "acme-fafb" and sim.kind == "board" and sim.baudrate == 57600
    with open_board(profile, "sim://acme-fafb", simulator=sim) as board:
        ok = board.vend(profile.slot_to_motor("11"), 1)
        sim.set_fault("no_drop", "12")
        stuck = board.vend(profile.slot_to_motor("12"), 2)
        sim.set_fault("sensor_fault", "13")
        blind = board.vend(profile.slot_to_motor("13"), 3)
    assert ok.outcome is Outcome.DELIVERED
    assert (stuck.outcome, stuck.raw_code) == (Outcome.NOT_DROPPED, 0x30)
    assert (blind.outcome, blind.raw_code) == (Outcome.SENSOR_FAULT, 0x31)
    assert "vendor: drop sensor saw nothing" in stuck.detail
    assert [v.motor for v in sim.vends] == [101, 102, 103]


def test_every_profile_gets_a_listed_board_simulator() -> None:
    result = CliRunner().invoke(cli, ["sim", "--list", "--json"])
    assert result.exit_code == 0, result.output
    text = result.stdout.strip()
    listed = json.loads(text) if text.startswith("[") else [json.loads(line) for line in
                                                             text.splitlines()]
    boards = {s["name"]: s for s in listed if s["kind"] == "board"}
    for name in profile_names():
        assert boards[name]["protocol"] == load_profile(name).family
    assert {FAMILY_OF[p] for p in PROFILES} == {boards[p]["protocol"] for p in PROFILES}


def test_profile_summary_is_json() -> None:
    summary = load_profile("fafb-lift").to_dict()
    json.dumps(summary)
    assert summary["slots"] == 40 and summary["first_slot"] == "L1-01"
    assert isinstance(load_profile("fafb-lift"), BoardProfile)
