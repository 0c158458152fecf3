"""ITL SSP / eSSP packets (NV9/NV10/NV11/NV200, SMART Payout, SMART Hopper, ...).

``STX 0x7F | SEQ/ID | LEN | DATA... | CRCL | CRCH``: bit 7 of SEQ/ID is the sequence flag,
bits 6..0 the slave ID; LEN counts DATA; the CRC (poly 0x8005, seed 0xFFFF, not reflected)
covers SEQ/ID..DATA and is computed before byte stuffing, which doubles every 0x7F after the
STX (CRC bytes included). An unpaired 0x7F inside a packet is a new STX.

An eSSP packet is an ordinary SSP packet whose DATA starts with STEX 0x7E; the rest is
AES-128 and is left opaque here (``vendhw.devices.ssp`` decrypts it). Host commands (< 0x80)
and generic responses (>= 0xF0) do not overlap, so the direction can be inferred.

Sources: ``protocols/ssp/README.md`` (ITL GA138 SSP Protocol Manual v2.2, GA973).
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

import construct as cs

from vendhw.errors import ChecksumError, FramingError, LengthError, StartByteError
from vendhw.framing.base import Direction, Frame, Framer, Layout
from vendhw.framing.checksums import CRC16_SSP

STX = 0x7F
STEX = 0x7E
MAX_DATA = 255

REPLY_TIMEOUT = 1.0
"""GA138: the host waits 1 s for a reply, then retransmits with the same sequence flag."""
RETRIES = 20
"""GA138: after 20 retries the host assumes the slave has crashed."""
INTER_BYTE_GAP = 0.05
"""Not specified by ITL; a partial packet silent this long is dropped (a 255-byte packet
takes under 300 ms at 9600 8N2, and bytes of one packet are sent back to back)."""

class Command(IntEnum):
    """SSP command codes (GA138 v2.2 command pages). Host, simulator and decoder use these."""

    RESET = 0x01
    SET_INHIBITS = 0x02
    DISPLAY_ON = 0x03
    DISPLAY_OFF = 0x04
    SETUP_REQUEST = 0x05
    HOST_PROTOCOL_VERSION = 0x06
    POLL = 0x07
    REJECT = 0x08
    DISABLE = 0x09
    ENABLE = 0x0A
    GET_SERIAL_NUMBER = 0x0C
    UNIT_DATA = 0x0D
    CHANNEL_VALUE_REQUEST = 0x0E
    CHANNEL_SECURITY_DATA = 0x0F
    CHANNEL_RE_TEACH_DATA = 0x10
    SYNC = 0x11
    LAST_REJECT_NOTE = 0x15
    LAST_REJECT_CODE = 0x17
    HOLD = 0x18
    ENABLE_PROTOCOL_VERSION_EVENTS = 0x19
    GET_FIRMWARE_VERSION = 0x20
    GET_DATASET_VERSION = 0x21
    GET_ALL_LEVELS = 0x22
    GET_BARCODE_READER_CONFIGURATION = 0x23
    SET_BARCODE_READER_CONFIGURATION = 0x24
    GET_BARCODE_INHIBIT = 0x25
    SET_BARCODE_INHIBIT = 0x26
    GET_BARCODE_DATA = 0x27
    SET_REFILL_MODE = 0x30
    PAYOUT_AMOUNT = 0x33
    SET_DENOMINATION_LEVEL = 0x34
    GET_DENOMINATION_LEVEL = 0x35
    COMMS_PASS_THROUGH = 0x37
    HALT_PAYOUT = 0x38
    PAYOUT_AMOUNT_BY_DENOMINATION = 0x39
    COIN_ESCROW = 0x3A
    SET_DENOMINATION_ROUTE = 0x3B
    GET_DENOMINATION_ROUTE = 0x3C
    FLOAT_AMOUNT = 0x3D
    GET_MINIMUM_PAYOUT = 0x3E
    EMPTY_ALL = 0x3F
    SET_COIN_MECH_INHIBITS = 0x40
    GET_NOTE_POSITIONS = 0x41
    PAYOUT_NOTE = 0x42
    STACK_NOTE = 0x43
    FLOAT_BY_DENOMINATION = 0x44
    SET_VALUE_REPORTING_TYPE = 0x45
    PAYOUT_BY_DENOMINATION = 0x46
    SET_COIN_MECH_GLOBAL_INHIBIT = 0x49
    SET_GENERATOR = 0x4A
    SET_MODULUS = 0x4B
    REQUEST_KEY_EXCHANGE = 0x4C
    SET_BAUD_RATE = 0x4D
    SET_CASHBOX_PAYOUT_LIMIT = 0x4E
    GET_BUILD_REVISION = 0x4F
    SET_HOPPER_OPTIONS = 0x50
    GET_HOPPER_OPTIONS = 0x51
    SMART_EMPTY = 0x52
    CASHBOX_PAYOUT_OPERATION_DATA = 0x53
    CONFIGURE_BEZEL = 0x54
    POLL_WITH_ACK = 0x56
    EVENT_ACK = 0x57
    GET_COUNTERS = 0x58
    RESET_COUNTERS = 0x59
    COIN_MECH_OPTIONS = 0x5A
    DISABLE_PAYOUT_DEVICE = 0x5B
    ENABLE_PAYOUT_DEVICE = 0x5C
    COIN_STIR = 0x5D
    SET_ENCRYPTION_KEY = 0x60
    ENCRYPTION_RESET_TO_DEFAULT = 0x61
    GET_REAL_TIME_CLOCK_CONFIGURATION = 0x62
    GET_REAL_TIME_CLOCK = 0x63
    SET_REAL_TIME_CLOCK = 0x64
    GET_TEBS_BARCODE = 0x65
    GET_TEBS_LOG = 0x66
    CASHBOX_UNLOCK_ENABLE = 0x67
    CASHBOX_LOCK_ENABLE = 0x68
    RESET_TEBS_LOGS = 0x69
    TICKET_PRINT = 0x70
    PRINTER_CONFIGURATION = 0x71
    ENABLE_TITO_EVENTS = 0x72
    CANCEL_ESCROW_TRANSACTION = 0x76
    COMMIT_ESCROW_TRANSACTION = 0x77
    READ_ESCROW_VALUE = 0x78
    GET_ESCROW_SIZE = 0x79
    SET_ESCROW_SIZE = 0x7A


class Response(IntEnum):
    """SSP generic responses (GA138 "Generic responses")."""

    OK = 0xF0
    COMMAND_NOT_KNOWN = 0xF2
    WRONG_NUMBER_OF_PARAMETERS = 0xF3
    PARAMETER_OUT_OF_RANGE = 0xF4
    COMMAND_CANNOT_BE_PROCESSED = 0xF5
    SOFTWARE_ERROR = 0xF6
    FAIL = 0xF8
    KEY_NOT_SET = 0xFA


class UnitType(IntEnum):
    """SETUP REQUEST's first byte (GA138 "Setup Request"): which reply layout follows."""

    NOTE_VALIDATOR = 0x00
    SMART_HOPPER = 0x03
    SMART_PAYOUT = 0x06
    NV11 = 0x07
    TEBS = 0x0D


