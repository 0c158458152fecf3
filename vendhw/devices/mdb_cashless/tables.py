"""MDB cashless: addresses, event names, timing rules and the VMC's identity (MDB 4.2 §7)."""

from __future__ import annotations

import logging

from vendhw.framing.mdb import (
    RESPONSE_TIMEOUT,
    SETUP_TIME,
    Address,
)
from vendhw.framing.mdb import (
    CashlessPoll as Poll,
)

log = logging.getLogger("vendhw.devices.mdb_cashless")



CASHLESS_1 = Address.CASHLESS_1
CASHLESS_2 = Address.CASHLESS_2
ADDRESSES = (CASHLESS_1, CASHLESS_2)

EVENT_NAMES = {int(code): code.name.lower() for code in Poll}
"""POLL reply code -> the event kind a CashlessEvent carries."""

# -- timing (MDB 4.2; named, never inline) ------------------------------------------------
RESPONSE_TIME = RESPONSE_TIMEOUT
"""t-response: a peripheral answers every block within 5 ms (framing constant)."""
RESET_TO_POLL = SETUP_TIME
"""After RESET the reader needs up to 200 ms before it answers POLL with JUST RESET."""
DEFAULT_MAX_RESPONSE = 5.0
"""Seconds the VMC allows for a reader's answer (an approval) until the reader's own
"application maximum response time" is known from its SETUP reply."""
POLL_INTERVAL = 0.1
"""Seconds between POLLs while a session is open (readers expect 100-200 ms)."""
JUST_RESET_POLLS = 20
"""POLLs after RESET that may go by before JUST RESET must have come (20 x 100 ms)."""
END_SESSION_POLLS = 50
"""POLLs after SESSION COMPLETE that may go by before END SESSION must have come."""
COMMAND_RETRIES = 3
"""Times a command is sent again after a lost or corrupt reply before the reader is
declared gone (a reader takes a repeated command as the same one)."""

VMC_FEATURE_LEVEL = 3
"""The level the VMC offers in SETUP CONFIG; the reader's answer sets the level used."""
VMC_ID = (b"VHW", b"000000000001", b"vendhw VMC  ", b"\x01\x00")
"""EXPANSION REQUEST ID: manufacturer (3), serial (12), model (12), software version (2)."""
UNKNOWN_FUNDS = 0xFFFF
"""BEGIN SESSION funds available 0xFFFF: the reader does not know (a credit card)."""

OPTION_REFUNDS = 0x01
OPTION_MULTIVEND = 0x02
OPTION_DISPLAY = 0x04
OPTION_CASH_SALE = 0x08
"""Reader config options (level 1/2 meaning): refunds possible, multivend, own display,
VEND/CASH SALE supported."""
