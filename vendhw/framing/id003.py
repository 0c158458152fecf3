"""JCM ID-003 packets (UBA, iVIZION, WBA, EBA, ... note acceptors and recyclers).

``SYNC 0xFC | LNG | CMD | DATA... | CRCL | CRCH``: LNG is the total length (5 without data),
the CRC is CRC-16/KERMIT (CCITT polynomial reflected, init 0) over SYNC..DATA, low byte first.

**Direction matters**: the acceptor's status codes reuse command byte values (``FC 05 11 27
56`` is both STATUS REQUEST and ENABLE/IDLING; ``FC 05 40 2B 15`` both RESET and POWER UP).
Parse with a direction; without one the host reading is returned and the device reading is
named in ``device_reading``. Recycler commands carry the extension prefix ``F0 20``.

Sources: ``protocols/id003/README.md`` (no public JCM specification; four independent
implementations that agree).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import construct as cs

from vendhw.errors import ChecksumError, LengthError, StartByteError
from vendhw.framing.base import Direction, Frame, Framer, Layout
from vendhw.framing.checksums import CRC16_KERMIT

SYNC = 0xFC
MIN_LENGTH = 5
INTER_BYTE_GAP = 0.05
"""No public figure; implementations wait 50 ms for a reply (py-id003, hackwin)."""
REPLY_TIMEOUT = 0.2
"""Reply wait used by the host layer: hackwin waits 50 ms, py-id003 50 ms; 200 ms leaves room
for USB-serial adapters."""
POLL_INTERVAL = 0.1
"""Status polling period (Portalum 100 ms; the usual range is 100-200 ms)."""

class Command(IntEnum):
    """Host -> acceptor command codes (protocols/id003/README.md)."""

    STATUS_REQUEST = 0x11
    RESET = 0x40
    STACK_1 = 0x41
    STACK_2 = 0x42
    RETURN = 0x43
    HOLD = 0x44
    WAIT = 0x45
    ACK = 0x50
    SET_DENOMINATIONS = 0xC0
    SET_SECURITY = 0xC1
    SET_COMMUNICATION_MODE = 0xC2
    SET_INHIBIT = 0xC3
    SET_DIRECTION = 0xC4
    SET_OPTIONAL_FUNCTION = 0xC5
    SET_BARCODE_FUNCTION = 0xC6
    SET_BAR_INHIBIT = 0xC7
    DENOMINATIONS_REQUEST = 0x80
    SECURITY_REQUEST = 0x81
    COMMUNICATION_MODE_REQUEST = 0x82
    INHIBIT_REQUEST = 0x83
    DIRECTION_REQUEST = 0x84
    OPTIONAL_FUNCTION_REQUEST = 0x85
    BARCODE_FUNCTION_REQUEST = 0x86
    BAR_INHIBIT_REQUEST = 0x87
    VERSION_REQUEST = 0x88
    BOOT_VERSION_REQUEST = 0x89
    CURRENCY_ASSIGN_REQUEST = 0x8A


class Status(IntEnum):
    """Acceptor -> host status codes (the reply to STATUS REQUEST and the other replies)."""

    ENQ = 0x05
    IDLING = 0x11
    ACCEPTING = 0x12
    ESCROW = 0x13
    STACKING = 0x14
    VEND_VALID = 0x15
    STACKED = 0x16
    REJECTING = 0x17
    RETURNING = 0x18
    HOLDING = 0x19
    DISABLED = 0x1A
    INITIALIZE = 0x1B
    POWER_UP = 0x40
    POWER_UP_BILL_ACCEPTOR = 0x41
    POWER_UP_BILL_STACKER = 0x42
    STACKER_FULL = 0x43
    STACKER_OPEN = 0x44
    ACCEPTOR_JAM = 0x45
    STACKER_JAM = 0x46
    PAUSE = 0x47
    CHEATED = 0x48
    FAILURE = 0x49
    COMMUNICATION_ERROR = 0x4A
    INVALID_COMMAND = 0x4B
    ACK = 0x50


POWER_UPS = frozenset((Status.POWER_UP, Status.POWER_UP_BILL_ACCEPTOR,
                       Status.POWER_UP_BILL_STACKER))

COMMANDS: dict[int, str] = {
    Command.STATUS_REQUEST: "STATUS REQUEST", Command.RESET: "RESET",
    Command.STACK_1: "STACK-1", Command.STACK_2: "STACK-2", Command.RETURN: "RETURN",
    Command.HOLD: "HOLD", Command.WAIT: "WAIT", Command.ACK: "ACK",
    Command.SET_DENOMINATIONS: "SET ENABLE/DISABLE DENOMINATION",
    Command.SET_SECURITY: "SET SECURITY DENOMINATION",
    Command.SET_COMMUNICATION_MODE: "SET COMMUNICATION MODE",
    Command.SET_INHIBIT: "SET INHIBIT", Command.SET_DIRECTION: "SET DIRECTION",
    Command.SET_OPTIONAL_FUNCTION: "SET OPTIONAL FUNCTION",
    Command.SET_BARCODE_FUNCTION: "SET BARCODE FUNCTION",
    Command.SET_BAR_INHIBIT: "SET BAR INHIBIT",
    Command.DENOMINATIONS_REQUEST: "ENABLE/DISABLE DENOMINATION STATUS REQUEST",
    Command.SECURITY_REQUEST: "SECURITY STATUS REQUEST",
    Command.COMMUNICATION_MODE_REQUEST: "COMMUNICATION MODE STATUS REQUEST",
    Command.INHIBIT_REQUEST: "INHIBIT STATUS REQUEST",
    Command.DIRECTION_REQUEST: "DIRECTION STATUS REQUEST",
    Command.OPTIONAL_FUNCTION_REQUEST: "OPTIONAL FUNCTION STATUS REQUEST",
    Command.BARCODE_FUNCTION_REQUEST: "BARCODE FUNCTION STATUS REQUEST",
    Command.BAR_INHIBIT_REQUEST: "BAR INHIBIT STATUS REQUEST",
    Command.VERSION_REQUEST: "VERSION REQUEST",
    Command.BOOT_VERSION_REQUEST: "BOOT VERSION REQUEST",
    Command.CURRENCY_ASSIGN_REQUEST: "CURRENCY ASSIGN REQUEST",
}
STATUSES: dict[int, str] = {
    Status.IDLING: "ENABLE/IDLING", Status.ACCEPTING: "ACCEPTING", Status.ESCROW: "ESCROW",
    Status.STACKING: "STACKING", Status.VEND_VALID: "VEND VALID", Status.STACKED: "STACKED",
    Status.REJECTING: "REJECTING", Status.RETURNING: "RETURNING", Status.HOLDING: "HOLDING",
    Status.DISABLED: "DISABLE/INHIBIT", Status.INITIALIZE: "INITIALIZE",
    Status.POWER_UP: "POWER UP", Status.POWER_UP_BILL_ACCEPTOR: "POWER UP WITH BILL IN ACCEPTOR",
    Status.POWER_UP_BILL_STACKER: "POWER UP WITH BILL IN STACKER",
    Status.STACKER_FULL: "STACKER FULL", Status.STACKER_OPEN: "STACKER OPEN",
    Status.ACCEPTOR_JAM: "ACCEPTOR JAM", Status.STACKER_JAM: "STACKER JAM",
    Status.PAUSE: "PAUSE", Status.CHEATED: "CHEATED", Status.FAILURE: "FAILURE",
    Status.COMMUNICATION_ERROR: "COMMUNICATION ERROR",
    Status.INVALID_COMMAND: "INVALID COMMAND", Status.ACK: "ACK", Status.ENQ: "ENQ",
}
# Setting commands are echoed back by the acceptor with their data; status requests 0x80-0x8A
# are answered under the same code.
for _code in range(0xC0, 0xC8):
    STATUSES[_code] = COMMANDS[_code] + " (ECHO)"
for _code in range(0x80, 0x8B):
    STATUSES[_code] = COMMANDS[_code].replace(" REQUEST", "")

DENOMINATIONS = {code: f"DENOMINATION {code - 0x60}" for code in range(0x61, 0x69)}
DENOMINATIONS[0x6F] = "BARCODE TICKET"
REJECT_REASONS: dict[int, str] = {
    0x71: "insertion error", 0x72: "magnetic pattern error", 0x73: "remaining bill in head",
    0x74: "compensation/amplitude error", 0x75: "conveying error", 0x76: "denomination error",
    0x77: "photo pattern error", 0x78: "photo level error",
    0x79: "inhibited by DIP switch or command",
    0x7A: "no command after escrow", 0x7B: "operation error", 0x7C: "returned from stacker",
    0x7D: "length error", 0x7E: "colour pattern error",
    0x7F: "true bill error",  # lamassu-machine lib/id003/id003rs232.js: 0x7f 'trueBill'
    0x98: "multiple bills",
    0x9B: "ticket inserted upside down",
}
FAILURES: dict[int, str] = {
    0xA2: "stack motor failure", 0xA5: "transport motor speed failure",
    0xA6: "transport motor failure", 0xA7: "aligning motor failure",
    0xAB: "cash box not ready", 0xAF: "validator head removed", 0xB0: "boot ROM failure",
    0xB1: "external ROM failure", 0xB2: "ROM failure", 0xB3: "external ROM writing failure",
}
EXTENSION = b"\xf0\x20"
RECYCLER_COMMANDS: dict[int, str] = {
    0x4A: "PAYOUT", 0x4B: "COLLECT", 0x4C: "CLEAR", 0x4D: "EMERGENCY STOP",
    0x90: "RECYCLE CURRENCY REQUEST", 0x92: "RECYCLE COUNT REQUEST", 0x93: "RECYCLER 0x93",
    0xA2: "CURRENT COUNT REQUEST", 0xD0: "SET RECYCLE CURRENCY", 0xD2: "SET RECYCLE COUNT",
    0xE2: "SET CURRENT COUNT",
}

CURRENCY_ASSIGN = Command.CURRENCY_ASSIGN_REQUEST
CURRENCY_ASSIGN_ENTRY = 4
"""CURRENCY ASSIGN (0x8A) reply: 4-byte entries ``[escrow code][country code][integer]
[exponent]``, value = integer x 10^exponent main units, integer 0 = unused code
(lamassu/lamassu-machine ``lib/id003/id003rs232.js`` ``_denominations``)."""


@dataclass(frozen=True)
class DenominationEntry:
    """One entry of the CURRENCY ASSIGN table; ``value`` in main units (dollars)."""

    escrow_code: int
    country: int
    value: int


_CURRENCY_TABLE = Layout(cs.GreedyRange(cs.Struct(
    "escrow_code" / cs.Int8ub, "country" / cs.Int8ub, "integer" / cs.Int8ub,
    "exponent" / cs.Int8ub,
)), "CURRENCY ASSIGN table")
"""The CURRENCY ASSIGN reply: ``CURRENCY_ASSIGN_ENTRY``-byte entries until the data ends."""


def parse_currency_assign(data: bytes) -> list[DenominationEntry]:
    """The used entries of a CURRENCY ASSIGN reply (a trailing partial entry is ignored)."""
    return [DenominationEntry(e["escrow_code"], e["country"], e["integer"] * 10 ** e["exponent"])
            for e in _CURRENCY_TABLE.parse(data, "id003") if e["integer"]]


def build_currency_assign(entries: list[tuple[int, int, int]]) -> bytes:
    """``[(escrow code, country, value in main units)]`` -> reply data (value 0 = unused);
    the integer is written without trailing zeros (500 -> 5 x 10^2)."""
    table = []
    for code, country, value in entries:
        integer, exponent = value, 0
        while integer > 0xFF or (integer and integer % 10 == 0):
            if integer % 10:
                raise LengthError(f"{value} cannot be written as integer x 10^exponent",
                                  protocol="id003")
            integer, exponent = integer // 10, exponent + 1
        table.append({"escrow_code": code, "country": country, "integer": integer,
                      "exponent": exponent})
    return _CURRENCY_TABLE.build(table, "id003")


_PACKET = Layout(cs.Struct("sync" / cs.Const(b"\xfc"), "length" / cs.Int8ub,
                           "cmd" / cs.Int8ub, "data" / cs.GreedyBytes), "ID-003 packet")


class Id003Framer(Framer):
    """ID-003 packets; give the direction, since statuses reuse command codes."""

    name = "id003"
    description = "JCM ID-003 note acceptors and recyclers (direction matters)"
    start_byte = SYNC
    needs_direction = True

    def build(self, *, direction: Direction | None = None, **fields: Any) -> bytes:
        """Fields: ``code`` (command or status byte) and ``data``."""
        data = bytes(fields.get("data", b""))
        length = len(data) + MIN_LENGTH
        if length > 255:
            raise LengthError(f"packet of {length} bytes exceeds 255", protocol=self.name)
        body = _PACKET.build({"length": length, "cmd": int(fields["code"]), "data": data},
                             self.name)
        return body + CRC16_KERMIT.func(body).to_bytes(2, "little")

    def parse(self, data: bytes, direction: Direction | None = None) -> Frame:
        raw = bytes(data)
        n = len(raw)
        if n < MIN_LENGTH:
            raise LengthError(f"an ID-003 packet has at least 5 bytes, got {n}",
                              protocol=self.name, data=raw)
        if raw[0] != SYNC:
            raise StartByteError(f"expected SYNC 0xFC, got 0x{raw[0]:02X}", protocol=self.name,
                                 data=raw)
        if raw[1] != n:
            raise LengthError(f"LNG says {raw[1]} bytes, packet has {n}", protocol=self.name,
                              data=raw)
        expected = CRC16_KERMIT.func(raw[:-2])
        received = raw[-2] | raw[-1] << 8
        if expected != received:
            raise ChecksumError(protocol=self.name, algorithm=CRC16_KERMIT.name,
                                expected=expected, received=received, width=2, data=raw)
        parsed = _PACKET.parse(raw[:-2], self.name)
        code: int = parsed["cmd"]
        payload: bytes = parsed["data"]
        fields: dict[str, Any] = {"command": "", "code": code, "data": payload}
        reading = direction or "host"
        if code == EXTENSION[0] and payload[:1] == EXTENSION[1:]:
            sub = payload[1] if len(payload) > 1 else -1
            fields["command"] = "RECYCLER " + RECYCLER_COMMANDS.get(sub, f"0x{sub:02X}")
            fields["extension"] = sub
            fields["data"] = payload[2:]
        else:
            table = COMMANDS if reading == "host" else STATUSES
            fields["command"] = table.get(code, f"{'COMMAND' if reading == 'host' else 'STATUS'}"
                                                f" 0x{code:02X}")
            if reading == "device":
                self._decode_status(code, payload, fields)
            elif direction is None and code in STATUSES:
                fields["device_reading"] = STATUSES[code]
        return Frame(self.name, raw, fields, direction)

    @staticmethod
    def _decode_status(code: int, payload: bytes, fields: dict[str, Any]) -> None:
        if not payload:
            return
        first = payload[0]
        if code == 0x13 or (code == 0x16 and first in DENOMINATIONS):
            fields["denomination"] = DENOMINATIONS.get(first, f"0x{first:02X}")
            fields["denomination_code"] = first
            if first == 0x6F:
                fields["barcode"] = payload[1:].decode("ascii", "replace")
        elif code == 0x17:
            fields["reject_reason"] = REJECT_REASONS.get(first, f"0x{first:02X}")
        elif code == 0x49:
            fields["failure"] = FAILURES.get(first, f"0x{first:02X}")
        elif code == CURRENCY_ASSIGN:
            fields["currency_assign"] = [
                {"escrow_code": e.escrow_code, "country": e.country, "value": e.value}
                for e in parse_currency_assign(payload)]

    def compiled_scan(self, direction: Direction | None) -> dict[str, Any] | None:
        return {"proto": "ID003"}

    def measure(self, buf: bytes | bytearray, start: int, direction: Direction | None) -> int:
        if start + 1 >= len(buf):
            return 0
        length = buf[start + 1]
        return length if length >= MIN_LENGTH else -1