class Event(IntEnum):
    """SSP poll event codes (GA138 v2.2 event pages)."""

    SLAVE_RESET = 0xF1
    READ_NOTE = 0xEF
    CREDIT_NOTE = 0xEE
    NOTE_REJECTING = 0xED
    NOTE_REJECTED = 0xEC
    NOTE_STACKED = 0xEB
    SAFE_NOTE_JAM = 0xEA
    UNSAFE_NOTE_JAM = 0xE9
    DISABLED = 0xE8
    STACKER_FULL = 0xE7
    FRAUD_ATTEMPT = 0xE6
    BARCODE_TICKET_VALIDATED = 0xE5
    CASHBOX_REPLACED = 0xE4
    CASHBOX_REMOVED = 0xE3
    NOTE_CLEARED_TO_CASHBOX = 0xE2
    NOTE_CLEARED_FROM_FRONT = 0xE1
    NOTE_PATH_OPEN = 0xE0
    COIN_CREDIT = 0xDF
    CASHBOX_PAID = 0xDE
    INCOMPLETE_FLOAT = 0xDD
    INCOMPLETE_PAYOUT = 0xDC
    NOTE_STORED_IN_PAYOUT = 0xDB
    DISPENSING = 0xDA
    TIMEOUT = 0xD9
    FLOATED = 0xD8
    FLOATING = 0xD7
    HALTED = 0xD6
    JAMMED = 0xD5
    COINS_LOW = 0xD3
    DISPENSED = 0xD2
    BARCODE_TICKET_ACKNOWLEDGE = 0xD1
    DEVICE_FULL = 0xCF
    NOTE_HELD_IN_BEZEL = 0xCE
    NOTE_DISPENSED_AT_RESET = 0xCD
    NOTE_STACKING = 0xCC
    NOTE_INTO_STORE_AT_RESET = 0xCB
    NOTE_INTO_STACKER_AT_RESET = 0xCA
    NOTE_TRANSFERRED_TO_STACKER = 0xC9
    NOTE_FLOAT_ATTACHED = 0xC8
    NOTE_FLOAT_REMOVED = 0xC7
    PAYOUT_OUT_OF_SERVICE = 0xC6
    COIN_MECH_RETURN_ACTIVE = 0xC5
    COIN_MECH_JAMMED = 0xC4
    EMPTIED = 0xC3
    EMPTYING = 0xC2
    PAY_IN_ACTIVE = 0xC1
    MAINTENANCE_REQUIRED = 0xC0
    VALUE_ADDED = 0xBF
    ATTACHED_COIN_MECH_ENABLED = 0xBE
    ATTACHED_COIN_MECH_DISABLED = 0xBD
    COIN_REJECTED = 0xBA
    COIN_MECH_ERROR = 0xB7
    INITIALISING = 0xB6
    CHANNEL_DISABLE = 0xB5
    SMART_EMPTIED = 0xB4
    SMART_EMPTYING = 0xB3
    ERROR_DURING_PAYOUT = 0xB1
    JAM_RECOVERY = 0xB0
    PRINTED_TO_CASHBOX = 0xAF
    PRINT_HALTED = 0xAE
    TICKET_IN_BEZEL = 0xAD
    PAPER_REPLACED = 0xAC
    NO_PAPER = 0xAB
    TICKET_PATH_CLOSED = 0xAA
    PRINTER_HEAD_REPLACED = 0xA9
    TICKET_PRINTING_ERROR = 0xA8
    TICKET_IN_BEZEL_AT_STARTUP = 0xA7
    TICKET_PRINTED = 0xA6
    TICKET_PRINTING = 0xA5
    TICKET_JAM = 0xA4
    TICKET_PATH_OPEN = 0xA3
    PRINTER_HEAD_REMOVED = 0xA2
    TICKETS_REPLACED = 0xA1
    TICKETS_LOW = 0xA0
    CASHBOX_UNLOCK_ENABLED = 0x93
    CASHBOX_BACK_IN_SERVICE = 0x92
    CASHBOX_OUT_OF_SERVICE = 0x90
    ESCROW_ACTIVE = 0x8B
    CALIBRATION_FAILED = 0x83


