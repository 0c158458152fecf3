"""The two session styles against real simulators: polls answered, resends, de-duplication."""

from __future__ import annotations

from board_helpers import LossyTransport, fast_profile, make_sim

from vendhw.devices.boards.session import BoardMasterSession, HostMasterSession
from vendhw.framing import Frame, get_framer
from vendhw.framing.fafb import ACK
from vendhw.transport.sim import SimTransport


def _fafb_session(sim_transport: SimTransport | LossyTransport, retries: int = 5
                  ) -> BoardMasterSession:
    return BoardMasterSession(sim_transport, get_framer("fafb"), poll_period=0.02,
                              silence_limit=0.3, retries=retries, gap=0.02)


def test_fafb_simulator_counts_polls_a_connected_host_let_pass() -> None:
    """POLLs before the host's first answer are not its fault; missed ones after it are."""
    sim = make_sim(fast_profile("fafb-xy"))
    ack = get_framer("fafb").build(code=ACK)
    now = sim.next_tick() or 0.0
    for _ in range(3):  # nobody has opened the port yet
        assert sim.tick(now)
        now += sim.poll_period
    assert sim.polls_unanswered == 0
    sim.receive(ack, now)  # the host answers the last POLL...
    for _ in range(3):  # ...then lets three go by: the first was answered, two were not
        assert sim.tick(now)
        now += sim.poll_period
    assert sim.polls_sent == 6 and sim.polls_unanswered == 2


def test_board_master_answers_every_poll_and_hands_over_a_queued_command() -> None:
    profile = fast_profile("fafb-xy")
    sim = make_sim(profile)
    session = _fafb_session(SimTransport(sim))
    try:
        assert session.wait_alive(2.0)
        framer = get_framer("fafb")
        out = session.submit(framer.build(code=0x53, pack_no=9), "status")
        assert session.wait_sent(out, 2.0)
        assert session.wait_ack(out, 2.0) == "acked"
        report = session.take(lambda f: f["code"] == 0x54, 2.0)
        assert isinstance(report, Frame) and report["status"] == 0
        polls = session.polls
        # Keep listening for a while: every POLL gets its answer before the next one.
        assert session.take(lambda f: False, 0.3) is None
        assert session.polls > polls
        assert sim.polls_sent >= session.polls - 1
        assert sim.polls_unanswered == 0
        assert [f["code"] for f in sim.commands] == [0x53]
    finally:
        session.close()


def test_a_lost_command_is_resent_with_the_same_bytes_and_executed_once() -> None:
    profile = fast_profile("fafb-xy")
    sim = make_sim(profile)
    framer = get_framer("fafb")
    command = framer.build(code=0x06, pack_no=42, drop_sensor=1, elevator=0, selection=3)
    losses = iter([True, True, False])
    lossy = LossyTransport(SimTransport(sim),
                           lambda data: data == command and next(losses, False))
    session = _fafb_session(lossy)
    try:
        assert session.wait_alive(2.0)
        out = session.submit(command, "vend")
        assert session.wait_ack(out, 3.0) == "acked"
        assert out.attempts == 3 and lossy.dropped == [command, command]
        final = session.take(lambda f: f["code"] == 0x04 and f["status"] != 1, 2.0)
        assert final is not None and final["status"] == 2
    finally:
        session.close()
    assert sim.vend_count(seq=42) == 1


def test_an_ack_lost_on_the_way_back_does_not_repeat_the_command() -> None:
    profile = fast_profile("fafb-xy")
    sim = make_sim(profile)
    sim.set_fault("flip_bit", 2)  # the VMC's first two answers arrive corrupted
    session = _fafb_session(SimTransport(sim))
    try:
        assert session.wait_alive(2.0)
        out = session.submit(get_framer("fafb").build(code=0x06, pack_no=7, selection=4,
                                                      drop_sensor=1, elevator=0), "vend")
        assert session.wait_ack(out, 3.0) == "acked"
        assert session.take(lambda f: f["code"] == 0x04 and f["status"] == 2, 2.0) is not None
    finally:
        session.close()
    assert sim.vend_count(seq=7) == 1
    assert [f["code"] for f in sim.commands] == [0x06]


def test_a_resent_board_report_is_handed_over_once() -> None:
    profile = fast_profile("fafb-xy")
    sim = make_sim(profile)
    framer = get_framer("fafb")
    ack = framer.build(code=0x42)
    state = {"drop_next_ack": False}

    def drop(data: bytes) -> bool:
        # Lose the host's first ACK to the 0x54 report: the VMC must send it again.
        if data == ack and state["drop_next_ack"]:
            state["drop_next_ack"] = False
            return True
        return False

    lossy = LossyTransport(SimTransport(sim), drop)
    session = _fafb_session(lossy)
    try:
        assert session.wait_alive(2.0)
        out = session.submit(framer.build(code=0x53, pack_no=5), "status")
        assert session.wait_ack(out, 2.0) == "acked"
        state["drop_next_ack"] = True
        first = session.take(lambda f: f["code"] == 0x54, 2.0)
        assert first is not None
        assert session.take(lambda f: f["code"] == 0x54, 0.3) is None
        assert lossy.dropped == [ack]
    finally:
        session.close()


def test_board_master_session_reports_silence() -> None:
    profile = fast_profile("fafb-xy")
    sim = make_sim(profile)
    sim.set_fault("silent", True)
    session = _fafb_session(SimTransport(sim))
    try:
        assert not session.wait_alive(0.3)
        assert not session.alive
        out = session.submit(b"\xfa\xfb\x53\x01\x01\x53", "status")
        assert not session.wait_sent(out, 0.2)
        assert session.cancel(out) and out.failed.is_set()
    finally:
        session.close()


def test_host_master_request_resends_the_same_bytes_on_silence() -> None:
    profile = fast_profile("easivend-column")
    sim = make_sim(profile)
    framer = get_framer("easivend")
    check = framer.build(sn=9, mt=0x72, column=4)
    losses = iter([True, False])
    lossy = LossyTransport(SimTransport(sim), lambda d: d == check and next(losses, False))
    session = HostMasterSession(lossy, framer, response_timeout=0.1, retries=2, gap=0.02)
    reply = session.request(check, accept=lambda f: f["sn"] == 9)
    assert reply is not None and reply["mt"] == 0x72
    assert session.writes == 2 and lossy.dropped == [check]
    sim.set_fault("silent", True)
    assert session.request(check, accept=lambda f: f["sn"] == 9) is None
    assert session.writes == 5
    session.close()
    assert sim.vends == []
