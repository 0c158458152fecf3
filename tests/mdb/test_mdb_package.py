"""``vendhw.devices.mdb`` is a package now: every name of the former single module still
imports from it, the registry's openers resolve, and the shared-bus table is one object."""

from __future__ import annotations

import importlib

import pytest

from vendhw import registry
from vendhw.devices import mdb
from vendhw.devices.mdb import link, openers

# The module-level names of vendhw/devices/mdb.py before the split (stdlib imports left out).
FORMER_NAMES = """
ACK Address BILL_ROUTES BILL_SETUP BILL_STATUS BillCommand BillCore BillEscrow BillExpansion
BillSetup CHANGER_BUSY CHANGER_DIAGNOSTICS CHANGER_SETUP CHANGER_STATUS COIN_ROUTES CashDevice
CashEvent CashEventKind ChangerCommand ChangerCore ChangerExpansion ChangerSetup
ConfigurationError CoreT Deliver EventSink FEATURE_ALTERNATIVE_PAYOUT
FEATURE_CONTROLLED_MANUAL_FILL FEATURE_EXTENDED_DIAGNOSTIC FEATURE_FTL Frame FramingError Garbage
IDENTIFICATION Identification JUST_RESET_PAUSE JUST_RESET_POLLS JUST_RESET_WAIT Layout MAX_BLOCK
MAX_DISPENSE MdbBillValidator MdbCoinChanger MdbFramer MdbLink NAK NakError NoResponseError
NotSupportedError Op PAYOUT_BUSY PAYOUT_CHUNK POLL_INTERVAL PTY_MAJORS PTY_RESPONSE_TIMEOUT
RESPONSE_TIMEOUT RET RETRANSMISSIONS Request SETUP_TIME SHARED_SIMULATORS SIM_RESPONSE_TIMEOUT
Step T TOKEN_CREDIT Transport TubeCounts UnexpectedReplyError V Wait ZERO_DECIMAL_CURRENCIES
_BUSES _BUSES_LOCK _CashCore _CoreAttr _MdbCashDevice _Payout _PollState _link_url _open_link
_parse _text bus_key currency_of drive is_pty log minor_unit_factor open_bill_validator
open_changer open_transport option_flag parse_bill_poll parse_bill_setup parse_changer_poll
parse_changer_setup parse_diagnostic_status parse_identification shared_link
""".split()


@pytest.mark.parametrize("name", FORMER_NAMES)
def test_former_name_imports_from_the_package(name: str) -> None:
    assert hasattr(mdb, name), f"vendhw.devices.mdb.{name} is gone"


def test_all_lists_only_names_that_exist() -> None:
    assert [n for n in mdb.__all__ if not hasattr(mdb, n)] == []


def test_registry_openers_resolve() -> None:
    targets = {k: v for k, v in registry.cash_devices().items() if k.startswith("mdb-")}
    assert set(targets) == {"mdb-changer", "mdb-bill"}
    for target in targets.values():
        module_name, attr = target.split(":")
        assert callable(getattr(importlib.import_module(module_name), attr))
    assert mdb.open_changer is openers.open_changer


def test_one_bus_table_and_one_logger() -> None:
    # MdbLink.release and shared_link live in different modules and must see one table.
    assert mdb._BUSES is link._BUSES is openers._BUSES
    assert mdb._BUSES_LOCK is openers._BUSES_LOCK
    assert mdb.log.name == "vendhw.devices.mdb"
