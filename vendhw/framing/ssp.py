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

COMMANDS: dict[int, str] = {  # GA138 v2.2 command pages (names as ITL prints them)
    0x01: "RESET", 0x02: "SET INHIBITS", 0x03: "DISPLAY ON", 0x04: "DISPLAY OFF",
    0x05: "SETUP REQUEST", 0x06: "HOST PROTOCOL VERSION", 0x07: "POLL", 0x08: "REJECT",
    0x09: "DISABLE", 0x0A: "ENABLE", 0x0C: "GET SERIAL NUMBER", 0x0D: "UNIT DATA",
    0x0E: "CHANNEL VALUE REQUEST", 0x0F: "CHANNEL SECURITY DATA",
    0x10: "CHANNEL RE-TEACH DATA", 0x11: "SYNC", 0x15: "LAST REJECT NOTE",
    0x17: "LAST REJECT CODE", 0x18: "HOLD", 0x19: "ENABLE PROTOCOL VERSION EVENTS",
    0x20: "GET FIRMWARE VERSION", 0x21: "GET DATASET VERSION", 0x22: "GET ALL LEVELS",
    0x23: "GET BARCODE READER CONFIGURATION", 0x24: "SET BARCODE READER CONFIGURATION",
    0x25: "GET BARCODE INHIBIT", 0x26: "SET BARCODE INHIBIT", 0x27: "GET BARCODE DATA",
    0x30: "SET REFILL MODE", 0x33: "PAYOUT AMOUNT", 0x34: "SET DENOMINATION LEVEL",
    0x35: "GET DENOMINATION LEVEL", 0x37: "COMMS PASS THROUGH", 0x38: "HALT PAYOUT",
    0x3B: "SET DENOMINATION ROUTE", 0x3C: "GET DENOMINATION ROUTE", 0x3D: "FLOAT AMOUNT",
    0x3E: "GET MINIMUM PAYOUT", 0x3F: "EMPTY ALL", 0x40: "SET COIN MECH INHIBITS",
    0x41: "GET NOTE POSITIONS", 0x42: "PAYOUT NOTE", 0x43: "STACK NOTE",
    0x44: "FLOAT BY DENOMINATION", 0x45: "SET VALUE REPORTING TYPE",
    0x46: "PAYOUT BY DENOMINATION", 0x49: "SET COIN MECH GLOBAL INHIBIT",
    0x4A: "SET GENERATOR", 0x4B: "SET MODULUS", 0x4C: "REQUEST KEY EXCHANGE",
    0x4D: "SET BAUD RATE", 0x4F: "GET BUILD REVISION", 0x50: "SET HOPPER OPTIONS",
    0x51: "GET HOPPER OPTIONS", 0x52: "SMART EMPTY", 0x53: "CASHBOX PAYOUT OPERATION DATA",
    0x54: "CONFIGURE BEZEL", 0x56: "POLL WITH ACK", 0x57: "EVENT ACK", 0x58: "GET COUNTERS",
    0x59: "RESET COUNTERS", 0x5B: "DISABLE PAYOUT DEVICE", 0x5C: "ENABLE PAYOUT DEVICE",
    0x5D: "COIN STIR", 0x60: "SET ENCRYPTION KEY", 0x61: "ENCRYPTION RESET TO DEFAULT",
    0x62: "GET REAL TIME CLOCK CONFIGURATION", 0x63: "GET REAL TIME CLOCK",
    0x64: "SET REAL TIME CLOCK", 0x65: "GET TEBS BARCODE", 0x66: "GET TEBS LOG",
    0x67: "CASHBOX UNLOCK ENABLE", 0x68: "CASHBOX LOCK ENABLE", 0x69: "RESET TEBS LOGS",
    0x70: "TICKET PRINT", 0x71: "PRINTER CONFIGURATION", 0x72: "ENABLE TITO EVENTS",
    0x76: "CANCEL ESCROW TRANSACTION", 0x77: "COMMIT ESCROW TRANSACTION",
    0x78: "READ ESCROW VALUE", 0x79: "GET ESCROW SIZE", 0x7A: "SET ESCROW SIZE",
    0x39: "PAYOUT AMOUNT BY DENOMINATION", 0x3A: "COIN ESCROW",
    0x4E: "SET CASHBOX PAYOUT LIMIT", 0x5A: "COIN MECH OPTIONS",
}
RESPONSES: dict[int, str] = {
    0xF0: "OK", 0xF2: "COMMAND NOT KNOWN", 0xF3: "WRONG NUMBER OF PARAMETERS",
    0xF4: "PARAMETER OUT OF RANGE", 0xF5: "COMMAND CANNOT BE PROCESSED",
    0xF6: "SOFTWARE ERROR", 0xF8: "FAIL", 0xFA: "KEY NOT SET",
}