COMMANDS: dict[int, str] = {  # GA138 v2.2 command pages (names as ITL prints them)
    Command.RESET: "RESET",
    Command.SET_INHIBITS: "SET INHIBITS",
    Command.DISPLAY_ON: "DISPLAY ON",
    Command.DISPLAY_OFF: "DISPLAY OFF",
    Command.SETUP_REQUEST: "SETUP REQUEST",
    Command.HOST_PROTOCOL_VERSION: "HOST PROTOCOL VERSION",
    Command.POLL: "POLL",
    Command.REJECT: "REJECT",
    Command.DISABLE: "DISABLE",
    Command.ENABLE: "ENABLE",
    Command.GET_SERIAL_NUMBER: "GET SERIAL NUMBER",
    Command.UNIT_DATA: "UNIT DATA",
    Command.CHANNEL_VALUE_REQUEST: "CHANNEL VALUE REQUEST",
    Command.CHANNEL_SECURITY_DATA: "CHANNEL SECURITY DATA",
    Command.CHANNEL_RE_TEACH_DATA: "CHANNEL RE-TEACH DATA",
    Command.SYNC: "SYNC",
    Command.LAST_REJECT_NOTE: "LAST REJECT NOTE",
    Command.LAST_REJECT_CODE: "LAST REJECT CODE",
    Command.HOLD: "HOLD",
    Command.ENABLE_PROTOCOL_VERSION_EVENTS: "ENABLE PROTOCOL VERSION EVENTS",
    Command.GET_FIRMWARE_VERSION: "GET FIRMWARE VERSION",
    Command.GET_DATASET_VERSION: "GET DATASET VERSION",
    Command.GET_ALL_LEVELS: "GET ALL LEVELS",
    Command.GET_BARCODE_READER_CONFIGURATION: "GET BARCODE READER CONFIGURATION",
    Command.SET_BARCODE_READER_CONFIGURATION: "SET BARCODE READER CONFIGURATION",
    Command.GET_BARCODE_INHIBIT: "GET BARCODE INHIBIT",
    Command.SET_BARCODE_INHIBIT: "SET BARCODE INHIBIT",
    Command.GET_BARCODE_DATA: "GET BARCODE DATA",
    Command.SET_REFILL_MODE: "SET REFILL MODE",
    Command.PAYOUT_AMOUNT: "PAYOUT AMOUNT",
    Command.SET_DENOMINATION_LEVEL: "SET DENOMINATION LEVEL",
    Command.GET_DENOMINATION_LEVEL: "GET DENOMINATION LEVEL",
    Command.COMMS_PASS_THROUGH: "COMMS PASS THROUGH",
    Command.HALT_PAYOUT: "HALT PAYOUT",
    Command.PAYOUT_AMOUNT_BY_DENOMINATION: "PAYOUT AMOUNT BY DENOMINATION",
    Command.COIN_ESCROW: "COIN ESCROW",
    Command.SET_DENOMINATION_ROUTE: "SET DENOMINATION ROUTE",
    Command.GET_DENOMINATION_ROUTE: "GET DENOMINATION ROUTE",
    Command.FLOAT_AMOUNT: "FLOAT AMOUNT",
    Command.GET_MINIMUM_PAYOUT: "GET MINIMUM PAYOUT",
    Command.EMPTY_ALL: "EMPTY ALL",
    Command.SET_COIN_MECH_INHIBITS: "SET COIN MECH INHIBITS",
    Command.GET_NOTE_POSITIONS: "GET NOTE POSITIONS",
    Command.PAYOUT_NOTE: "PAYOUT NOTE",
    Command.STACK_NOTE: "STACK NOTE",
    Command.FLOAT_BY_DENOMINATION: "FLOAT BY DENOMINATION",
    Command.SET_VALUE_REPORTING_TYPE: "SET VALUE REPORTING TYPE",
    Command.PAYOUT_BY_DENOMINATION: "PAYOUT BY DENOMINATION",
    Command.SET_COIN_MECH_GLOBAL_INHIBIT: "SET COIN MECH GLOBAL INHIBIT",
    Command.SET_GENERATOR: "SET GENERATOR",
    Command.SET_MODULUS: "SET MODULUS",
    Command.REQUEST_KEY_EXCHANGE: "REQUEST KEY EXCHANGE",
    Command.SET_BAUD_RATE: "SET BAUD RATE",
    Command.SET_CASHBOX_PAYOUT_LIMIT: "SET CASHBOX PAYOUT LIMIT",
    Command.GET_BUILD_REVISION: "GET BUILD REVISION",
    Command.SET_HOPPER_OPTIONS: "SET HOPPER OPTIONS",
    Command.GET_HOPPER_OPTIONS: "GET HOPPER OPTIONS",
    Command.SMART_EMPTY: "SMART EMPTY",
    Command.CASHBOX_PAYOUT_OPERATION_DATA: "CASHBOX PAYOUT OPERATION DATA",
    Command.CONFIGURE_BEZEL: "CONFIGURE BEZEL",
    Command.POLL_WITH_ACK: "POLL WITH ACK",
    Command.EVENT_ACK: "EVENT ACK",
    Command.GET_COUNTERS: "GET COUNTERS",
    Command.RESET_COUNTERS: "RESET COUNTERS",
    Command.COIN_MECH_OPTIONS: "COIN MECH OPTIONS",
    Command.DISABLE_PAYOUT_DEVICE: "DISABLE PAYOUT DEVICE",
    Command.ENABLE_PAYOUT_DEVICE: "ENABLE PAYOUT DEVICE",
    Command.COIN_STIR: "COIN STIR",
    Command.SET_ENCRYPTION_KEY: "SET ENCRYPTION KEY",
    Command.ENCRYPTION_RESET_TO_DEFAULT: "ENCRYPTION RESET TO DEFAULT",
    Command.GET_REAL_TIME_CLOCK_CONFIGURATION: "GET REAL TIME CLOCK CONFIGURATION",
    Command.GET_REAL_TIME_CLOCK: "GET REAL TIME CLOCK",
    Command.SET_REAL_TIME_CLOCK: "SET REAL TIME CLOCK",
    Command.GET_TEBS_BARCODE: "GET TEBS BARCODE",
    Command.GET_TEBS_LOG: "GET TEBS LOG",
    Command.CASHBOX_UNLOCK_ENABLE: "CASHBOX UNLOCK ENABLE",
    Command.CASHBOX_LOCK_ENABLE: "CASHBOX LOCK ENABLE",
    Command.RESET_TEBS_LOGS: "RESET TEBS LOGS",
    Command.TICKET_PRINT: "TICKET PRINT",
    Command.PRINTER_CONFIGURATION: "PRINTER CONFIGURATION",
    Command.ENABLE_TITO_EVENTS: "ENABLE TITO EVENTS",
    Command.CANCEL_ESCROW_TRANSACTION: "CANCEL ESCROW TRANSACTION",
    Command.COMMIT_ESCROW_TRANSACTION: "COMMIT ESCROW TRANSACTION",
    Command.READ_ESCROW_VALUE: "READ ESCROW VALUE",
    Command.GET_ESCROW_SIZE: "GET ESCROW SIZE",
    Command.SET_ESCROW_SIZE: "SET ESCROW SIZE",
}
RESPONSES: dict[int, str] = {
    Response.OK: "OK",
    Response.COMMAND_NOT_KNOWN: "COMMAND NOT KNOWN",
    Response.WRONG_NUMBER_OF_PARAMETERS: "WRONG NUMBER OF PARAMETERS",
    Response.PARAMETER_OUT_OF_RANGE: "PARAMETER OUT OF RANGE",
    Response.COMMAND_CANNOT_BE_PROCESSED: "COMMAND CANNOT BE PROCESSED",
    Response.SOFTWARE_ERROR: "SOFTWARE ERROR",
    Response.FAIL: "FAIL",
    Response.KEY_NOT_SET: "KEY NOT SET",
}
# Poll events: name and parameter shape (GA138 event tables). Shapes: None = no data;
# "ch" = 1 channel byte; "values" = protocol >= 6: count, then count x (4-byte value + 3-byte
# currency), before 6: one 4-byte value; "incomplete" = the same with (paid, requested) pairs;
# "value7" = one 4-byte value + currency; "coin" = value7 from protocol 6, a bare 4-byte value
# before; "payout_error" = "values" followed by one error-code byte; "error" = 1 error byte.
# Data sizes: the "Data size (bytes)" column of each GA138 v2.2 event page.
EVENTS: dict[int, tuple[str, str | None]] = {
    Event.SLAVE_RESET: ("SLAVE RESET", None),
    Event.READ_NOTE: ("READ NOTE", "ch"),
    Event.CREDIT_NOTE: ("CREDIT NOTE", "ch"),
    Event.NOTE_REJECTING: ("NOTE REJECTING", None),
    Event.NOTE_REJECTED: ("NOTE REJECTED", None),
    Event.NOTE_STACKED: ("NOTE STACKED", None),
    Event.SAFE_NOTE_JAM: ("SAFE NOTE JAM", None),
    Event.UNSAFE_NOTE_JAM: ("UNSAFE NOTE JAM", None),
    Event.DISABLED: ("DISABLED", None),
    Event.STACKER_FULL: ("STACKER FULL", None),
    Event.FRAUD_ATTEMPT: ("FRAUD ATTEMPT", "ch"),
    Event.BARCODE_TICKET_VALIDATED: ("BARCODE TICKET VALIDATED", None),
    Event.CASHBOX_REPLACED: ("CASHBOX REPLACED", None),
    Event.CASHBOX_REMOVED: ("CASHBOX REMOVED", None),
    Event.NOTE_CLEARED_TO_CASHBOX: ("NOTE CLEARED TO CASHBOX", "ch"),
    Event.NOTE_CLEARED_FROM_FRONT: ("NOTE CLEARED FROM FRONT", "ch"),
    Event.NOTE_PATH_OPEN: ("NOTE PATH OPEN", None),
    Event.COIN_CREDIT: ("COIN CREDIT", "coin"),
    Event.CASHBOX_PAID: ("CASHBOX PAID", "values"),
    Event.INCOMPLETE_FLOAT: ("INCOMPLETE FLOAT", "incomplete"),
    Event.INCOMPLETE_PAYOUT: ("INCOMPLETE PAYOUT", "incomplete"),
    Event.NOTE_STORED_IN_PAYOUT: ("NOTE STORED IN PAYOUT", None),
    Event.DISPENSING: ("DISPENSING", "values"),
    Event.TIMEOUT: ("TIMEOUT", "values"),
    Event.FLOATED: ("FLOATED", "values"),
    Event.FLOATING: ("FLOATING", "values"),
    Event.HALTED: ("HALTED", "values"),
    Event.JAMMED: ("JAMMED", "values"),
    Event.COINS_LOW: ("COINS LOW", None),
    Event.DISPENSED: ("DISPENSED", "values"),
    Event.BARCODE_TICKET_ACKNOWLEDGE: ("BARCODE TICKET ACKNOWLEDGE", None),
    Event.DEVICE_FULL: ("DEVICE FULL", None),
    Event.NOTE_HELD_IN_BEZEL: ("NOTE HELD IN BEZEL", "value7"),
    Event.NOTE_DISPENSED_AT_RESET: ("NOTE DISPENSED AT RESET", "value7"),
    Event.NOTE_STACKING: ("NOTE STACKING", None),
    Event.NOTE_INTO_STORE_AT_RESET: ("NOTE INTO STORE AT RESET", "value7"),
    Event.NOTE_INTO_STACKER_AT_RESET: ("NOTE INTO STACKER AT RESET", "value7"),
    Event.NOTE_TRANSFERRED_TO_STACKER: ("NOTE TRANSFERRED TO STACKER", "value7"),
    Event.NOTE_FLOAT_ATTACHED: ("NOTE FLOAT ATTACHED", None),
    Event.NOTE_FLOAT_REMOVED: ("NOTE FLOAT REMOVED", None),
    Event.PAYOUT_OUT_OF_SERVICE: ("PAYOUT OUT OF SERVICE", None),
    Event.COIN_MECH_RETURN_ACTIVE: ("COIN MECH RETURN ACTIVE", None),
    Event.COIN_MECH_JAMMED: ("COIN MECH JAMMED", None),
    Event.EMPTIED: ("EMPTIED", None),
    Event.EMPTYING: ("EMPTYING", None),
    Event.PAY_IN_ACTIVE: ("PAY-IN ACTIVE", None),
    Event.MAINTENANCE_REQUIRED: ("MAINTENANCE REQUIRED", None),
    Event.VALUE_ADDED: ("VALUE ADDED", "values"),
    Event.ATTACHED_COIN_MECH_ENABLED: ("ATTACHED COIN MECH ENABLED", None),
    Event.ATTACHED_COIN_MECH_DISABLED: ("ATTACHED COIN MECH DISABLED", None),
    Event.COIN_REJECTED: ("COIN REJECTED", "value7"),
    Event.COIN_MECH_ERROR: ("COIN MECH ERROR", "error"),
    Event.INITIALISING: ("INITIALISING", None),
    Event.CHANNEL_DISABLE: ("CHANNEL DISABLE", None),
    Event.SMART_EMPTIED: ("SMART EMPTIED", "values"),
    Event.SMART_EMPTYING: ("SMART EMPTYING", "values"),
    Event.ERROR_DURING_PAYOUT: ("ERROR DURING PAYOUT", "payout_error"),
    Event.JAM_RECOVERY: ("JAM RECOVERY", None),
    Event.PRINTED_TO_CASHBOX: ("PRINTED TO CASHBOX", None),
    Event.PRINT_HALTED: ("PRINT HALTED", None),
    Event.TICKET_IN_BEZEL: ("TICKET IN BEZEL", None),
    Event.PAPER_REPLACED: ("PAPER REPLACED", None),
    Event.NO_PAPER: ("NO PAPER", None),
    Event.TICKET_PATH_CLOSED: ("TICKET PATH CLOSED", None),
    Event.PRINTER_HEAD_REPLACED: ("PRINTER HEAD REPLACED", None),
    Event.TICKET_PRINTING_ERROR: ("TICKET PRINTING ERROR", "error"),
    Event.TICKET_IN_BEZEL_AT_STARTUP: ("TICKET IN BEZEL AT STARTUP", None),
    Event.TICKET_PRINTED: ("TICKET PRINTED", None),
    Event.TICKET_PRINTING: ("TICKET PRINTING", None),
    Event.TICKET_JAM: ("TICKET JAM", None),
    Event.TICKET_PATH_OPEN: ("TICKET PATH OPEN", None),
    Event.PRINTER_HEAD_REMOVED: ("PRINTER HEAD REMOVED", None),
    Event.TICKETS_REPLACED: ("TICKETS REPLACED", None),
    Event.TICKETS_LOW: ("TICKETS LOW", None),
    Event.CASHBOX_UNLOCK_ENABLED: ("CASHBOX UNLOCK ENABLED", None),
    Event.CASHBOX_BACK_IN_SERVICE: ("CASHBOX BACK IN SERVICE", None),
    Event.CASHBOX_OUT_OF_SERVICE: ("CASHBOX OUT OF SERVICE", "error"),
    Event.ESCROW_ACTIVE: ("ESCROW ACTIVE", None),
    Event.CALIBRATION_FAILED: ("CALIBRATION FAILED", "ch"),
}
UNKNOWN_EVENT = "UNKNOWN EVENT"
"""``decode_poll``'s name for bytes from an unknown (or cut-short) event to the end."""
ACKED_EVENTS = frozenset((
    Event.CREDIT_NOTE,
    Event.FRAUD_ATTEMPT,
    Event.NOTE_CLEARED_TO_CASHBOX,
    Event.BARCODE_TICKET_ACKNOWLEDGE,
    Event.INITIALISING,
    Event.DISPENSED,
    Event.FLOATED,
    Event.TIMEOUT,
    Event.INCOMPLETE_PAYOUT,
    Event.INCOMPLETE_FLOAT,
    Event.SMART_EMPTIED,
    Event.ERROR_DURING_PAYOUT,
    Event.NOTE_TRANSFERRED_TO_STACKER,
    Event.NOTE_INTO_STORE_AT_RESET,
    Event.NOTE_INTO_STACKER_AT_RESET,
    Event.NOTE_DISPENSED_AT_RESET,
    Event.VALUE_ADDED,
))
"""GA138 event tables, column "Poll with Ack": with POLL WITH ACK (0x56) these events repeat
until EVENT ACK (0x57), and the device accepts no further note until then."""

