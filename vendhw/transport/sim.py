"""``sim://``: moved to :mod:`vendhw.sim.transport` (the simulators own their scheme).

``from vendhw.transport.sim import SimTransport`` keeps working: the name is loaded on first
use, so this layer still imports no simulator.
"""

from __future__ import annotations

import importlib
from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("SimTransport", "open_sim_url"):
        return getattr(importlib.import_module("vendhw.sim.transport"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
