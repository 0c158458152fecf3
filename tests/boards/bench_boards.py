"""Figures for the board families: frame decode time and a vend round trip over a pty.

Run: ``.venv/bin/python tests/boards/bench_boards.py`` (not collected by pytest).

* decode: ``Framer.parse`` of one typical board reply, best of 5 x 100 000 (timeit), and the
  stream deframer over 1000 back-to-back frames;
* vend round trip: ``Board.vend`` against the family's simulator served on a real pty
  (``SimulatorOnPty``), simulated motor time 0, so the figure is protocol + serial path:
  once with the shipped profile's timings (FA FB: the VMC polls every 200 ms; 101: the
  result is read after 1 s, as its doc says) and once with the short test timings.
"""

from __future__ import annotations

import statistics
import sys
import time
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from board_helpers import fast_profile

from vendhw.devices.boards import BoardProfile, load_profile, open_board
from vendhw.framing import get_framer
from vendhw.sim.boards import simulator_class
from vendhw.transport import SimulatorOnPty


def decode() -> None:
    frames = {
        "fafb": bytes.fromhex("FA FB 04 04 05 02 00 0A 0C"),
        "board101": get_framer("board101").build(direction="device", code=3, result=0,
                                                 drop_time_ms=40),
        "easivend": get_framer("easivend").build(direction="device", status=0x21, sn=3,
                                                 mt=0x70, column=5),
    }
    for name, raw in frames.items():
        framer = get_framer(name)
        n = 100_000
        per = min(timeit.repeat(lambda f=framer, r=raw: f.parse(r, "device"), number=n,
                                repeat=5)) / n
        stream = raw * 1000
        per_stream = min(timeit.repeat(lambda f=framer, s=stream: f.deframer("device").feed(s),
                                       number=5, repeat=5)) / 5 / 1000
        print(f"decode {name:9s} parse {per * 1e6:5.2f} us/frame, "
              f"stream {per_stream * 1e6:5.2f} us/frame ({len(raw)} bytes)")


def round_trip(profile: BoardProfile, label: str, count: int) -> None:
    sim_options = {"poll_period": profile.timing.poll_period} if profile.family == "fafb" else {}
    sim = simulator_class(profile)(profile=profile, inventory=1000, motor_time=0.0,
                                   **sim_options)
    times = []
    with SimulatorOnPty(sim) as server, open_board(profile, server.port) as board:
        for i in range(count):
            motor = profile.slots()[i % len(profile.slots())]
            seq = None if board.sequence_range is None else i % 255 + 1
            start = time.perf_counter()
            report = board.vend(motor, seq)
            times.append(time.perf_counter() - start)
            assert report.delivered, report
    times.sort()
    p90 = times[int(0.9 * (len(times) - 1))]
    median = statistics.median(times) * 1e3
    print(f"vend over pty {profile.name:16s} {label:8s} median {median:7.1f}"
          f" ms, p90 {p90 * 1e3:7.1f} ms ({count} vends, {sim.vend_count()} motor turns)")


def main() -> None:
    decode()
    for name in ("fafb-xy", "board101", "easivend-column"):
        round_trip(load_profile(name), "shipped", 5)
        fast = fast_profile(name)
        if fast.family == "fafb":
            fast = fast.replace(timing={"poll_period": 0.02})  # the VMC polls every 20 ms
        round_trip(fast, "fast", 30)


if __name__ == "__main__":
    main()
