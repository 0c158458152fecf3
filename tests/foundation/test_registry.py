"""One registry: the old tables are views of it, and a third-party protocol (entry point
``vendhw.protocols``) shows up in ``vendhw decode``, ``vendhw sim --list`` and the cash opener."""

from __future__ import annotations

import importlib.metadata
import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from vendhw import registry
from vendhw.cli import cli

PLUGIN = '''
from vendhw.framing.ssp import SspFramer
from vendhw.registry import Protocol
from vendhw.sim.ssp import SspSimulator


class AcmeFramer(SspFramer):
    name = "acme"


class AcmeSimulator(SspSimulator):
    name = "acme-sim"
    description = "an ACME note reader (SSP underneath)"


def specs():
    from vendhw.sim import SimulatorSpec

    return [SimulatorSpec.of(AcmeSimulator)]


def open_acme(url, **options):
    from vendhw.devices.ssp import open_device

    return open_device(url, **options)


PROTOCOL = Protocol("acme", "ACME note reader", framer="vendhw_acme:AcmeFramer",
                    simulators=("vendhw_acme:specs",), cash={"acme-cash": "vendhw_acme:open_acme"})
'''


def test_old_tables_are_views_of_the_registry() -> None:
    from vendhw.boards.profile import FAMILIES
    from vendhw.devices.registry import PROTOCOLS
    from vendhw.framing import FRAMERS
    from vendhw.sim import PROVIDERS

    assert FRAMERS == registry.framers()
    assert set(FRAMERS) == {"ssp", "cctalk", "id003", "mdb", "fafb", "board101", "easivend"}
    assert PROVIDERS == registry.simulator_providers()
    assert list(PROTOCOLS) == ["cctalk-coin", "cctalk-hopper", "cctalk-bill", "ssp", "id003",
                               "mdb-changer", "mdb-bill"]
    assert FAMILIES == registry.board_families() == {
        "fafb": "vendhw.devices.boards.fafb:FaFbBoard",
        "board101": "vendhw.devices.boards.board101:Board101",
        "easivend": "vendhw.devices.boards.easivend:EasivendBoard"}
    from vendhw.cli.cash import PROTOCOLS as CLI_PROTOCOLS

    assert CLI_PROTOCOLS is PROTOCOLS


@pytest.fixture
def acme(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    (tmp_path / "vendhw_acme.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    real = importlib.metadata.entry_points

    def fake(**kwargs: str) -> object:
        if kwargs.get("group") == registry.ENTRY_POINT_GROUP:
            return [importlib.metadata.EntryPoint("acme", "vendhw_acme:PROTOCOL",
                                                  registry.ENTRY_POINT_GROUP)]
        return real(**kwargs)

    monkeypatch.setattr(registry, "entry_points", fake)
    import vendhw.framing

    registry.reset()
    vendhw.framing._targets.cache_clear()
    yield
    registry.reset()
    vendhw.framing._targets.cache_clear()
    sys.modules.pop("vendhw_acme", None)


@pytest.mark.usefixtures("acme")
def test_a_plugin_protocol_reaches_decode_sim_and_cash() -> None:
    result = CliRunner().invoke(cli, ["decode", "acme", "7F 80 01 11 65 82", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.splitlines()[0])["command"] == "SYNC"

    result = CliRunner().invoke(cli, ["sim", "--list"])
    assert result.exit_code == 0, result.output
    assert "acme-sim" in result.output

    from vendhw.devices.registry import open_cash_device

    device = open_cash_device("acme-cash", "sim://acme-sim")
    try:
        from vendhw.devices.ssp import SspDevice

        assert type(device) is SspDevice
    finally:
        close = getattr(device, "close", None)
        if close is not None:
            close()
