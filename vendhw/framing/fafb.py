"""FA FB packets: the XY / JSK "VMC <-> upper computer" protocol (V3.0).

``FA FB | CMD | LEN | PackNO + TEXT | XOR``: LEN counts PackNO and TEXT (0 for POLL and ACK,
which carry no PackNO); XOR covers every byte from FA to the end of TEXT. 57600 8N1; the
VMC (the board) is bus master and polls the host every 200 ms. Sources:
``protocols/fafb/README.md``.

The spec's LEN column is wrong in places (0x01 is listed as 4 for 3 bytes), so the decoder
trusts the byte count: LEN must match the bytes that follow, and a command's text may be a
byte longer or shorter than the table says (the XY demo sends 0x01 with LEN 3).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum
from typing import Any

import construct as cs

from vendhw.errors import ChecksumError, FramingError, LengthError, StartByteError
from vendhw.framing.base import Direction, Frame, Framer, Layout
from vendhw.framing.checksums import XOR8

STX = b"\xfa\xfb"
HEADER_LEN = 4
"""FA FB CMD LEN."""
MAX_FRAME = HEADER_LEN + 255 + 1
POLL_PERIOD = 0.2
"""Spec section 2: the VMC polls every 200 ms."""
ANSWER_WINDOW = 0.1
"""Spec section 2: the upper computer answers a POLL within 100 ms."""
MAX_RESENDS = 5
"""Spec section 2: either side resends a packet up to 5 times."""
INTER_BYTE_GAP = 0.02
"""Not in the spec: at 57600 baud a 260-byte packet takes 45 ms; bytes come back to back."""

class Command(IntEnum):
    """FA FB commands (spec section 4)."""

    CHECK_SELECTION = 0x01
    SELECTION_STATUS = 0x02
    SELECT_TO_BUY = 0x03
    DISPENSING_STATUS = 0x04
    SELECT_CANCEL = 0x05
    DRIVE_SELECTION = 0x06
    SELECTION_INFO = 0x11
    SET_PRICE = 0x12
    SET_INVENTORY = 0x13
    SET_CAPACITY = 0x14
    SET_PRODUCT_ID = 0x15
    SET_POLL_INTERVAL = 0x16
    FULL_LOADING = 0x17
    MONEY_COLLECTED = 0x21
    CURRENT_AMOUNT = 0x23
    POS_DISPLAY = 0x24
    GIVE_CHANGE = 0x25
    CHANGE_GIVEN = 0x26
    MONEY_RECEIVED = 0x27
    SET_ACCEPTANCE = 0x28
    INFO_SYNC = 0x31
    POLL = 0x41
    ACK = 0x42
    MACHINE_STATUS_REQUEST = 0x51
    MACHINE_STATUS = 0x52
    STATUS_REQUEST = 0x53
    STATUS = 0x54
    CARD_BALANCE_REQUEST = 0x61
    CARD_BALANCE = 0x62
    CALL_MENU = 0x63
    CARD_DEDUCTION = 0x64
    MICROWAVE_INFO = 0x66
    MENU = 0x70
    MENU_RESPONSE = 0x71


COMMANDS: dict[int, str] = {
    int(c): "SELECT/CANCEL" if c is Command.SELECT_CANCEL else c.name.replace("_", " ")
    for c in Command}
POLL, ACK = Command.POLL, Command.ACK
CODES: dict[str, int] = {name: code for code, name in COMMANDS.items()}

DEVICE_ONLY = frozenset({
    Command.POLL, Command.SELECTION_STATUS, Command.DISPENSING_STATUS, Command.SELECTION_INFO,
    Command.FULL_LOADING, Command.MONEY_COLLECTED, Command.CURRENT_AMOUNT, Command.POS_DISPLAY,
    Command.CHANGE_GIVEN, Command.MACHINE_STATUS, Command.STATUS, Command.CARD_BALANCE,
    Command.CALL_MENU, Command.MICROWAVE_INFO, Command.MENU_RESPONSE})
"""Commands only the VMC sends (used to guess a direction that was not given)."""

DISPENSE_STATUS: dict[int, str] = {
    0x01: "dispensing", 0x02: "dispensing successful", 0x03: "selection jammed",
    0x04: "motor doesn't stop normally", 0x06: "motor doesn't exist", 0x07: "elevator error",
    0x10: "elevator ascending", 0x11: "elevator descending",
    0x12: "elevator ascending error", 0x13: "elevator descending error",
    0x24: "take out the lunch box (successful purchase)", 0xFF: "purchase terminated",
}
"""Spec 4.3.3 (microwave and push-rod codes 0x14..0x32 are decoded by number only)."""
SELECTION_STATUS: dict[int, str] = {
    0x01: "normal", 0x02: "out of stock", 0x03: "selection doesn't exist",
    0x04: "selection paused", 0x05: "product inside elevator", 0x06: "delivery door unlocked",
    0x07: "elevator error", 0x08: "elevator self-checking faulty",
    0x17: "main motor fault", 0x18: "translation motor fault",
}
"""Spec 4.3.1."""
MACHINE_STATUS: dict[int, str] = {
    0x00: "normal", 0x01: "product in elevator", 0x02: "delivery door not closed",
    0x03: "elevator error", 0x04: "elevator self-checking error",
}
"""Spec 4.3.6."""

_STX = "stx" / cs.Const(STX)
_HEADER = Layout(cs.Struct(_STX, "cmd" / cs.Int8ub, "length" / cs.Int8ub,
                           "body" / cs.GreedyBytes), "FA FB packet")


def _whole(name: str, *text: cs.Construct) -> Layout:
    """A whole packet (without its XOR) of one command with a fixed-size text."""
    head = [_STX, "cmd" / cs.Int8ub, "length" / cs.Int8ub]
    if text:
        head.append("pack_no" / cs.Int8ub)
    return Layout(cs.Struct(*head, *text), name)


_STATUS_SEL = ("status" / cs.Int8ub, "selection" / cs.Int16ub)
_FIXED: dict[tuple[int, int], Layout] = {
    (POLL, 0): _whole("POLL"),
    (ACK, 0): _whole("ACK"),
    (Command.CHECK_SELECTION, 3): _whole("check selection", "selection" / cs.Int16ub),
    (Command.SELECT_TO_BUY, 3): _whole("select to buy", "selection" / cs.Int16ub),
    (Command.SELECT_CANCEL, 3): _whole("select/cancel", "selection" / cs.Int16ub),
    (Command.SELECTION_STATUS, 4): _whole("selection status", *_STATUS_SEL),
    (Command.DISPENSING_STATUS, 4): _whole("dispensing status", *_STATUS_SEL),
    (Command.DISPENSING_STATUS, 5): _whole("dispensing status", *_STATUS_SEL,
                                           "microwave" / cs.Int8ub),
    (Command.DRIVE_SELECTION, 5): _whole("drive selection", "drop_sensor" / cs.Int8ub,
                                         "elevator" / cs.Int8ub, "selection" / cs.Int16ub),
    (Command.STATUS, 2): _whole("status", "status" / cs.Int8ub),
    (Command.SET_POLL_INTERVAL, 2): _whole("set poll interval", "interval" / cs.Int8ub),
    (Command.CURRENT_AMOUNT, 5): _whole("current amount", "amount" / cs.Int32ub),
    (Command.MONEY_COLLECTED, 6): _whole("money collected", "mode" / cs.Int8ub,
                                         "amount" / cs.Int32ub),
    (Command.MONEY_RECEIVED, 6): _whole("money received", "mode" / cs.Int8ub,
                                        "amount" / cs.Int32ub),
}
"""Common packets, declared whole so one parse decodes them (keyed by CMD and LEN)."""
_SELECTION_ONLY = (Command.CHECK_SELECTION, Command.SELECT_TO_BUY, Command.SELECT_CANCEL)
"""Commands whose text is a selection number."""
_TEXT_FIELDS: dict[tuple[int, int], tuple[str, ...]] = {
    key: tuple(sub.name for sub in layout.plain.subcons[4:] if sub.name)
    for key, layout in _FIXED.items()
}
_STATUS_SEL_TEXT = Layout(cs.Struct(*_STATUS_SEL, "extra" / cs.GreedyBytes), "status + selection")
_DRIVE = Layout(cs.Struct("drop_sensor" / cs.Int8ub, "elevator" / cs.Int8ub,
                          "selection" / cs.Int16ub, "extra" / cs.GreedyBytes), "drive selection")
_SEL = Layout(cs.Struct("selection" / cs.Int16ub, "extra" / cs.GreedyBytes), "selection")
_MONEY = Layout(cs.Struct("mode" / cs.Int8ub, "amount" / cs.Int32ub, "extra" / cs.GreedyBytes),
                "money")
_FULL_STATUS = Layout(cs.Struct(
    "bill_status" / cs.Int8ub, "coin_status" / cs.Int8ub, "card_status" / cs.Int8ub,
    "temp_controller_status" / cs.Int8ub, "door_status" / cs.Int8ub,
    "bill_change" / cs.Int32ub, "coin_change" / cs.Int32ub, "machine_id" / cs.Bytes(10),
    "temperature" / cs.Bytes(8), "humidity" / cs.Bytes(8), "extra" / cs.GreedyBytes,
), "machine status")
FULL_STATUS_LEN = 5 + 4 + 4 + 10 + 8 + 8


def _xor(data: bytes) -> int:
    return XOR8.func(data)


# Dispatch by tables keyed by plain ints: the per-frame path must not read enum members
# (about 100 ns each on Python 3.11), or FA FB decoding leaves the 5 us budget.
_STATUS_TABLES: dict[int, dict[int, str]] = {
    int(Command.SELECTION_STATUS): SELECTION_STATUS,
    int(Command.DISPENSING_STATUS): DISPENSE_STATUS,
    int(Command.STATUS): MACHINE_STATUS,
}
"""The status table that names a packet's status byte."""
_DRIVE_CODE = int(Command.DRIVE_SELECTION)


