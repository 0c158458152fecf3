"""``vendhw.devices.mdb_cashless`` became a package (tables, polls, core, reader): every name
the single module had still imports from it, and its logger keeps its name."""

from __future__ import annotations

import importlib
import logging

import pytest

import vendhw.devices.mdb_cashless as cashless

FORMER_NAMES = (
    "ADDRESSES CASHLESS_1 CASHLESS_2 COMMAND_RETRIES DEFAULT_MAX_RESPONSE DEFINITE_FAILURES "
    "END_SESSION_POLLS EVENT_NAMES JUST_RESET_POLLS OPTION_CASH_SALE OPTION_DISPLAY "
    "OPTION_MULTIVEND OPTION_REFUNDS POLL_INTERVAL RESET_TO_POLL RESPONSE_TIME UNKNOWN_FUNDS "
    "VMC_FEATURE_LEVEL VMC_ID Request Step CashlessEvent ReaderConfig parse_config "
    "parse_peripheral_id _length _FIXED_LENGTHS parse_poll CardSale CashlessCore "
    "MdbCashlessReader open_cashless Wait Op drive Address Command Expansion Poll Reader "
    "Revalue Setup Vend PERIPHERAL_ID READER_CONFIG RESPONSE_TIMEOUT SETUP_TIME "
    "ConfigurationError FramingError NakError NoResponseError SequenceError "
    "UnexpectedReplyError log").split()


@pytest.mark.parametrize("name", FORMER_NAMES)
def test_every_former_name_still_imports(name: str) -> None:
    assert hasattr(cashless, name)


def test_every_public_name_exists_and_the_logger_keeps_its_name() -> None:
    assert all(hasattr(cashless, name) for name in cashless.__all__)
    reader = importlib.import_module("vendhw.devices.mdb_cashless.reader")
    assert reader.log is cashless.log is logging.getLogger("vendhw.devices.mdb_cashless")
    assert cashless.MdbCashlessReader is reader.MdbCashlessReader
