"""Binary framing: checksums, frame layouts, framers and stream deframers (no I/O).

``get_framer("ssp")`` returns the framer registered under that name; ``framer_names()``
lists them. Plugins register more through the ``vendhw.framers`` entry-point group.
"""

from __future__ import annotations

import importlib
import importlib.util
from functools import cache
from importlib.metadata import entry_points
from typing import Any

from vendhw import registry
from vendhw.errors import ConfigurationError
from vendhw.framing.base import (
    DIRECTIONS,
    FRAMERS,
    Deframer,
    DeframerStats,
    Direction,
    Frame,
    Framer,
    Garbage,
    Layout,
    normalise_direction,
)


@cache
def _targets() -> dict[str, str]:
    targets = dict(FRAMERS)
    for name, target in registry.framers(registry.plugins()).items():
        targets.setdefault(name, target)
    for ep in entry_points(group="vendhw.framers"):
        targets.setdefault(ep.name, ep.value)
    return {
        name: target for name, target in targets.items()
        if importlib.util.find_spec(target.split(":")[0]) is not None
    }


def framer_names() -> list[str]:
    """Names of every framer that can be loaded here, sorted."""
    return sorted(_targets())


def get_framer(name: str, **options: Any) -> Framer:
    """Instantiate the framer registered as ``name`` (options such as ``checksum``)."""
    target = _targets().get(name.lower())
    if target is None:
        known = ", ".join(framer_names())
        raise ConfigurationError(f"unknown protocol {name!r}; known protocols: {known}")
    module_name, cls_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    framer = cls(**options)
    assert isinstance(framer, Framer)
    return framer


__all__ = [
    "DIRECTIONS",
    "Deframer",
    "DeframerStats",
    "Direction",
    "Frame",
    "Framer",
    "Garbage",
    "Layout",
    "framer_names",
    "get_framer",
    "normalise_direction",
]