def _text_status_selection(protocol: str, code: int, text: bytes, fields: dict[str, Any]) -> None:
    if len(text) < 3:
        return
    p = _STATUS_SEL_TEXT.parse(text, protocol)
    fields["status"] = p["status"]
    fields["status_text"] = _STATUS_TABLES[code].get(p["status"], f"code 0x{p['status']:02X}")
    fields["selection"] = p["selection"]
    if p["extra"]:
        fields["microwave"] = p["extra"][0]


def _text_drive(protocol: str, code: int, text: bytes, fields: dict[str, Any]) -> None:
    if len(text) < 4:
        return
    p = _DRIVE.parse(text, protocol)
    fields["drop_sensor"] = bool(p["drop_sensor"])
    fields["elevator"] = bool(p["elevator"])
    fields["selection"] = p["selection"]


def _text_selection(protocol: str, code: int, text: bytes, fields: dict[str, Any]) -> None:
    if len(text) >= 2:
        fields["selection"] = _SEL.parse(text, protocol)["selection"]


def _text_status(protocol: str, code: int, text: bytes, fields: dict[str, Any]) -> None:
    if text:
        fields["status"] = text[0]
        fields["status_text"] = MACHINE_STATUS.get(text[0], f"code 0x{text[0]:02X}")


def _text_interval(protocol: str, code: int, text: bytes, fields: dict[str, Any]) -> None:
    if text:
        fields["interval"] = text[0]


