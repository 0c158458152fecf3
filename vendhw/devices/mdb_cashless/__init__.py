"""MDB cashless readers (card terminals) at 0x10 (#1) and 0x60 (#2): the VMC side.

Layers (sans-I/O core, thin runner), as :mod:`vendhw.devices.cctalk` does it:

* **Core.** :class:`CashlessCore` holds what the VMC knows of the reader (negotiated feature
  level, scale factor, session, pending vend) and its operations are generators that yield
  :class:`Request` steps (one MDB command each) and receive the reply back (``None`` for a
  plain ACK, the data otherwise). :func:`parse_poll` walks a POLL reply into
  :class:`CashlessEvent` values. Nothing here touches a port or reads a clock: where a wait
  is bounded, the core yields a :class:`Wait` step with the deadline's length and the
  runner decides how to spend it.
* **Runner.** :class:`MdbCashlessReader` runs operations over
  :class:`~vendhw.devices.mdb.MdbLink` (the 9-bit link of the coin/bill hosts, used as it
  is) and ACKs reply data after the core has taken it.

The sale (:meth:`MdbCashlessReader.sell`): wait for BEGIN SESSION (a card), VEND REQUEST,
wait for VEND APPROVED/DENIED, and only when approved run the dispense callback. A definite
failure is reported as VEND FAILURE (the reader refunds); a delivered product as VEND
SUCCESS; an **unknown** outcome is never reported as a failure: it is reported as VEND
SUCCESS and the sale is marked ``needs_review`` for an operator. SESSION COMPLETE then ends
the session (the reader answers END SESSION).

Facts and sources: ``protocols/mdb-cashless/README.md`` (MDB 4.2 §7 as implemented by
``Zzzzipper/projects firmware-usbhost/common/mdb`` and the research note
``payment-protocols.md``).
"""

from __future__ import annotations

import logging

from vendhw.devices.engine import Op, Wait, drive
from vendhw.devices.mdb_cashless.core import (
    DEFINITE_FAILURES,
    CardSale,
    CashlessCore,
    Request,
    Step,
)
from vendhw.devices.mdb_cashless.polls import (
    _FIXED_LENGTHS,
    CashlessEvent,
    ReaderConfig,
    _length,
    parse_config,
    parse_peripheral_id,
    parse_poll,
)
from vendhw.devices.mdb_cashless.reader import MdbCashlessReader, open_cashless
from vendhw.devices.mdb_cashless.tables import (
    ADDRESSES,
    CASHLESS_1,
    CASHLESS_2,
    COMMAND_RETRIES,
    DEFAULT_MAX_RESPONSE,
    END_SESSION_POLLS,
    EVENT_NAMES,
    JUST_RESET_POLLS,
    OPTION_CASH_SALE,
    OPTION_DISPLAY,
    OPTION_MULTIVEND,
    OPTION_REFUNDS,
    POLL_INTERVAL,
    RESET_TO_POLL,
    RESPONSE_TIME,
    UNKNOWN_FUNDS,
    VMC_FEATURE_LEVEL,
    VMC_ID,
)
from vendhw.errors import (
    ConfigurationError,
    FramingError,
    NakError,
    NoResponseError,
    SequenceError,
    UnexpectedReplyError,
)
from vendhw.framing.mdb import (
    PERIPHERAL_ID,
    READER_CONFIG,
    RESPONSE_TIMEOUT,
    SETUP_TIME,
    Address,
)
from vendhw.framing.mdb import CashlessCommand as Command
from vendhw.framing.mdb import CashlessExpansion as Expansion
from vendhw.framing.mdb import CashlessPoll as Poll
from vendhw.framing.mdb import CashlessReader as Reader
from vendhw.framing.mdb import CashlessRevalue as Revalue
from vendhw.framing.mdb import CashlessSetup as Setup
from vendhw.framing.mdb import CashlessVend as Vend

log = logging.getLogger(__name__)
"""The package's logger: every module logs under ``vendhw.devices.mdb_cashless``."""

# Names the single module had, kept importable from here (plug-ins and tests use them).
_REEXPORTED = (Op, Wait, drive, Step, _FIXED_LENGTHS, _length, COMMAND_RETRIES,
               DEFAULT_MAX_RESPONSE, END_SESSION_POLLS, EVENT_NAMES, JUST_RESET_POLLS,
               OPTION_CASH_SALE, OPTION_DISPLAY, OPTION_MULTIVEND, OPTION_REFUNDS,
               POLL_INTERVAL, RESET_TO_POLL, RESPONSE_TIME, UNKNOWN_FUNDS, VMC_FEATURE_LEVEL,
               VMC_ID, DEFINITE_FAILURES, ConfigurationError, FramingError, NakError,
               NoResponseError, SequenceError, UnexpectedReplyError, PERIPHERAL_ID,
               READER_CONFIG, RESPONSE_TIMEOUT, SETUP_TIME, Address, Command, Expansion, Poll,
               Reader, Revalue, Setup, Vend)

__all__ = ["ADDRESSES", "CASHLESS_1", "CASHLESS_2", "CardSale", "CashlessCore",
           "CashlessEvent", "MdbCashlessReader", "ReaderConfig", "Request", "Wait",
           "open_cashless", "parse_config", "parse_peripheral_id", "parse_poll"]
