"""MDB coin changer and bill validator hosts (the VMC side), reporting CashEvents.

Layers (sans-I/O core, thin runner; :mod:`vendhw.devices.engine`), as the cashless reader
(:mod:`vendhw.devices.mdb_cashless`) and ccTalk do it:

* **Core.** :func:`parse_changer_poll` and :func:`parse_bill_poll` turn a POLL reply into
  :class:`~vendhw.devices.cash.CashEvent` values, :func:`parse_changer_setup` and
  :func:`parse_bill_setup` read the SETUP replies. :class:`ChangerCore` and :class:`BillCore`
  hold what the VMC knows of the device (setup, tubes, a payout, the poll counter that names
  events) and its operations (``reset_op``, ``start_op``, ``poll_op``, ``payout_op``...) are
  generators: they yield a :class:`Request` per MDB command, a ``Deliver`` per event for the
  sink and a ``Wait`` for a pause, and never touch a port or read a clock.
* **Runner.** :class:`MdbCoinChanger` and :class:`MdbBillValidator` run those operations
  over :class:`MdbLink`, which sends a block in the 9-bit wire form, reads the reply within
  the response time, asks for a retransmission (RET) on a bad checksum, and ACKs peripheral
  data when the runner tells it to: at once, as soon as a reply is read.

Credit safety: a peripheral that gets no ACK within ``ACK_TIMEOUT`` (5 ms) of its reply sends
the same activity again at the next POLL, and MDB has no event counters to tell a repeat from
a new coin. A journal commit (an fsync, tens of ms on an SD card) cannot fit in 5 ms, so the
host ACKs a checksum-good POLL reply at once and hands the events to the sink right after.
Events the sink did not take (it raised) are kept and handed over again, with the same
``event_id`` values, before the next POLL. The crash window (ACKed, not yet journaled) is
described in ``protocols/mdb/README.md``.

Layouts and codes: ``protocols/mdb/README.md`` (temoto/vender ``hardware/mdb/coin``,
``hardware/mdb/bill``; Bouni's MDB write-up).
"""

from __future__ import annotations

# Every name of the former single module stays importable from here (not only __all__).
# ruff: noqa: F401
from vendhw.devices.cash import CashDevice, CashEvent, CashEventKind, EventSink
from vendhw.devices.engine import Deliver, Op, Wait, drive
from vendhw.devices.mdb.bill import BillCore, MdbBillValidator
from vendhw.devices.mdb.changer import ChangerCore, MdbCoinChanger
from vendhw.devices.mdb.core import (
    JUST_RESET_PAUSE,
    JUST_RESET_POLLS,
    Request,
    Step,
    TubeCounts,
    _CashCore,
    _Payout,
    _PollState,
)
from vendhw.devices.mdb.link import _BUSES, _BUSES_LOCK, MdbLink, log
from vendhw.devices.mdb.openers import (
    PTY_MAJORS,
    PTY_RESPONSE_TIMEOUT,
    SHARED_SIMULATORS,
    SIM_RESPONSE_TIMEOUT,
    _link_url,
    _open_link,
    bus_key,
    is_pty,
    open_bill_validator,
    open_changer,
    shared_link,
)
from vendhw.devices.mdb.polls import parse_bill_poll, parse_changer_poll
from vendhw.devices.mdb.runner import CoreT, T, V, _CoreAttr, _MdbCashDevice
from vendhw.devices.mdb.setup import (
    ZERO_DECIMAL_CURRENCIES,
    BillSetup,
    ChangerSetup,
    Identification,
    _parse,
    _text,
    currency_of,
    minor_unit_factor,
    parse_bill_setup,
    parse_changer_setup,
    parse_diagnostic_status,
    parse_identification,
)
from vendhw.devices.mdb.tables import (
    BILL_ROUTES,
    BILL_STATUS,
    CHANGER_BUSY,
    CHANGER_DIAGNOSTICS,
    CHANGER_STATUS,
    COIN_ROUTES,
    FEATURE_ALTERNATIVE_PAYOUT,
    FEATURE_CONTROLLED_MANUAL_FILL,
    FEATURE_EXTENDED_DIAGNOSTIC,
    FEATURE_FTL,
    JUST_RESET_WAIT,
    MAX_DISPENSE,
    PAYOUT_BUSY,
    PAYOUT_CHUNK,
    POLL_INTERVAL,
    RETRANSMISSIONS,
    TOKEN_CREDIT,
)
from vendhw.errors import (
    ConfigurationError,
    FramingError,
    NakError,
    NoResponseError,
    NotSupportedError,
    UnexpectedReplyError,
)
from vendhw.framing.base import Frame, Garbage, Layout
from vendhw.framing.mdb import (
    ACK,
    BILL_SETUP,
    CHANGER_SETUP,
    IDENTIFICATION,
    MAX_BLOCK,
    NAK,
    RESPONSE_TIMEOUT,
    RET,
    SETUP_TIME,
    Address,
    BillCommand,
    BillEscrow,
    BillExpansion,
    ChangerCommand,
    ChangerExpansion,
    MdbFramer,
)
from vendhw.options import option_flag
from vendhw.transport import Transport, open_transport

__all__ = [
    "ACK",
    "NAK",
    "RET",
    "SETUP_TIME",
    "BillCore",
    "BillSetup",
    "ChangerCore",
    "ChangerSetup",
    "Identification",
    "MdbBillValidator",
    "MdbCoinChanger",
    "MdbLink",
    "Request",
    "TubeCounts",
    "bus_key",
    "open_bill_validator",
    "open_changer",
    "parse_bill_poll",
    "parse_bill_setup",
    "parse_changer_poll",
    "parse_changer_setup",
    "parse_identification",
    "shared_link",
]