def _text_money(protocol: str, code: int, text: bytes, fields: dict[str, Any]) -> None:
    if len(text) >= 5:
        p = _MONEY.parse(text, protocol)
        fields["mode"] = p["mode"]
        fields["amount"] = p["amount"]


def _text_amount(protocol: str, code: int, text: bytes, fields: dict[str, Any]) -> None:
    if len(text) >= 4:
        fields["amount"] = int.from_bytes(text[:4], "big")


def _text_machine_status(protocol: str, code: int, text: bytes, fields: dict[str, Any]) -> None:
    if len(text) >= FULL_STATUS_LEN:
        p = _FULL_STATUS.parse(text, protocol)
        for key in ("bill_status", "coin_status", "card_status", "temp_controller_status",
                    "door_status", "bill_change", "coin_change", "machine_id",
                    "temperature", "humidity"):
            fields[key] = p[key]


_TEXT_DECODERS: dict[int, Callable[[str, int, bytes, dict[str, Any]], None]] = {
    int(Command.SELECTION_STATUS): _text_status_selection,
    int(Command.DISPENSING_STATUS): _text_status_selection,
    int(Command.DRIVE_SELECTION): _text_drive,
    **{int(c): _text_selection for c in _SELECTION_ONLY},
    int(Command.STATUS): _text_status,
    int(Command.SET_POLL_INTERVAL): _text_interval,
    int(Command.MONEY_COLLECTED): _text_money,
    int(Command.MONEY_RECEIVED): _text_money,
    int(Command.CURRENT_AMOUNT): _text_amount,
    int(Command.MACHINE_STATUS): _text_machine_status,
}
"""How the text of a packet in an uncommon shape is read, by CMD."""


