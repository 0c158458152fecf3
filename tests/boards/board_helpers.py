"""Shared set-up for the board tests: profiles with short timings and their simulators.

The shipped profiles carry the hardware's timings (200 ms polls, 8-15 s run limits); the tests
shorten them with :meth:`BoardProfile.replace` so a whole family's outcome table runs in
seconds. Nothing else changes: same drivers, same framers, same simulators.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vendhw.devices.boards import Board, BoardProfile, load_profile, open_board
from vendhw.sim.boards import BoardSimulator, simulator_class
from vendhw.transport.base import Transport

FAST_TIMING: dict[str, dict[str, float]] = {
    "fafb": {"response_timeout": 0.3, "motor_run_limit": 0.6, "drop_sensor_wait": 0.1},
    "board101": {"poll_period": 0.02, "response_timeout": 0.2, "motor_run_limit": 0.3,
                 "drop_sensor_wait": 0.05},
    "easivend": {"poll_period": 0.02, "response_timeout": 0.2, "motor_run_limit": 0.3,
                 "drop_sensor_wait": 0.05},
}
SIM_OPTIONS: dict[str, dict[str, Any]] = {
    "fafb": {"poll_period": 0.02, "motor_time": 0.02},
    "board101": {"motor_time": 0.02},
    "easivend": {"motor_time": 0.02},
}
PROFILES = ("fafb-xy", "fafb-lift", "board101", "easivend-column")
FAMILY_OF = {"fafb-xy": "fafb", "fafb-lift": "fafb", "board101": "board101",
             "easivend-column": "easivend"}


def fast_profile(profile: str | BoardProfile) -> BoardProfile:
    prof = profile if isinstance(profile, BoardProfile) else load_profile(profile)
    return prof.replace(timing=FAST_TIMING[prof.family], protocol={"curtain_settle": 0.01})


def make_sim(profile: BoardProfile, **options: Any) -> BoardSimulator:
    opts = {**SIM_OPTIONS[profile.family], **options}
    return simulator_class(profile)(profile=profile, **opts)


def open_fast(name: str | BoardProfile, **sim_options: Any) -> tuple[Board, BoardSimulator]:
    """A driver on ``sim://`` with short timings, and its simulator."""
    profile = fast_profile(name)
    sim = make_sim(profile, **sim_options)
    board = open_board(profile, f"sim://{profile.name}", simulator=sim)
    return board, sim


def seq_for(board: Board, n: int) -> int | None:
    return None if board.sequence_range is None else n


class LossyTransport(Transport):
    """A line that loses chosen frames (noise on the wire), in either direction.

    ``drop(data)`` decides per host write, ``drop_rx(data)`` per chunk the board sent;
    everything else passes to the wrapped transport.
    """

    def __init__(self, inner: Transport, drop: Callable[[bytes], bool] = lambda d: False,
                 drop_rx: Callable[[bytes], bool] = lambda d: False) -> None:
        super().__init__(inner.url, baudrate=inner.baudrate, trace=False)
        self.inner = inner
        self.drop = drop
        self.drop_rx = drop_rx
        self.dropped: list[bytes] = []
        self.dropped_rx: list[bytes] = []

    def _read_some(self, timeout: float) -> bytes:
        data = self.inner._read_some(timeout)
        if data and self.drop_rx(data):
            self.dropped_rx.append(data)
            return b""
        return data

    def _write(self, data: bytes) -> None:
        if self.drop(data):
            self.dropped.append(data)
            return
        self.inner.write(data)

    def _close(self) -> None:
        self.inner.close()
