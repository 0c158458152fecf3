"""Power-cut hooks for tests: a process dies (``os._exit``, like SIGKILL) right after a named
step, so the tests can walk every step of a sale and check that nothing ships twice.

It sits at the bottom of the package so that any layer (journals, device hosts, the agent)
can mark its steps without importing the layer that owns the journal.
"""

from __future__ import annotations

import os

CRASH_ENV = "VENDHW_CRASH_AT"
"""Environment variable naming the step after which the journal kills the process (tests)."""

CRASH_EXIT_CODE = 137
"""Exit status of a crash-hook kill (what a SIGKILL'd process reports in a shell)."""


def crash_point(step: str) -> None:
    """Die like a power cut right here if ``VENDHW_CRASH_AT`` names ``step`` (tests and the
    demo's power cut; the ship and cash journals name theirs ``ship:...``/``cash:...``)."""
    if os.environ.get(CRASH_ENV, "").strip().lower() == step:
        os._exit(CRASH_EXIT_CODE)


__all__ = ["CRASH_ENV", "CRASH_EXIT_CODE", "crash_point"]