_HEADER = Layout(cs.Struct("seqid" / cs.Int8ub, "length" / cs.Int8ub, "data" / cs.GreedyBytes),
                 "SSP packet")

# --- SETUP REQUEST replies (GA138 "Setup Request"; the data after OK) --------------------------

EXPANDED_SETUP_VERSION = 6
"""From this protocol version a SETUP REQUEST reply also carries a currency per channel (and a
validator a 4-byte value per channel)."""

SETUP_VALIDATOR = Layout(cs.Struct(
    "unit_type" / cs.Int8ub, "firmware" / cs.Bytes(4), "country" / cs.Bytes(3),
    "multiplier" / cs.Int24ub, "count" / cs.Int8ub,
    "values" / cs.Bytes(cs.this.count), "security" / cs.Bytes(cs.this.count),
    "real_multiplier" / cs.Int24ub, "protocol_version" / cs.Int8ub,
    # Optional: a reply cut short of the expanded table still has the short values.
    "expanded" / cs.If(cs.this.protocol_version >= EXPANDED_SETUP_VERSION, cs.Optional(
        cs.Struct("currencies" / cs.Array(cs.this._.count, cs.Bytes(3)),
                  "values" / cs.Array(cs.this._.count, cs.Int32ul)))),
), "SETUP REQUEST reply")
"""Note validator, SMART Payout, NV11 (every unit type but the SMART Hopper): firmware (4
ASCII), country (3 ASCII), value multiplier (3, BE; 0 means use the expanded values), n, n
one-byte channel values, n security bytes, real value multiplier (3, BE), protocol version;
from version 6 ``expanded``: n currencies (3 ASCII each), then n 4-byte LE channel values."""
SETUP_HOPPER = Layout(cs.Struct(
    "unit_type" / cs.Int8ub, "firmware" / cs.Bytes(4), "country" / cs.Bytes(3),
    "protocol_version" / cs.Int8ub, "count" / cs.Int8ub,
    "values" / cs.Array(cs.this.count, cs.Int16ul),
    "currencies" / cs.If(cs.this.protocol_version >= EXPANDED_SETUP_VERSION,
                         cs.Optional(cs.Array(cs.this.count, cs.Bytes(3)))),
), "SETUP REQUEST reply")
"""SMART Hopper: firmware, country, protocol version, n, n 2-byte LE coin values (minor
units); from version 6 ``currencies``: n currencies (3 ASCII each)."""


