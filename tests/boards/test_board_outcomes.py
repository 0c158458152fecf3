"""Every family against its simulator over ``sim://``: every outcome, retries, queries.

The simulator's ``vends`` list is the ground truth of what the motors did; the driver's
report must match it, and no retry or query may ever add a second vend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from board_helpers import FAMILY_OF, LossyTransport, fast_profile, make_sim, open_fast, seq_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vendhw.devices.boards import Board, Outcome, open_board
from vendhw.errors import ConfigurationError, NoResponseError
from vendhw.sim.boards import BoardSimulator
from vendhw.transport.sim import SimTransport

D, E, J, M = Outcome.DELIVERED, Outcome.EMPTY, Outcome.JAMMED, Outcome.MOTOR_FAULT
N, S, T, U = Outcome.NOT_DROPPED, Outcome.SENSOR_FAULT, Outcome.TIMEOUT, Outcome.UNKNOWN

# (fault, expected outcome, motors turned, products that left the slot)
EXPECTED: dict[str, list[tuple[str | None, Outcome, int, int]]] = {
    # FA FB has no drop-sensor codes: a product that never passed the sensor is "jammed";
    # with a broken sensor the VMC cannot tell and reports success (see docs/boards.md).
    "fafb-xy": [(None, D, 1, 1), ("empty", E, 0, 0), ("jam", J, 1, 0), ("motor_fault", M, 0, 0),
                ("no_drop", J, 1, 0), ("sensor_fault", D, 1, 1), ("slow_motor", T, 1, 0),
                ("reset_mid_vend", U, 1, 1)],
    "fafb-lift": [(None, D, 1, 1), ("empty", E, 0, 0), ("jam", J, 1, 0),
                  ("motor_fault", M, 0, 0), ("slow_motor", T, 1, 0),
                  ("reset_mid_vend", U, 1, 1)],
    # The 101 board cannot tell an empty slot from a stuck product: both are "not dropped".
    "board101": [(None, D, 1, 1), ("empty", N, 1, 0), ("jam", J, 1, 0), ("motor_fault", M, 0, 0),
                 ("no_drop", N, 1, 0), ("sensor_fault", S, 0, 0), ("slow_motor", T, 1, 0),
                 ("reset_mid_vend", U, 1, 1)],
    # Easivend has no jam bit: a stalled spiral "did not return home in time".
    "easivend-column": [(None, D, 1, 1), ("empty", N, 1, 0), ("jam", T, 1, 0),
                        ("motor_fault", M, 0, 0), ("no_drop", N, 1, 0),
                        ("sensor_fault", S, 1, 1), ("slow_motor", T, 1, 0),
                        ("reset_mid_vend", U, 1, 1)],
}
CASES = [(p, *row) for p, rows in EXPECTED.items() for row in rows]


def _fault(sim: BoardSimulator, fault: str | None, slot: str) -> None:
    if fault == "slow_motor":
        sim.motor_limit = 0.1  # the board's own motor timeout fires
        sim.set_fault("slow_motor", 0.3)
    elif fault == "reset_mid_vend":
        sim.set_fault("reset_mid_vend", True)
    elif fault is not None:
        sim.set_fault(fault, slot)


@pytest.mark.parametrize(("profile", "fault", "outcome", "turned", "dropped"), CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_outcome(profile: str, fault: str | None, outcome: Outcome, turned: int,
                 dropped: int) -> None:
    board, sim = open_fast(profile)
    events: list[str] = []
    with board:
        motor = board.profile.slots()[2]
        stock = sim.inventory[motor]
        _fault(sim, fault, board.profile.slot_label(motor))
        report = board.vend(motor, seq_for(board, 9), on_sent=lambda: events.append("sent"),
                            on_ack=lambda: events.append("ack"))
    assert report.outcome is outcome, report
    assert sim.vend_count(motor=motor) == turned
    assert stock - sim.inventory[motor] == dropped
    assert report.detail
    if outcome is not U:
        assert report.raw_code is not None
    if outcome is E:
        assert events == []  # refused by the pre-vend check: nothing that moves was sent
    else:
        assert events[0] == "sent"
    if profile == "board101" and outcome is D:
        assert report.drop_time_ms == sim.drop_time_ms


@pytest.mark.parametrize("profile", ["fafb-xy", "board101"])
def test_run_limit_with_the_board_still_busy_is_a_timeout(profile: str) -> None:
    board, sim = open_fast(profile)
    with board:
        sim.motor_limit = 30.0
        sim.set_fault("slow_motor", 1.5)  # longer than the host's run limit
        report = board.vend(board.profile.slots()[0], seq_for(board, 3))
    assert report.outcome is Outcome.TIMEOUT and "in progress" in report.detail
    assert sim.vend_count() == 1


@pytest.mark.parametrize("profile", list(EXPECTED))
def test_link_dying_after_the_command_is_unknown_and_vends_once(profile: str) -> None:
    board, sim = open_fast(profile)
    with board:
        motor = board.profile.slots()[0]
        report = board.vend(motor, seq_for(board, 4),
                            on_sent=lambda: sim.set_fault("silent", True))
    assert report.outcome is Outcome.UNKNOWN and report.detail
    assert sim.vend_count() <= 1


@pytest.mark.parametrize("profile", ["fafb-xy", "board101"])
def test_silent_board_at_open_names_port_baud_and_a_hint(profile: str) -> None:
    prof = fast_profile(profile)
    sim = make_sim(prof)
    sim.set_fault("silent", True)
    with pytest.raises(NoResponseError) as err:
        open_board(prof, f"sim://{profile}", simulator=sim)
    text = str(err.value)
    assert f"sim://{profile}" in text and f"{prof.serial['baudrate']} baud" in text
    assert "Hint:" in text and "expected" in text


def test_silent_easivend_fails_before_the_vend_is_written() -> None:
    board, sim = open_fast("easivend-column")  # the open probe is passive (see docs/dispensing.md)
    sim.set_fault("silent", True)
    sent: list[int] = []
    with board, pytest.raises(NoResponseError, match="before the vend"):
        board.vend(5, 1, on_sent=lambda: sent.append(1))
    assert sent == [] and sim.vends == []


@pytest.mark.parametrize("profile", list(EXPECTED))
def test_unknown_slots_and_sequences_are_refused_before_anything_moves(profile: str) -> None:
    board, sim = open_fast(profile)
    with board:
        with pytest.raises(ConfigurationError):
            board.vend(9999, seq_for(board, 1))
        if board.sequence_range is not None:
            for bad in (0, 256, None, True):
                with pytest.raises(ConfigurationError):
                    board.vend(board.profile.slots()[0], bad)  # type: ignore[arg-type]
    assert sim.vends == []
    if hasattr(sim, "commands"):
        assert [f for f in sim.commands if f["code"] in (0x03, 0x06)] == []


# --- retries never vend twice -----------------------------------------------------------


def test_fafb_lost_vend_command_is_resent_with_the_same_packno() -> None:
    profile = fast_profile("fafb-xy")
    sim = make_sim(profile)
    first = {"done": False}

    def drop(data: bytes) -> bool:
        if data[2] == 0x06 and not first["done"]:
            first["done"] = True
            return True
        return False

    lossy = LossyTransport(SimTransport(sim), drop)
    with open_board(profile, "sim://fafb-xy", simulator=sim) as board:
        board.transport = lossy
        board.session.transport = lossy
        report = board.vend(5, 17)
    assert report.outcome is Outcome.DELIVERED
    assert len(lossy.dropped) == 1 and sim.vend_count(seq=17) == 1


@pytest.mark.parametrize("when", ["before", "after"])
def test_fafb_corrupted_answers_never_make_a_second_vend(when: str) -> None:
    board, sim = open_fast("fafb-xy")
    with board:
        # Corrupt three answers of the VMC (ACKs, reports): the host resends with the same
        # PackNO, the VMC acknowledges the repeat without executing it.
        if when == "before":
            sim.set_fault("flip_bit", 3)
        report = board.vend(6, 18, on_sent=lambda: sim.set_fault("flip_bit", 3))
    assert report.outcome is Outcome.DELIVERED
    assert sim.vend_count(seq=18) == 1


def test_easivend_lost_reply_is_answered_by_a_check_not_a_second_dispense() -> None:
    board, sim = open_fast("easivend-column")
    with board:
        report = board.vend(7, 19, on_sent=lambda: sim.set_fault("flip_bit", 1))
    assert report.outcome is Outcome.DELIVERED
    assert sim.vend_count(seq=19) == 1


def test_board101_never_resends_start_motor() -> None:
    profile = fast_profile("board101")
    sim = make_sim(profile)
    state = {"lose": True}

    def lose_start_reply(data: bytes) -> bool:
        if data[:2] == b"\x00\x05" and state["lose"]:
            state["lose"] = False
            return True
        return False

    with open_board(profile, "sim://board101", simulator=sim) as board:
        lossy = LossyTransport(board.transport, drop_rx=lose_start_reply)
        board.session.link.transport = lossy
        report = board.vend(8, None)
        assert report.outcome is Outcome.UNKNOWN and "START MOTOR" in report.detail
        assert len(lossy.dropped_rx) == 1
        again = board.vend(9, None)  # the next vend waits while motor 8 still turns
    assert again.outcome is Outcome.DELIVERED
    assert [v.motor for v in sim.vends] == [8, 9]


@pytest.mark.parametrize("profile", list(EXPECTED))
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flips=st.integers(0, 4), drops=st.integers(0, 3), garbage=st.binary(max_size=6))
def test_line_noise_never_makes_a_second_vend(profile: str, flips: int, drops: int,
                                              garbage: bytes) -> None:
    board, sim = open_fast(profile)
    with board:
        motor = board.profile.slots()[1]
        seq = seq_for(board, 33)

        def noise() -> None:
            sim.set_fault("flip_bit", flips)
            sim.set_fault("drop_byte", drops)
            sim.line.garbage = garbage

        report = board.vend(motor, seq, on_sent=noise)
    assert sim.vend_count() <= 1
    if report.outcome is Outcome.DELIVERED:
        assert sim.vend_count() == 1 and sim.vends[0].dropped
    else:
        assert report.outcome is Outcome.UNKNOWN, report


# --- queries ------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["fafb-xy", "easivend-column"])
def test_query_reports_the_vend_without_vending_again(profile: str) -> None:
    board, sim = open_fast(profile)
    with board:
        motor = board.profile.slots()[3]
        sim.set_fault("jam", motor)
        first = board.vend(motor, 21)
        answer = board.query_vend(motor, 21)
        again = board.query_vend(motor, 21)
    assert answer is not None and again is not None
    assert answer.outcome is first.outcome is again.outcome
    assert answer.raw_code == first.raw_code
    assert sim.vend_count() == 1


@pytest.mark.parametrize("profile", ["fafb-xy", "easivend-column"])
def test_query_on_a_board_without_a_record_never_vends(profile: str) -> None:
    board, sim = open_fast(profile)
    with board:
        motor = board.profile.slots()[0]
        assert board.query_vend(motor, 77) is None  # fresh board: never heard of 77
        board.vend(motor, 78)
        sim.reset(0.0)  # power cut: the board forgets its last sequence number
        sim.silent_until = 0.0
        assert board.query_vend(motor, 78) is None
        assert board.query_vend(motor, 78) is None
    assert sim.vend_count() == 1 and sim.vends[0].seq == 78


def test_query_after_a_vend_that_was_still_running() -> None:
    board, sim = open_fast("easivend-column")
    with board:
        sim.set_fault("slow_motor", 0.3)
        report = board.vend(4, 40, on_sent=lambda: sim.set_fault("drop_byte", 1))
        assert report.outcome is Outcome.DELIVERED  # busy answers, then the result
    assert sim.vend_count() == 1


def test_board101_query_cannot_tell() -> None:
    board, sim = open_fast("board101")
    with board:
        board.vend(3, None)
        assert board.query_vend(3, 1) is None
    assert sim.vend_count() == 1


# --- status and self test ---------------------------------------------------------------


def _json_safe(value: Any) -> bool:
    import json

    json.dumps(value)
    return True


@pytest.mark.parametrize("profile", list(EXPECTED))
def test_status_and_selftest(profile: str) -> None:
    board, _ = open_fast(profile)
    with board:
        status = board.status()
        test = board.selftest()
    assert status["ok"] is True and _json_safe(status) and _json_safe(test)
    assert test["ok"] is True
    if FAMILY_OF[profile] == "fafb":
        assert status["door_open"] is False and isinstance(status["temperature_c"], int)
    if profile == "board101":
        assert test["checks"] == {"light_curtain": "clear"}


def test_board101_selftest_sees_a_blocked_curtain() -> None:
    board, sim = open_fast("board101")
    sim.set_fault("sensor_fault", True)
    with board:
        result = board.selftest()
    assert result == {"ok": False, "checks": {"light_curtain": "blocked"}}


def test_fafb_lift_sets_the_elevator_flag() -> None:
    board, sim = open_fast("fafb-lift")
    with board:
        board.vend(board.profile.slot_to_motor("L3-02"), 5)
    vend = [f for f in sim.commands if f["code"] == 0x06]
    assert vend and vend[0]["elevator"] is True and vend[0]["drop_sensor"] is True
    assert vend[0]["selection"] == 32


def test_vend_without_drop_sensor_is_reported_unverified() -> None:
    board, sim = open_fast("easivend-column")
    with board:
        sim.set_fault("no_drop", 2)
        report = board.vend(2, 3, drop_sensor=False)
    assert report.outcome is Outcome.DELIVERED and "not verified" in report.detail


def test_boards_are_typed_drivers() -> None:
    for profile in EXPECTED:
        board, _ = open_fast(profile)
        with board:
            assert isinstance(board, Board) and board.profile.name == profile


# --- simulator state and the decode CLI -------------------------------------------------


def test_simulator_persists_only_with_a_state_file(tmp_path: Path) -> None:
    state = tmp_path / "sim.json"
    board, _ = open_fast("easivend-column", state_file=str(state), inventory=2)
    with board:
        assert board.vend(3, 1).outcome is Outcome.DELIVERED
    restarted = make_sim(fast_profile("easivend-column"), state_file=str(state), inventory=2)
    assert restarted.inventory[3] == 1 and restarted.vend_count(seq=1) == 1
    fresh = make_sim(fast_profile("easivend-column"), inventory=2)
    assert fresh.inventory[3] == 2 and fresh.vends == []


def test_decode_cli_cuts_a_captured_fafb_stream() -> None:
    import json

    from click.testing import CliRunner

    from vendhw.cli import cli

    capture = "FA FB 41 00 40 13 FA FB 04 04 05 02 00 0A 0C FA FB 41 00 40"
    result = CliRunner().invoke(cli, ["decode", "fafb", "--stream", "--json",
                                      "--direction", "device", capture])
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r.get("command") for r in rows if r["valid"]] == ["POLL", "DISPENSING STATUS", "POLL"]
    assert [r["hex"] for r in rows if not r["valid"]] == ["13"]
    assert result.exit_code == 1  # garbage was present
