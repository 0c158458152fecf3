"""Simulated devices, runnable in process (``sim://NAME``) or on a pty (``vendhw sim NAME``).

Simulators are found through providers: modules with a ``specs()`` function returning
:class:`SimulatorSpec` entries (board simulators are generated from the board profiles, so a
new profile file gets a simulator too). Plugins add providers through the ``vendhw.simulators``
entry-point group.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from vendhw import registry
from vendhw.errors import ConfigurationError
from vendhw.sim.base import LineFaults, Reply, Scheduler, Simulator

PROVIDERS: list[str] = registry.simulator_providers()
"""Simulator providers (``module:func``): a view of :mod:`vendhw.registry`."""


@dataclass(frozen=True)
class SimulatorSpec:
    """How to list and build one simulator."""

    name: str
    kind: str
    protocol: str
    description: str
    factory: Callable[..., Simulator]
    baudrate: int | None = None

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "protocol": self.protocol,
                "description": self.description}

    @classmethod
    def of(cls, sim_cls: type[Simulator]) -> SimulatorSpec:
        return cls(sim_cls.name, sim_cls.kind, sim_cls.protocol, sim_cls.description,
                   sim_cls, sim_cls.baudrate)


def available() -> dict[str, SimulatorSpec]:
    """Every simulator that can be built here, by name."""
    targets = list(PROVIDERS) + registry.simulator_providers(registry.plugins())
    targets += [ep.value for ep in entry_points(group="vendhw.simulators")]
    found: dict[str, SimulatorSpec] = {}
    for target in targets:
        module_name, func = target.split(":")
        if importlib.util.find_spec(module_name) is None:
            continue
        for spec in getattr(importlib.import_module(module_name), func)():
            found.setdefault(spec.name, spec)
    return found


def is_profile_path(name: str) -> bool:
    """``./x.toml``, ``/etc/vendhw/board.toml``: a board profile file, not a simulator name."""
    return name.endswith(".toml") or "/" in name or "\\" in name


def simulator_class_for(name: str) -> type[Simulator]:
    """The class of simulator ``name`` (a registered name or a board profile file)."""
    if is_profile_path(name):
        from vendhw.boards.profile import load_profile
        from vendhw.sim.boards import simulator_class

        return simulator_class(load_profile(name))
    specs = available()
    spec = specs.get(name)
    if spec is None:
        raise ConfigurationError(
            f"unknown simulator {name!r}; known simulators: {', '.join(sorted(specs))} "
            "(or a path to a board profile .toml)")
    factory = spec.factory
    if not isinstance(factory, type):
        raise ConfigurationError(f"simulator {name!r} has no class to describe")
    return factory


def create(name: str, **options: Any) -> Simulator:
    """Build the simulator called ``name``; options go to its constructor.

    A board profile file given by path (``./x.toml``) gets its family's simulator, like the
    shipped profiles do. An option value of the wrong kind is a ConfigurationError that
    names the option (``ssp: option speed='x': speed takes a number``).
    """
    from vendhw.options import check_option_kinds

    extra: dict[str, Any] = {}
    if is_profile_path(name):
        from vendhw.boards.profile import load_profile
        from vendhw.sim.boards import simulator_class

        extra["profile"] = load_profile(name)
        factory: Callable[..., Simulator] = simulator_class(extra["profile"])
    else:
        specs = available()
        spec = specs.get(name)
        if spec is None:
            raise ConfigurationError(
                f"unknown simulator {name!r}; known simulators: {', '.join(sorted(specs))}"
            )
        factory = spec.factory
    if isinstance(factory, type) and issubclass(factory, Simulator):
        check_option_kinds(factory.option_annotations(), options, name)
    try:
        return factory(**extra, **options)
    except (ValueError, TypeError) as exc:
        given = ", ".join(f"{k}={v!r}" for k, v in options.items())
        raise ConfigurationError(f"{name}: bad option value ({given}): {exc}") from None


__all__ = ["LineFaults", "Reply", "Scheduler", "Simulator", "SimulatorSpec", "available",
           "create", "is_profile_path", "simulator_class_for"]
