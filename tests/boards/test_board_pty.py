"""Each family over a real pty (``SimulatorOnPty``): the serial path end to end."""

from __future__ import annotations

import pytest
from board_helpers import fast_profile, make_sim, seq_for

from vendhw.devices.boards import Outcome, open_board
from vendhw.transport import SimulatorOnPty

PROFILES = ("fafb-xy", "board101", "easivend-column")


@pytest.mark.parametrize("profile", PROFILES)
def test_vends_over_a_pty(profile: str) -> None:
    prof = fast_profile(profile)
    sim = make_sim(prof)
    sim.set_fault("jam", prof.slot_label(prof.slots()[1]))
    with SimulatorOnPty(sim) as server, open_board(prof, server.port) as board:
        assert board.transport.baudrate == prof.serial["baudrate"]
        ok = board.vend(prof.slots()[0], seq_for(board, 1))
        jammed = board.vend(prof.slots()[1], seq_for(board, 2))
        status = board.status()
    assert ok.outcome is Outcome.DELIVERED
    assert jammed.outcome in (Outcome.JAMMED, Outcome.TIMEOUT)  # Easivend: no jam bit
    assert status["ok"] is True
    assert [v.motor for v in sim.vends] == prof.slots()[:2]


@pytest.mark.parametrize("profile", ["fafb-xy", "easivend-column"])
def test_reset_mid_vend_over_a_pty_is_unknown_and_the_query_never_vends(profile: str) -> None:
    prof = fast_profile(profile)
    sim = make_sim(prof)
    sim.set_fault("reset_mid_vend", True)
    with SimulatorOnPty(sim) as server, open_board(prof, server.port) as board:
        motor = prof.slots()[0]
        report = board.vend(motor, 9)
        assert report.outcome is Outcome.UNKNOWN
        assert board.query_vend(motor, 9) is None  # the board forgot: cannot tell
    assert sim.vend_count() == 1 and sim.vends[0].dropped and sim.resets == 1


def test_fafb_session_answers_every_poll_over_a_pty() -> None:
    prof = fast_profile("fafb-xy")
    sim = make_sim(prof)
    with SimulatorOnPty(sim) as server, open_board(prof, server.port) as board:
        for n in range(1, 4):
            assert board.vend(prof.slots()[n], n).outcome is Outcome.DELIVERED
    assert sim.polls_sent > 0
    assert sim.polls_unanswered == 0