def setup_layout(unit_type: int) -> Layout:
    """The SETUP REQUEST layout GA138 gives for ``unit_type`` (its reply's first byte)."""
    return SETUP_HOPPER if unit_type == UnitType.SMART_HOPPER else SETUP_VALIDATOR



def stuff(body: bytes) -> bytes:
    """Double every 0x7F (everything after the STX)."""
    return body.replace(b"\x7f", b"\x7f\x7f")


def unstuff(body: bytes) -> bytes:
    """Undo :func:`stuff`; a lone 0x7F inside a packet is a framing error (a new STX)."""
    if b"\x7f" not in body:
        return body
    out = body.replace(b"\x7f\x7f", b"\x7f")
    if out.count(b"\x7f") * 2 != body.count(b"\x7f"):
        raise FramingError("unpaired 0x7F inside a packet (a new STX?)", protocol="ssp",
                           data=body)
    return out


def _value(item: bytes) -> dict[str, Any]:
    return {"value": int.from_bytes(item[:4], "little"),
            "currency": item[4:7].decode("ascii", "replace")}


def _decode_one(data: bytes, i: int, multi: bool) -> tuple[dict[str, Any], int] | None:
    """The event at ``data[i]`` and the index after it, or None (unknown code, cut short)."""
    entry = EVENTS.get(data[i])
    if entry is None:
        return None
    n = len(data)
    name, shape = entry
    event: dict[str, Any] = {"event": name, "code": data[i]}
    i += 1
    if shape in ("ch", "error"):
        if i >= n:
            return None
        event["channel" if shape == "ch" else "error"] = data[i]
        i += 1
    elif shape == "value7" or (shape == "coin" and multi):
        if i + 7 > n:
            return None
        event["values"] = [_value(data[i:i + 7])]
        i += 7
    elif shape in ("values", "incomplete", "payout_error", "coin") and not multi:
        size = 8 if shape == "incomplete" else 4
        if i + size > n:
            return None
        item: dict[str, Any] = {"value": int.from_bytes(data[i:i + 4], "little"),
                                "currency": ""}
        if size == 8:
            item["requested"] = int.from_bytes(data[i + 4:i + 8], "little")
        event["values"] = [item]
        i += size
    elif shape in ("values", "incomplete", "payout_error"):
        if i >= n:
            return None
        count = data[i]
        size = 11 if shape == "incomplete" else 7
        end = i + 1 + count * size
        if end > n or count == 0:
            return None
        items = []
        for k in range(count):
            raw = data[i + 1 + k * size:i + 1 + (k + 1) * size]
            entry_values = _value(raw[:4] + raw[-3:])
            if size == 11:
                entry_values["requested"] = int.from_bytes(raw[4:8], "little")
            items.append(entry_values)
        event["values"] = items
        i = end
    if shape == "payout_error":
        if i >= n:
            return None
        event["error"] = data[i]
        i += 1
    return event, i


