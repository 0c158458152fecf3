"""One registry of protocols: each protocol says in one place what it brings.

A :class:`Protocol` names, as ``"module:attr"`` strings loaded only when used, its framer
(``vendhw decode``, ``get_framer``), its simulator providers (``sim://``, ``vendhw sim``),
its cash devices by CLI name (``vendhw cash``, the agent's ``[[cash]]``), and for a board
family its driver class (``family = ...`` in a board profile). This module sits at the
bottom of the layers and imports nothing of vendhw: every layer reads its own view of it
(``FRAMERS``, ``PROVIDERS``, ``PROTOCOLS``, ``FAMILIES`` keep their names and contents).

Third-party packages add protocols through the ``vendhw.protocols`` entry-point group; the
entry point is a :class:`Protocol` or a list of them::

    [project.entry-points."vendhw.protocols"]
    acme = "vendhw_acme:PROTOCOL"

Built-in names win over a plugin's. See ``docs/adding-a-protocol.md``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points

ENTRY_POINT_GROUP = "vendhw.protocols"


@dataclass(frozen=True)
class Protocol:
    """What one protocol (or board family) brings; every target is ``"module:attr"``."""

    name: str
    """The protocol name: ``vendhw decode NAME``, ``get_framer(NAME)``."""
    description: str = ""
    framer: str | None = None
    """The framer class (``module:Class``), built as ``Class(**options)``."""
    simulators: tuple[str, ...] = ()
    """Simulator providers (``module:func``), each returning ``SimulatorSpec`` objects."""
    cash: Mapping[str, str] = field(default_factory=dict)
    """Cash devices: CLI name (``vendhw cash -P NAME``) -> ``open(url, **options)``."""
    board: str | None = None
    """For a board family: the driver class (a ``Board`` subclass)."""


BUILTIN: tuple[Protocol, ...] = (
    Protocol("echo", "loopback test device", simulators=("vendhw.sim.echo:specs",)),
    Protocol("boards", "board simulators built from the board profiles (every family)",
             simulators=("vendhw.sim.boards:specs",)),
    Protocol("cctalk", "ccTalk coin acceptors, hoppers, bill validators",
             framer="vendhw.framing.cctalk:CcTalkFramer",
             simulators=("vendhw.sim.cctalk:specs",),
             cash={"cctalk-coin": "vendhw.devices.cctalk:open_coin_acceptor",
                   "cctalk-hopper": "vendhw.devices.cctalk:open_hopper",
                   "cctalk-bill": "vendhw.devices.cctalk:open_bill_validator"}),
    Protocol("ssp", "Innovative Technology eSSP/SSP note validators and payouts",
             framer="vendhw.framing.ssp:SspFramer", simulators=("vendhw.sim.ssp:specs",),
             cash={"ssp": "vendhw.devices.ssp:open_device"}),
    Protocol("id003", "JCM ID-003 bill validators",
             framer="vendhw.framing.id003:Id003Framer", simulators=("vendhw.sim.id003:specs",),
             cash={"id003": "vendhw.devices.id003:open_device"}),
    Protocol("mdb", "MDB coin changers, bill validators and cashless readers",
             framer="vendhw.framing.mdb:MdbFramer",
             simulators=("vendhw.sim.mdb:specs", "vendhw.sim.mdb_cashless:specs",
                         "vendhw.sim.mdb_ascii:specs"),
             cash={"mdb-changer": "vendhw.devices.mdb:open_changer",
                   "mdb-bill": "vendhw.devices.mdb:open_bill_validator"}),
    Protocol("fafb", "FA FB vending boards", framer="vendhw.framing.fafb:FaFbFramer",
             board="vendhw.devices.boards.fafb:FaFbBoard"),
    Protocol("board101", "board101 vending boards",
             framer="vendhw.framing.board101:Board101Framer",
             board="vendhw.devices.boards.board101:Board101"),
    Protocol("easivend", "Easivend vending boards",
             framer="vendhw.framing.easivend:EasivendFramer",
             board="vendhw.devices.boards.easivend:EasivendBoard"),
)
"""The protocols shipped with vendhw, one entry each."""


@cache
def plugins() -> tuple[Protocol, ...]:
    """Protocols added by installed packages (``vendhw.protocols`` entry points)."""
    found: list[Protocol] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        loaded = ep.load()
        items: Iterable[object] = loaded if isinstance(loaded, (list, tuple)) else [loaded]
        found.extend(p for p in items if isinstance(p, Protocol))
    return tuple(found)


def protocols() -> list[Protocol]:
    """Every protocol: the built-in ones first, then the plugins'."""
    return [*BUILTIN, *plugins()]


def framers(entries: Iterable[Protocol] = BUILTIN) -> dict[str, str]:
    """Framer name -> ``module:Class``."""
    return {p.name: p.framer for p in entries if p.framer}


def simulator_providers(entries: Iterable[Protocol] = BUILTIN) -> list[str]:
    """Every simulator provider ``module:func``, in order."""
    return [target for p in entries for target in p.simulators]


def cash_devices(entries: Iterable[Protocol] = BUILTIN) -> dict[str, str]:
    """Cash device CLI name -> ``module:opener``."""
    return {name: target for p in entries for name, target in p.cash.items()}


def board_families(entries: Iterable[Protocol] = BUILTIN) -> dict[str, str]:
    """Board family -> driver ``module:Class``."""
    return {p.name: p.board for p in entries if p.board}


def reset() -> None:
    """Forget the plugins found so far (tests that install a fake entry point)."""
    plugins.cache_clear()


__all__ = ["BUILTIN", "ENTRY_POINT_GROUP", "Protocol", "board_families",
           "cash_devices", "framers", "plugins", "protocols", "reset", "simulator_providers"]
