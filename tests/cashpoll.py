"""Poll a cash device or acceptor until an event of a wanted kind arrives (shared by the tests).

Cash devices are polled, not pushed, so a test that inserts a note has to poll until the device
reports it; doing it in one place keeps the deadline and the failure message the same everywhere.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from vendhw.devices.cash import CashEvent, CashEventKind


def poll_until(poll: Callable[..., list[CashEvent]], kinds: set[CashEventKind], *,
               seconds: float = 2.0, **poll_args: Any) -> list[CashEvent]:
    """Call ``poll(**poll_args)`` until an event of one of ``kinds`` arrives; return all seen."""
    seen: list[CashEvent] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        seen += poll(**poll_args)
        if any(e.kind in kinds for e in seen):
            return seen
        time.sleep(0.005)  # sleep-ok: a test pacing its polls of a simulator
    raise AssertionError(f"no {kinds} within {seconds} s; saw {[e.kind for e in seen]}")