def decode_events(data: bytes, protocol_version: int = 6) -> list[dict[str, Any]] | None:
    """Poll events in ``data`` (after the OK), or None when they do not parse cleanly.

    Money-bearing events changed shape in protocol version 6 (multi-currency blocks), so the
    host passes the version it negotiated; the decoder CLI takes ``--protocol-version``.
    """
    events: list[dict[str, Any]] = []
    i = 0
    while i < len(data):
        decoded = _decode_one(data, i, protocol_version >= 6)
        if decoded is None:
            return None
        event, i = decoded
        events.append(event)
    return events


def decode_poll(data: bytes, protocol_version: int = 6) -> list[dict[str, Any]]:
    """Every event of a poll reply that parses, then the rest as one :data:`UNKNOWN_EVENT`.

    An event's length is known only from its code, so after an unknown code nothing can be
    read with certainty: those bytes go out whole (``raw``) for an operator to judge, with
    ``possible``: the events the rest would be if the unknown event had ``skipped`` bytes (a
    guess for the operator, never acted on). Never raises, never returns None.
    """
    events: list[dict[str, Any]] = []
    i = 0
    while i < len(data):
        decoded = _decode_one(data, i, protocol_version >= 6)
        if decoded is None:
            raw = bytes(data[i:])
            unknown: dict[str, Any] = {"event": UNKNOWN_EVENT, "code": raw[0], "raw": raw}
            for skip in range(1, len(raw)):
                rest = decode_events(raw[skip:], protocol_version)
                if rest:
                    unknown["possible"] = rest
                    unknown["skipped"] = skip
                    break
            events.append(unknown)
            break
        event, i = decoded
        events.append(event)
    return events


