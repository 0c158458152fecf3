"""The simulator's sequence flag after SYNC (regression: SYNC sent with flag 0, as the Node
``encrypted-smiley-secure-protocol`` host and the NV9USB log of its issue #39 show, made the
simulator treat the next command, also flag 0, as a retransmission and skip it)."""

from __future__ import annotations

from vendhw.framing.ssp import SspFramer
from vendhw.sim.ssp import SspSimulator


def exchange(sim: SspSimulator, data: bytes, seq: int, now: float) -> bytes:
    framer = SspFramer()
    (reply,) = sim.receive(framer.build(data=data, seq=seq), now)
    frame = framer.parse(reply[1], "device")
    return bytes((frame["code"],)) + bytes(frame.get("data", b""))


def test_sync_with_flag_zero_then_a_command_with_flag_zero_is_executed() -> None:
    sim = SspSimulator(reply_delay=0)
    assert exchange(sim, b"\x11", 0, 0.01) == b"\xf0"
    assert exchange(sim, b"\x06\x05", 0, 0.02) == b"\xf0"
    assert sim.version == 5 and sim.executed == [0x11, 0x06]


def test_after_sync_a_repeated_flag_is_still_a_retransmission() -> None:
    sim = SspSimulator(reply_delay=0)
    exchange(sim, b"\x11", 1, 0.01)
    assert exchange(sim, b"\x06\x05", 0, 0.02) == b"\xf0"
    assert exchange(sim, b"\x06\x09", 0, 0.03) == b"\xf0"  # same flag: old reply, not run
    assert sim.version == 5 and sim.executed == [0x11, 0x06]


def test_poll_reports_events_in_the_order_they_happened() -> None:
    """Regression: credits (which wait for EVENT ACK) used to come after the events that
    followed them, e.g. NOTE STACKED before CREDIT NOTE; GA138's example is EE 01 EB."""
    sim = SspSimulator(reply_delay=0, speed=1000)
    sim.enabled, sim.inhibits = True, 0x0F
    sim.insert_note(1)
    seen = b""
    for step in range(1, 20):
        sim.advance(step * 0.01)
        seen += sim.execute(0x07, b"")[1:]  # POLL
        if b"\xee" in seen:
            break
    assert seen.endswith(bytes.fromhex("EE 01 EB")) or seen.endswith(bytes.fromhex("EE 01 DB"))
