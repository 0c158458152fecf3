"""ITL SSP / eSSP host: note validators (NV9, NV200...), SMART Payout, NV11, SMART Hopper.

Layers:

* :class:`SspSession` (sans-I/O) is the packet layer: it toggles the sequence flag for each
  new command and keeps the packet for a retransmission **with the same flag** (the slave then
  resends its last reply instead of executing the command again: a retried payout is not paid
  twice), wraps commands in eSSP once a key is agreed, and opens replies (eCOUNT checked).
* :func:`parse_setup` reads SETUP REQUEST in every format GA138 defines (validators and
  payouts before/after protocol 6, SMART Hopper before/after 6); :class:`EventMapper` (pure)
  turns decoded poll events into :class:`~vendhw.devices.cash.CashEvent` values, reporting
  state changes once (a note in escrow, a removed cashbox, a jam repeat on every poll).
* :class:`SspCore` (sans-I/O) holds the host's rules as operations (``start_op``,
  ``poll_op``, ``payout_op``...): generators that yield :class:`SspRequest` steps, get the
  opened reply bytes back, and yield :class:`~vendhw.devices.engine.Deliver` for every cash
  event; a lost reply is thrown in, and the operation decides what it means.
* :class:`SspDevice` is the runner: :meth:`SspDevice.run` drives an operation with
  :func:`vendhw.devices.engine.drive`, and its ``_transact`` sends packets through a
  :class:`~vendhw.devices.link.FrameLink`, waits ``REPLY_TIMEOUT`` and retransmits (same
  packet, same flag) up to ``RETRIES`` times; its public methods, the
  :class:`~vendhw.devices.cash.CashDevice` surface, each run one operation.

Credit safety: polls use POLL WITH ACK (0x56) when the device knows it, so a credit repeats
until EVENT ACK (0x57), which is sent only after the sink took every event of the poll. The
``event_id`` of an acknowledged event is ``<device>/<session>/<acks so far>/<index>``; the
same event repeated after a refused sink gets the same id. Store :meth:`SspDevice.checkpoint`
with your journal and pass it back as ``resume=`` after a restart, so an event journaled just
before a crash (and repeated because its ACK never left) is recognised. Devices without POLL
WITH ACK get plain POLL, and events the sink refused are kept and delivered first next time.

After SLAVE RESET (or KEY NOT SET on an encrypted command: the device lost its key) the host
synchronises again, agrees a new key and restores the inhibits and enable state by itself.
A reply must carry its command's sequence flag (SYNC excepted) and, under eSSP, the expected
count; anything else is an older reply and the packet is resent unchanged. An encrypted
command left unanswered after every retry may have been executed (the counts may disagree):
the next command first sends SYNC and agrees a new key (GA138 "Encryption", GA973).

Facts and sources: ``protocols/ssp/README.md`` (ITL GA138, GA973).
"""

# Every name of the former single module stays importable from here (not only __all__).
# ruff: noqa: F401
# (The names it imported from elsewhere too: someone may have imported them from here.)
from vendhw.devices.cash import CashDevice, CashEvent, CashEventKind, EventSink
from vendhw.devices.engine import Deliver, Op, drive
from vendhw.devices.link import FrameLink
from vendhw.devices.ssp.core import SspCore, SspRequest, Step, log
from vendhw.devices.ssp.device import SspDevice, T, open_device
from vendhw.devices.ssp.events import (
    _CURRENCY,
    _HANDLERS,
    CREDIT_EVENTS,
    FAULT_EVENTS,
    NOTE_CLEARED_AT_RESET,
    NOTE_SETTLED,
    PAYOUT_STOP_REASONS,
    SIMPLE_EVENTS,
    E,
    EventMapper,
    K,
    _fault_reason,
    _Handler,
    _Money,
)
from vendhw.devices.ssp.payout import SspPayoutOps
from vendhw.devices.ssp.session import SspSession
from vendhw.devices.ssp.setup import Channel, SetupInfo, _ascii, money, parse_setup
from vendhw.devices.ssp.tables import (
    BAUDRATE,
    CANNOT_PROCESS,
    CASHBOX_SERVICE_ERRORS,
    COIN_MECH_ERRORS,
    COMMAND_NOT_KNOWN,
    COMMIT,
    DISABLE,
    DISABLE_PAYOUT_DEVICE,
    EMPTY_ALL,
    ENABLE,
    ENABLE_PAYOUT_DEVICE,
    ERROR_BYTES,
    ERROR_DURING_PAYOUT,
    ESCROW_TIMEOUT,
    EVENT_ACK,
    FAIL,
    FLOAT_AMOUNT,
    GET_ALL_LEVELS,
    GET_DENOMINATION_LEVEL,
    GET_DENOMINATION_ROUTE,
    GET_MINIMUM_PAYOUT,
    GET_SERIAL_NUMBER,
    HALT_PAYOUT,
    HOLD,
    HOST_PROTOCOL_VERSION,
    INACTIVITY_TIMEOUT,
    KEY_NOT_SET,
    LAST_REJECT_CODE,
    MAX_PROTOCOL_VERSION,
    MIN_PROTOCOL_VERSION,
    NO_ESCROW_UNITS,
    OK,
    PARAMETER_OUT_OF_RANGE,
    PAYOUT_AMOUNT,
    PAYOUT_DEVICE_ERRORS,
    PAYOUT_ERRORS,
    PAYOUT_UNITS,
    POLL,
    POLL_INTERVAL,
    POLL_WITH_ACK,
    REJECT,
    REJECT_REASONS,
    REQUEST_KEY_EXCHANGE,
    RESET,
    ROUTE_CASHBOX,
    ROUTE_ERRORS,
    ROUTE_PAYOUT,
    SET_COIN_MECH_INHIBITS,
    SET_DENOMINATION_ROUTE,
    SET_GENERATOR,
    SET_INHIBITS,
    SET_MODULUS,
    SETUP_REQUEST,
    SMART_EMPTY,
    SOFTWARE_ERROR,
    STOPBITS,
    SYNC,
    TEST_ONLY,
    TICKET_PRINTING_ERRORS,
    UNIT_TYPES,
    WRONG_PARAMETERS,
    C,
    R,
    SspResponseError,
)
from vendhw.errors import (
    ConfigurationError,
    DeviceFault,
    NakError,
    NoResponseError,
    NotSupportedError,
    ProtocolError,
    SequenceError,
    UnexpectedReplyError,
    VendhwError,
)
from vendhw.framing.base import Frame
from vendhw.framing.essp import DEFAULT_FIXED_KEY, STEX, EsspCipher, KeyAgreement
from vendhw.framing.ssp import (
    ACKED_EVENTS,
    INTER_BYTE_GAP,
    REPLY_TIMEOUT,
    RESPONSES,
    RETRIES,
    UNKNOWN_EVENT,
    Command,
    Event,
    Response,
    SspFramer,
    decode_poll,
)
from vendhw.options import option_flag, option_ints
from vendhw.transport import Transport, open_transport

__all__ = ["Channel", "EventMapper", "SetupInfo", "SspDevice", "SspResponseError",
           "SspSession", "money", "open_device", "parse_setup"]
