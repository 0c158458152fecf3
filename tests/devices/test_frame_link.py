"""FrameLink: replies come back as soon as they are whole; a false start never hides them."""

from __future__ import annotations

import time

import pytest

from vendhw.devices.link import FrameLink
from vendhw.errors import NoResponseError
from vendhw.framing import get_framer
from vendhw.sim.base import Reply, Simulator
from vendhw.transport import SimTransport

ID003 = get_framer("id003")
REPLY = ID003.build(code=0x11)  # ENABLE/IDLING


class Noisy(Simulator):
    """Answers with line noise that looks like the start of a 64-byte packet, then the reply."""

    name = "noisy"
    kind = "test"
    protocol = "id003"

    def __init__(self, noise: bytes) -> None:
        super().__init__()
        self.noise = noise

    def receive(self, data: bytes, now: float) -> list[Reply]:
        return [(0.0, self.noise + REPLY)]


def test_false_start_is_dropped_after_the_gap_not_at_the_deadline() -> None:
    link = FrameLink(SimTransport(Noisy(b"\xfc\x40")), ID003, gap=0.05)
    started = time.monotonic()
    frame = link.request(ID003.build(code=0x11), timeout=5.0)
    assert frame["command"] == "ENABLE/IDLING"
    assert time.monotonic() - started < 4.0  # well before the 5 s deadline
    assert link.garbage and link.garbage[-1].raw.startswith(b"\xfc\x40")


def test_clean_reply_and_silence() -> None:
    link = FrameLink(SimTransport(Noisy(b"")), ID003, gap=0.05)
    assert link.request(ID003.build(code=0x11), timeout=1.0).raw == REPLY
    silent = Noisy(b"")
    silent.set_fault("silent")
    with pytest.raises(NoResponseError, match="no id003 reply"):
        FrameLink(SimTransport(silent), ID003, gap=0.05).request(REPLY, timeout=0.1)