class FaFbFramer(Framer):
    """FA FB packets in both directions (the command byte says who sent most of them)."""

    name = "fafb"
    description = "FA FB VMC protocol (XY/JSK motor boards, 57600 8N1, the board polls)"
    start_byte = 0xFA

    def build(self, *, direction: Direction | None = None, **fields: Any) -> bytes:
        """Fields: ``code`` (or ``command`` name), ``pack_no`` (omit for POLL/ACK), and
        ``text`` bytes, or the named fields of the command (``selection``, ``status``,
        ``drop_sensor``, ``elevator``, ``interval``, ``mode``, ``amount``)."""
        code = self._code(fields)
        text = fields.get("text")
        if text is None:
            text = self._encode_text(code, fields)
        text = bytes(text)
        pack_no = fields.get("pack_no")
        if pack_no is None:
            if code not in (POLL, ACK) and text:
                raise FramingError("a packet with text needs pack_no", protocol=self.name)
            body = text
        else:
            if not 0 <= int(pack_no) <= 0xFF:
                raise FramingError(f"pack_no {pack_no} out of 0..255", protocol=self.name)
            body = bytes((int(pack_no),)) + text
        if len(body) > 255:
            raise LengthError(f"PackNO + text is {len(body)} bytes, at most 255",
                              protocol=self.name)
        head = _HEADER.build({"cmd": code, "length": len(body), "body": body}, self.name)
        return head + bytes((_xor(head),))

    def _code(self, fields: dict[str, Any]) -> int:
        if "code" in fields:
            code = int(fields["code"])
        elif "command" in fields:
            name = str(fields["command"]).upper()
            if name not in CODES:
                raise FramingError(f"unknown command {fields['command']!r}", protocol=self.name)
            code = CODES[name]
        else:
            raise FramingError("build needs code= or command=", protocol=self.name)
        if not 0 <= code <= 0xFF:
            raise FramingError(f"command code {code} out of 0..255", protocol=self.name)
        return code

    def _encode_text(self, code: int, fields: dict[str, Any]) -> bytes:
        sel = int(fields.get("selection", 0))
        if code in (Command.SELECTION_STATUS, Command.DISPENSING_STATUS):
            return _STATUS_SEL_TEXT.build({"status": int(fields.get("status", 0)), "selection": sel,
                                      "extra": bytes(fields.get("extra", b""))}, self.name)
        if code == Command.DRIVE_SELECTION:
            return _DRIVE.build({"drop_sensor": int(fields.get("drop_sensor", 1)),
                                 "elevator": int(fields.get("elevator", 0)), "selection": sel,
                                 "extra": b""}, self.name)
        if code in _SELECTION_ONLY:
            return _SEL.build({"selection": sel, "extra": b""}, self.name)
        if code == Command.SET_POLL_INTERVAL:
            return bytes((int(fields.get("interval", 2)),))
        if code == Command.STATUS:
            return bytes((int(fields.get("status", 0)),))
        if code in (Command.MONEY_COLLECTED, Command.CURRENT_AMOUNT, Command.MONEY_RECEIVED):
            amount = int(fields.get("amount", 0)).to_bytes(4, "big")
            if code == Command.CURRENT_AMOUNT:
                return amount
            return bytes((int(fields.get("mode", 0)),)) + amount
        return b""

    def parse(self, data: bytes, direction: Direction | None = None) -> Frame:
        raw = bytes(data)
        n = len(raw)
        if n < HEADER_LEN + 1:
            raise LengthError(f"an FA FB packet has at least 5 bytes, got {n}",
                              protocol=self.name, data=raw)
        if raw[:2] != STX:
            raise StartByteError(f"packet must start with FA FB, got {raw[:2].hex(' ').upper()}",
                                 protocol=self.name, data=raw)
        if raw[3] + HEADER_LEN + 1 != n:
            raise LengthError(f"LEN says {raw[3]} bytes of PackNO + text, packet holds "
                              f"{n - HEADER_LEN - 1}", protocol=self.name, data=raw)
        body = raw[:-1]
        expected = _xor(body)
        if expected != raw[-1]:
            raise ChecksumError(protocol=self.name, algorithm=XOR8.name, expected=expected,
                                received=raw[-1], width=1, data=raw)
        code = raw[2]
        fields: dict[str, Any] = {"command": COMMANDS.get(code, f"CMD 0x{code:02X}"),
                                  "code": code}
        shape = (code, raw[3])
        layout = _FIXED.get(shape)
        if layout is not None:
            parsed = layout.parse(body, self.name)
            fields["pack_no"] = parsed.get("pack_no")
            fields["text"] = body[5:]
            for key in _TEXT_FIELDS[shape]:
                fields[key] = parsed[key]
            self._names(code, fields)
        else:
            text = _HEADER.parse(body, self.name)["body"]
            fields["pack_no"] = text[0] if text else None
            fields["text"] = text[1:]
            self._decode_text(code, text[1:], fields)
        if direction is None:
            direction = "device" if code in DEVICE_ONLY else (None if code == ACK else "host")
        return Frame(self.name, raw, fields, direction)

    @staticmethod
    def _names(code: int, fields: dict[str, Any]) -> None:
        """Human text for status codes, booleans for flags."""
        table = _STATUS_TABLES.get(code)
        if table is not None:
            status = fields["status"]
            fields["status_text"] = table.get(status, f"code 0x{status:02X}")
        elif code == _DRIVE_CODE:
            fields["drop_sensor"] = bool(fields["drop_sensor"])
            fields["elevator"] = bool(fields["elevator"])

    def _decode_text(self, code: int, text: bytes, fields: dict[str, Any]) -> None:
        """Fields of a packet whose length is not one of the common shapes (``_FIXED``)."""
        decoder = _TEXT_DECODERS.get(code)
        if decoder is not None:
            decoder(self.name, code, text, fields)

    def compiled_scan(self, direction: Direction | None) -> dict[str, Any] | None:
        return {"proto": "FAFB"}

    def measure(self, buf: bytes | bytearray, start: int, direction: Direction | None) -> int:
        n = len(buf) - start
        if n < 1:
            return 0
        if buf[start] != 0xFA or (n >= 2 and buf[start + 1] != 0xFB):
            return -1
        if n < HEADER_LEN:
            return 0
        return buf[start + 3] + HEADER_LEN + 1


__all__ = ["ACK", "COMMANDS", "DISPENSE_STATUS", "MACHINE_STATUS", "POLL", "SELECTION_STATUS",
           "FaFbFramer"]
