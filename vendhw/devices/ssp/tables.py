"""SSP constants: line timing, command and response names, unit types, error tables.

Why apart: host modules and callers read these names; the codes themselves are declared once,
in :mod:`vendhw.framing.ssp`.
"""

from __future__ import annotations

from vendhw.errors import NakError
from vendhw.framing.ssp import RESPONSES, Command, Event, Response, UnitType

# --- line and timing (GA138 "Physical layer", GA973) -------------------------------------------

BAUDRATE = 9600
STOPBITS = 2
"""GA138: 9600 baud, 8 data bits, no parity, two stop bits."""
POLL_INTERVAL = 0.2
"""GA973 §7.4: poll every 200-1000 ms."""
ESCROW_TIMEOUT = 5.0
"""GA973 §6: a note in escrow is returned after 5 s without a command; HOLD restarts it."""
INACTIVITY_TIMEOUT = 10.0
"""GA973: the device disables itself after 10 s without a command (SMART Hopper 5 s)."""
MAX_PROTOCOL_VERSION = 8
"""The newest protocol version this host speaks; it offers it first and steps down on FAIL."""
MIN_PROTOCOL_VERSION = 4

# --- commands (GA138) --------------------------------------------------------------------------

# The codes are declared once, in vendhw.framing.ssp; these names are kept for callers.
C = Command
(RESET, SET_INHIBITS, SETUP_REQUEST, HOST_PROTOCOL_VERSION, POLL, REJECT, DISABLE, ENABLE,
 GET_SERIAL_NUMBER, SYNC, LAST_REJECT_CODE, HOLD, GET_ALL_LEVELS, PAYOUT_AMOUNT,
 GET_DENOMINATION_LEVEL, HALT_PAYOUT, SET_DENOMINATION_ROUTE, GET_DENOMINATION_ROUTE,
 FLOAT_AMOUNT, GET_MINIMUM_PAYOUT, EMPTY_ALL, SET_GENERATOR, SET_MODULUS,
 REQUEST_KEY_EXCHANGE, SMART_EMPTY, POLL_WITH_ACK, EVENT_ACK, DISABLE_PAYOUT_DEVICE,
 ENABLE_PAYOUT_DEVICE, SET_COIN_MECH_INHIBITS) = (
    C.RESET, C.SET_INHIBITS, C.SETUP_REQUEST, C.HOST_PROTOCOL_VERSION, C.POLL, C.REJECT,
    C.DISABLE, C.ENABLE, C.GET_SERIAL_NUMBER, C.SYNC, C.LAST_REJECT_CODE, C.HOLD,
    C.GET_ALL_LEVELS, C.PAYOUT_AMOUNT, C.GET_DENOMINATION_LEVEL, C.HALT_PAYOUT,
    C.SET_DENOMINATION_ROUTE, C.GET_DENOMINATION_ROUTE, C.FLOAT_AMOUNT, C.GET_MINIMUM_PAYOUT,
    C.EMPTY_ALL, C.SET_GENERATOR, C.SET_MODULUS, C.REQUEST_KEY_EXCHANGE, C.SMART_EMPTY,
    C.POLL_WITH_ACK, C.EVENT_ACK, C.DISABLE_PAYOUT_DEVICE, C.ENABLE_PAYOUT_DEVICE,
    C.SET_COIN_MECH_INHIBITS)

R = Response
OK, COMMAND_NOT_KNOWN, WRONG_PARAMETERS, PARAMETER_OUT_OF_RANGE = (
    R.OK, R.COMMAND_NOT_KNOWN, R.WRONG_NUMBER_OF_PARAMETERS, R.PARAMETER_OUT_OF_RANGE)
CANNOT_PROCESS, SOFTWARE_ERROR, FAIL, KEY_NOT_SET = (
    R.COMMAND_CANNOT_BE_PROCESSED, R.SOFTWARE_ERROR, R.FAIL, R.KEY_NOT_SET)
COMMIT, TEST_ONLY = 0x58, 0x19
"""GA138 PAYOUT AMOUNT / FLOAT AMOUNT option byte (protocol >= 6)."""
ROUTE_PAYOUT, ROUTE_CASHBOX = 0, 1
"""GA138 SET DENOMINATION ROUTE."""

U = UnitType
UNIT_TYPES: dict[int, str] = {
    U.NOTE_VALIDATOR: "note validator", U.SMART_HOPPER: "SMART Hopper",
    U.SMART_PAYOUT: "SMART Payout", U.NV11: "NV11 note float", U.TEBS: "TEBS"}
PAYOUT_UNITS = frozenset((U.SMART_HOPPER, U.SMART_PAYOUT, U.NV11))
NO_ESCROW_UNITS = frozenset((U.SMART_HOPPER,))

PAYOUT_ERRORS = {1: "not enough value in device", 2: "cannot pay exact amount",
                 3: "device busy", 4: "device disabled"}