class SspFramer(Framer):
    """SSP packets in either direction; eSSP payloads stay opaque."""

    name = "ssp"
    description = "ITL SSP / eSSP (note validators, SMART Payout, SMART Hopper)"
    start_byte = STX

    def __init__(self, protocol_version: int = 6) -> None:
        """``protocol_version`` gives the shape of money in poll events (4 bytes below 6)."""
        super().__init__()
        self.protocol_version = int(protocol_version)

    def build(self, *, direction: Direction | None = None, **fields: Any) -> bytes:
        """Fields: ``data`` (command/response + parameters) or ``code`` + ``params``;
        ``seq`` (0/1) and ``address`` (slave ID, default 0)."""
        data = fields.get("data")
        if data is None:
            data = bytes((int(fields["code"]),)) + bytes(fields.get("params", b""))
        data = bytes(data)
        if not 0 < len(data) <= MAX_DATA:
            raise LengthError(f"DATA must be 1..{MAX_DATA} bytes, got {len(data)}",
                              protocol=self.name)
        seqid = (0x80 if fields.get("seq") else 0) | (int(fields.get("address", 0)) & 0x7F)
        body = _HEADER.build({"seqid": seqid, "length": len(data), "data": data}, self.name)
        crc = CRC16_SSP.func(body)
        return b"\x7f" + stuff(body + crc.to_bytes(2, "little"))

    def parse(self, data: bytes, direction: Direction | None = None) -> Frame:
        raw = bytes(data)
        if len(raw) < 6:
            raise LengthError(f"an SSP packet has at least 6 bytes, got {len(raw)}",
                              protocol=self.name, data=raw)
        if raw[0] != STX:
            raise StartByteError(f"expected STX 0x7F, got 0x{raw[0]:02X}", protocol=self.name,
                                 data=raw)
        body = raw[1:]
        if STX in body:
            body = unstuff(body)
        length = body[1]
        if len(body) != length + 4:
            raise LengthError(f"LEN says {length} data bytes, packet holds {len(body) - 4}",
                              protocol=self.name, data=raw)
        expected = CRC16_SSP.func(body[:-2])
        received = body[-2] | body[-1] << 8
        if expected != received:
            raise ChecksumError(protocol=self.name, algorithm=CRC16_SSP.name,
                                expected=expected, received=received, width=2, data=raw)
        parsed = _HEADER.parse(body[:-2], self.name)
        payload: bytes = parsed["data"]
        if length == 0:
            raise LengthError("LEN is 0: an SSP packet carries at least one byte",
                              protocol=self.name, data=raw)
        seqid: int = parsed["seqid"]
        code = payload[0]
        fields: dict[str, Any] = {"command": "", "code": code, "seq": seqid >> 7,
                                  "address": seqid & 0x7F}
        if code == STEX:
            fields["command"] = "ENCRYPTED"
            fields["encrypted"] = payload[1:]
            return Frame(self.name, raw, fields, direction)
        if direction is None:
            direction = "device" if code >= 0xF0 else "host"
        if direction == "host":
            fields["command"] = COMMANDS.get(code, f"COMMAND 0x{code:02X}")
            fields["params"] = payload[1:]
        else:
            fields["data"] = payload[1:]
            if code in RESPONSES:
                fields["command"] = RESPONSES[code]
                events = (decode_events(payload[1:], self.protocol_version)
                          if code == 0xF0 and len(payload) > 1 else None)
            else:
                # Some manual examples and old firmware start a reply with an event code or a
                # bare status; name it rather than refuse a packet whose CRC is right.
                fields["command"] = EVENTS.get(code, (f"RESPONSE 0x{code:02X}", None))[0]
                events = (decode_events(payload, self.protocol_version) if code in EVENTS
                          else None)
            if events is not None:
                fields["events"] = events
        return Frame(self.name, raw, fields, direction)

    def compiled_scan(self, direction: Direction | None) -> dict[str, Any] | None:
        return {"proto": "SSP"}

    def measure(self, buf: bytes | bytearray, start: int, direction: Direction | None) -> int:
        """Walk the stuffed bytes until SEQ, LEN, DATA and CRC are complete."""
        n = len(buf)
        if start + 2 < n and buf[start + 1] != STX and buf[start + 2] != STX:
            # Fast path: no 0x7F in the packet means no stuffing to walk.
            length = buf[start + 2]
            if length == 0:
                return -1
            end = start + 5 + length
            if end <= n and buf.find(STX, start + 1, end) < 0:
                return end - start
        pos = start + 1
        got = 0
        need = 4  # SEQ, LEN, CRCL, CRCH; DATA added once LEN is read
        while got < need:
            if pos >= n:
                return 0
            b = buf[pos]
            if b == STX:
                if pos + 1 >= n:
                    return 0
                if buf[pos + 1] != STX:
                    return -1  # an unpaired 0x7F: a new packet starts here
                pos += 2
            else:
                pos += 1
            got += 1
            if got == 2:
                need = 4 + b
                if b == 0:
                    return -1
        return pos - start