# Poll events: name and parameter shape (GA138 event tables). Shapes: None = no data;
# "ch" = 1 channel byte; "values" = protocol >= 6: count, then count x (4-byte value + 3-byte
# currency), before 6: one 4-byte value; "incomplete" = the same with (paid, requested) pairs;
# "value7" = one 4-byte value + currency; "coin" = value7 from protocol 6, a bare 4-byte value
# before; "payout_error" = "values" followed by one error-code byte; "error" = 1 error byte.
# Data sizes: the "Data size (bytes)" column of each GA138 v2.2 event page.
EVENTS: dict[int, tuple[str, str | None]] = {
    0xF1: ("SLAVE RESET", None), 0xEF: ("READ NOTE", "ch"), 0xEE: ("CREDIT NOTE", "ch"),
    0xED: ("NOTE REJECTING", None), 0xEC: ("NOTE REJECTED", None),
    0xCC: ("NOTE STACKING", None), 0xEB: ("NOTE STACKED", None),
    0xEA: ("SAFE NOTE JAM", None), 0xE9: ("UNSAFE NOTE JAM", None),
    0xE8: ("DISABLED", None), 0xE6: ("FRAUD ATTEMPT", "ch"), 0xE7: ("STACKER FULL", None),
    0xE1: ("NOTE CLEARED FROM FRONT", "ch"), 0xE2: ("NOTE CLEARED TO CASHBOX", "ch"),
    0xE3: ("CASHBOX REMOVED", None), 0xE4: ("CASHBOX REPLACED", None),
    0xE5: ("BARCODE TICKET VALIDATED", None), 0xD1: ("BARCODE TICKET ACKNOWLEDGE", None),
    0xE0: ("NOTE PATH OPEN", None), 0xB5: ("CHANNEL DISABLE", None),
    0xB6: ("INITIALISING", None), 0xDA: ("DISPENSING", "values"),
    0xD2: ("DISPENSED", "values"), 0xD3: ("COINS LOW", None), 0xD5: ("JAMMED", "values"),
    0xD6: ("HALTED", "values"), 0xD7: ("FLOATING", "values"), 0xD8: ("FLOATED", "values"),
    0xD9: ("TIMEOUT", "values"), 0xDC: ("INCOMPLETE PAYOUT", "incomplete"),
    0xDD: ("INCOMPLETE FLOAT", "incomplete"), 0xDE: ("CASHBOX PAID", "values"),
    0xDF: ("COIN CREDIT", "coin"), 0xC4: ("COIN MECH JAMMED", None),
    0xC5: ("COIN MECH RETURN ACTIVE", None), 0xC2: ("EMPTYING", None), 0xC3: ("EMPTIED", None),
    0xB3: ("SMART EMPTYING", "values"), 0xB4: ("SMART EMPTIED", "values"),
    0x83: ("CALIBRATION FAILED", "ch"), 0xDB: ("NOTE STORED IN PAYOUT", None),
    0xC6: ("PAYOUT OUT OF SERVICE", None), 0xB0: ("JAM RECOVERY", None),
    0xB1: ("ERROR DURING PAYOUT", "payout_error"),
    0xC9: ("NOTE TRANSFERRED TO STACKER", "value7"), 0xCE: ("NOTE HELD IN BEZEL", "value7"),
    0xCB: ("NOTE INTO STORE AT RESET", "value7"),
    0xCA: ("NOTE INTO STACKER AT RESET", "value7"),
    0xCD: ("NOTE DISPENSED AT RESET", "value7"),
    0xC7: ("NOTE FLOAT REMOVED", None), 0xC8: ("NOTE FLOAT ATTACHED", None),
    0xCF: ("DEVICE FULL", None), 0xBD: ("ATTACHED COIN MECH DISABLED", None),
    0xBE: ("ATTACHED COIN MECH ENABLED", None), 0xBF: ("VALUE ADDED", "values"),
    0xC1: ("PAY-IN ACTIVE", None), 0x90: ("CASHBOX OUT OF SERVICE", "error"),
    0x92: ("CASHBOX BACK IN SERVICE", None), 0x93: ("CASHBOX UNLOCK ENABLED", None),
    0xB7: ("COIN MECH ERROR", "error"), 0xBA: ("COIN REJECTED", "value7"),
    0xC0: ("MAINTENANCE REQUIRED", None), 0x8B: ("ESCROW ACTIVE", None),
    0xA0: ("TICKETS LOW", None), 0xA1: ("TICKETS REPLACED", None),
    0xA2: ("PRINTER HEAD REMOVED", None), 0xA3: ("TICKET PATH OPEN", None),
    0xA4: ("TICKET JAM", None), 0xA5: ("TICKET PRINTING", None),
    0xA6: ("TICKET PRINTED", None), 0xA7: ("TICKET IN BEZEL AT STARTUP", None),
    0xA8: ("TICKET PRINTING ERROR", "error"), 0xA9: ("PRINTER HEAD REPLACED", None),
    0xAA: ("TICKET PATH CLOSED", None), 0xAB: ("NO PAPER", None),
    0xAC: ("PAPER REPLACED", None), 0xAD: ("TICKET IN BEZEL", None),
    0xAE: ("PRINT HALTED", None), 0xAF: ("PRINTED TO CASHBOX", None),
}
UNKNOWN_EVENT = "UNKNOWN EVENT"
"""``decode_poll``'s name for bytes from an unknown (or cut-short) event to the end."""
ACKED_EVENTS = frozenset((0xEE, 0xE6, 0xE2, 0xD1, 0xB6, 0xD2, 0xD8, 0xD9, 0xDC, 0xDD, 0xB4,
                          0xB1, 0xC9, 0xCB, 0xCA, 0xCD, 0xBF))
"""GA138 event tables, column "Poll with Ack": with POLL WITH ACK (0x56) these events repeat
until EVENT ACK (0x57), and the device accepts no further note until then."""

_HEADER = Layout(cs.Struct("seqid" / cs.Int8ub, "length" / cs.Int8ub, "data" / cs.GreedyBytes),
                 "SSP packet")


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