"""GA138 PAYOUT AMOUNT / FLOAT AMOUNT: the byte after COMMAND CANNOT BE PROCESSED."""
PAYOUT_DEVICE_ERRORS = {1: "no device connected", 2: "invalid currency detected",
                        3: "busy", 4: "empty only (note float only)", 5: "device error"}
"""GA138 ENABLE PAYOUT DEVICE (0x5C): the byte after COMMAND CANNOT BE PROCESSED."""
ROUTE_ERRORS = {1: "no payout connected", 2: "invalid currency detected",
                3: "payout device failure"}
"""GA138 SET DENOMINATION ROUTE (0x3B): the byte after COMMAND CANNOT BE PROCESSED."""
COIN_MECH_ERRORS = {
    1: "reject coin", 2: "inhibited coin", 3: "multiple window", 4: "wake-up timeout",
    5: "validation timeout", 6: "credit sensor timeout", 7: "sorter opto timeout",
    8: "2nd close coin error", 9: "accept gate not ready", 10: "credit sensor not ready",
    11: "sorter not ready", 12: "reject coin not cleared", 13: "validation sensor not ready",
    14: "credit sensor blocked", 15: "sorter opto blocked", 16: "credit sequence error",
    17: "coin going backwards", 18: "coin too fast (over credit sensor)",
    19: "coin too slow (over credit sensor)", 20: "C.O.S. mechanism activated",
    21: "DCE opto timeout", 22: "DCE opto not seen", 23: "credit sensor reached too early",
    24: "reject coin (repeated sequential trip)", 25: "reject slug",
    26: "reject sensor blocked", 27: "games overload", 28: "max. coin meter pulses exceeded",
    29: "accept gate open not closed", 30: "accept gate closed not open",
    31: "manifold opto timeout", 32: "manifold opto blocked",
    **{code: f"inhibited coin (type {code - 127})" for code in range(128, 160)},
    253: "data block request", 254: "coin return mechanism activated",
    255: "unspecified alarm code",
}
"""GA138 event 0xB7 COIN MECH ERROR, its data byte (the ccTalk error codes)."""
TICKET_PRINTING_ERRORS = {0: "no paper", 1: "load fail", 2: "no head",
                          3: "diverter did not open", 4: "diverter did not close",
                          5: "burst fail", 6: "cut fail", 7: "reverse validate fail", 8: "jam",
                          9: "NV200 fail", 10: "NV200 timeout", 17: "NV200 cashbox error",
                          19: "SMART Ticket timeout"}
"""GA138 event 0xA8 TICKET PRINTING ERROR, its data byte."""
CASHBOX_SERVICE_ERRORS = {1: "no device connected", 2: "unable to read barcode",
                          3: "cashbox out of position", 4: "cashbox removed",
                          5: "cashbox unlocked", 6: "currency mismatch", 7: "firmware error",
                          8: "TEBS comms error"}
"""GA138 event 0x90 CASHBOX OUT OF SERVICE, its data byte."""
ERROR_BYTES = {Event.COIN_MECH_ERROR: COIN_MECH_ERRORS,
               Event.TICKET_PRINTING_ERROR: TICKET_PRINTING_ERRORS,
               Event.CASHBOX_OUT_OF_SERVICE: CASHBOX_SERVICE_ERRORS}
ERROR_DURING_PAYOUT = {0: "note not correctly detected as it was routed",
                       1: "note jammed in transport", 2: "cashbox error",
                       3: "payout stalled", 4: "payout cancelled: poll timeout"}
"""GA138 event 0xB1, its final byte."""
REJECT_REASONS = {
    0x00: "note accepted", 0x01: "length fail", 0x02: "average fail", 0x03: "coastline fail",
    0x04: "graph fail", 0x05: "buried fail", 0x06: "channel inhibited",
    0x07: "second note detected", 0x08: "rejected by host", 0x09: "cross channel detected",
    0x0A: "rear sensor error", 0x0B: "note too long", 0x0C: "disabled by host",
    0x0D: "slow mechanism", 0x0E: "strimming attempt", 0x0F: "fraud channel",
    0x10: "no notes detected", 0x11: "peak detect fail", 0x12: "twisted note",
    0x13: "escrow time-out", 0x14: "bar code scan fail", 0x15: "no cam activate",
    0x16: "slot fail 1", 0x17: "slot fail 2", 0x18: "lens oversample",
    0x19: "width detection fail", 0x1A: "short note detected", 0x1B: "payout note",
    0x1C: "double note detected", 0x1D: "unable to stack",
}
"""GA138 "Reject Codes" (LAST REJECT CODE 0x17)."""


class SspResponseError(NakError):
    """The device answered with a generic response other than OK."""

    def __init__(self, command: int, code: int, data: bytes = b"",
                 errors: dict[int, str] | None = None) -> None:
        self.command = command
        self.code = code
        self.data = data
        self.reason = (errors or {}).get(data[0]) if data else None
        name = RESPONSES.get(code, f"response 0x{code:02X}")
        text = f"SSP command 0x{command:02X}: {name}"
        if data:
            text += f" (error {data[0]}{': ' + self.reason if self.reason else ''})"
        super().__init__(text)
