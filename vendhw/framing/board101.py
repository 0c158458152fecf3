"""The "101" motor board's fixed 20-byte frame (Acccord/SPOpenApi, light-curtain boards).

``ADDR | CMD | DATA (16, zero padded) | CRC lo | CRC hi``: CRC-16/MODBUS over the first 18
bytes, low byte first. The host (address 1) is master; replies carry address 0 and echo the
command. No start byte and no length byte: every frame is 20 bytes and the CRC decides.
Sources: ``protocols/board101/README.md``.
"""

from __future__ import annotations

from typing import Any

import construct as cs

from vendhw.errors import ChecksumError, FramingError, LengthError
from vendhw.framing.base import Direction, Frame, Framer, Layout
from vendhw.framing.checksums import CRC16_MODBUS

FRAME_LEN = 20
DATA_LEN = 16
REPLY_ADDRESS = 0
"""Replies start with 0x00 (Data101ReviImpl matches "0001", "0003"...)."""
HOST_ADDRESS = 1
"""Data101SendImpl always sends to board address 1."""
INTER_BYTE_GAP = 0.02
"""Not in the sources: 20 bytes at 9600 baud take 21 ms and come back to back."""

READ_VERSION, READ_RESULT, START_MOTOR = 0x01, 0x03, 0x05
OPEN_LOCK, CURTAIN_ON, CURTAIN_READ, CURTAIN_OFF = 0x08, 0x1A, 0x1B, 0x1C

COMMANDS: dict[int, str] = {
    READ_VERSION: "READ VERSION", READ_RESULT: "READ RESULT", START_MOTOR: "START MOTOR",
    OPEN_LOCK: "OPEN LOCK", CURTAIN_ON: "CURTAIN ON", CURTAIN_READ: "CURTAIN READ",
    CURTAIN_OFF: "CURTAIN OFF",
}
"""Host commands (S101Command.java also defines 04, 07, 09 and FF, undocumented)."""
REPLIES: dict[int, str] = {
    READ_VERSION: "VERSION", READ_RESULT: "VEND RESULT", START_MOTOR: "MOTOR START",
    OPEN_LOCK: "LOCK", CURTAIN_ON: "CURTAIN ON", CURTAIN_READ: "CURTAIN STATE",
    CURTAIN_OFF: "CURTAIN OFF",
}
CODES: dict[str, int] = {name: code for code, name in COMMANDS.items()}

RESULTS: dict[int, str] = {
    0: "success", 1: "over-current (overload or jam)", 2: "under-current (wire or no motor)",
    3: "timeout (no motor home signal within 7 s)", 4: "light-curtain self test failed",
    5: "door not opened", 6: "vend failed (427)", 9: "in progress (427)",
}
"""Channel.md springResult codes (byte 4 of the 0x03 reply)."""
START_RESULTS: dict[int, str] = {0: "started", 1: "invalid motor index",
                                 2: "another motor running"}
"""Channel.md openResult codes (byte 2 of the 0x05 reply)."""
CURTAIN: dict[int, str] = {0: "blocked", 1: "clear"}

_FRAME = Layout(cs.Struct("address" / cs.Int8ub, "cmd" / cs.Int8ub,
                          "data" / cs.Bytes(DATA_LEN), "crc" / cs.Int16ul), "101 frame")
_RESULT = Layout(cs.Struct("address" / cs.Int8ub, "cmd" / cs.Int8ub, "z1" / cs.Int8ub,
                           "z2" / cs.Int8ub, "result" / cs.Int8ub, "z5_10" / cs.Bytes(6),
                           "drop_time_ms" / cs.Int8ub, "z12_17" / cs.Bytes(6),
                           "crc" / cs.Int16ul), "vend result")
"""The whole 0x03 reply (Data101ReviImpl: result at byte 4, curtain time at byte 11)."""
_START = Layout(cs.Struct("motor_index" / cs.Int8ub, "motor_type" / cs.Int8ub,
                          "light_type" / cs.Int8ub, "rest" / cs.Bytes(13)), "start motor")


def _raw_crc() -> tuple[Any, int, Any]:
    """crcmod's own worker (its C extension when built) with CRC-16/MODBUS's start value and
    table, called directly: the Python wrapper ``mkCrcFun`` returns costs as much again."""
    func = CRC16_MODBUS.func
    defaults = getattr(func, "__defaults__", None)
    if defaults and len(defaults) == 3 and defaults[0] == 0xFFFF and callable(defaults[2]):
        init, table, worker = defaults
        if worker(b"123456789", init, table) == CRC16_MODBUS.func(b"123456789"):
            return worker, init, table
    return (lambda data, _init, _table: func(data)), 0xFFFF, None


class Board101Framer(Framer):
    """20-byte frames with CRC-16/MODBUS, both directions (address 0 = a reply)."""

    name = "board101"
    description = '"101" motor board (20-byte frame, CRC-16/MODBUS, light curtain)'

    def hunt_bytes(self, direction: Direction | None) -> bytes | None:
        return bytes((REPLY_ADDRESS,)) if direction == "device" else None

    def build(self, *, direction: Direction | None = None, **fields: Any) -> bytes:
        """Fields: ``code`` (or ``command``), ``address`` (1 for the host, 0 for a reply),
        and ``data`` (<= 16 bytes) or named fields: ``motor_index``, ``motor_type``,
        ``light_type`` (start motor); ``result``, ``drop_time_ms`` (vend result);
        ``start_result``; ``curtain``; ``version`` (text)."""
        if "code" in fields:
            code = int(fields["code"])
        elif "command" in fields:
            name = str(fields["command"]).upper()
            reverse = {v: k for k, v in REPLIES.items()}
            code = CODES.get(name, reverse.get(name, -1))
            if code < 0:
                raise FramingError(f"unknown command {fields['command']!r}", protocol=self.name)
        else:
            raise FramingError("build needs code= or command=", protocol=self.name)
        device = direction == "device"
        address = int(fields.get("address", REPLY_ADDRESS if device else HOST_ADDRESS))
        data = fields.get("data")
        if data is None:
            data = self._encode(code, device, fields)
        data = bytes(data)
        if len(data) > DATA_LEN:
            raise LengthError(f"at most {DATA_LEN} data bytes, got {len(data)}",
                              protocol=self.name)
        data = data.ljust(DATA_LEN, b"\x00")
        if not (0 <= address <= 0xFF and 0 <= code <= 0xFF):
            raise FramingError("address and code must be bytes", protocol=self.name)
        head = bytes((address, code)) + data
        return _FRAME.build({"address": address, "cmd": code, "data": data,
                             "crc": CRC16_MODBUS.func(head)}, self.name)

    @staticmethod
    def _encode(code: int, device: bool, fields: dict[str, Any]) -> bytes:
        if not device and code == START_MOTOR:
            return bytes((int(fields.get("motor_index", 0)), int(fields.get("motor_type", 3)),
                          int(fields.get("light_type", 1))))
        if device and code == READ_RESULT:
            out = bytearray(DATA_LEN)
            out[0] = int(fields.get("z1", 0))
            out[1] = int(fields.get("z2", 0))
            out[2] = int(fields.get("result", 0))
            out[9] = int(fields.get("drop_time_ms", 0))
            return bytes(out)
        if device and code == START_MOTOR:
            return bytes((int(fields.get("start_result", 0)),))
        if device and code == CURTAIN_READ:
            return bytes((int(fields.get("curtain", 1)),))
        if device and code == READ_VERSION:
            return str(fields.get("version", "")).encode("ascii")[:12]
        return b""

    def parse(self, data: bytes, direction: Direction | None = None) -> Frame:
        raw = bytes(data)
        if len(raw) != FRAME_LEN:
            raise LengthError(f"a 101 frame is {FRAME_LEN} bytes, got {len(raw)}",
                              protocol=self.name, data=raw)
        received = raw[18] | raw[19] << 8
        expected = CRC16_MODBUS.func(raw[:18])
        if expected != received:
            raise ChecksumError(protocol=self.name, algorithm=CRC16_MODBUS.name,
                                expected=expected, received=received, width=2, data=raw)
        address = raw[0]
        code = raw[1]
        if direction is None:
            direction = "device" if address == REPLY_ADDRESS else "host"
        result = direction == "device" and code == READ_RESULT
        p = (_RESULT if result else _FRAME).parse(raw, self.name)
        payload = raw[2:18] if result else p["data"]
        names = REPLIES if direction == "device" else COMMANDS
        fields: dict[str, Any] = {"command": names.get(code, f"CMD 0x{code:02X}"),
                                  "code": code, "address": address, "data": payload}
        if result:
            fields["result"] = p["result"]
            fields["result_text"] = RESULTS.get(p["result"], f"code {p['result']}")
            fields["drop_time_ms"] = p["drop_time_ms"]
            fields["z1"] = p["z1"]
            fields["z2"] = p["z2"]
        elif direction == "device":
            self._decode_reply(code, payload, fields)
        elif code == START_MOTOR:
            p = _START.parse(payload, self.name)
            fields["motor_index"] = p["motor_index"]
            fields["motor_type"] = p["motor_type"]
            fields["light_type"] = p["light_type"]
        fields["crc"] = received
        return Frame(self.name, raw, fields, direction)

    def _decode_reply(self, code: int, payload: bytes, fields: dict[str, Any]) -> None:
        if code == START_MOTOR:
            fields["start_result"] = payload[0]
            fields["start_text"] = START_RESULTS.get(payload[0], f"code {payload[0]}")
        elif code == CURTAIN_READ:
            fields["curtain"] = CURTAIN.get(payload[0], f"code {payload[0]}")
        elif code == READ_VERSION:
            fields["version"] = payload[:12].rstrip(b"\x00").decode("ascii", "replace")

    def reject(self, buf: bytes | bytearray, start: int, length: int) -> int:
        """1 when the CRC fails (what :meth:`parse` checks first for a 20-byte candidate)."""
        if length != FRAME_LEN:
            return 0
        received = buf[start + 18] | buf[start + 19] << 8
        return 0 if CRC16_MODBUS.func(bytes(buf[start:start + 18])) == received else 1

    def skip(self, buf: bytes, start: int, direction: Direction | None) -> tuple[int, int]:
        """:meth:`measure` and :meth:`reject` at each offset, in one loop (no start byte)."""
        crc, init, table = _RAW_CRC
        device = direction == "device"
        errors = 0
        j = start
        last = len(buf) - FRAME_LEN
        while j <= last:
            if device and buf[j] != REPLY_ADDRESS:
                j += 1
                continue
            # CRC-16/MODBUS (reflected, no final XOR) over a frame and its own little-endian
            # CRC leaves 0: the same verdict as comparing, with one call and no indexing.
            if not crc(buf[j:j + FRAME_LEN], init, table):
                return j, errors
            errors += 1
            j += 1
        return j, errors

    def compiled_scan(self, direction: Direction | None) -> dict[str, Any] | None:
        return {"proto": "BOARD101"}

    def measure(self, buf: bytes | bytearray, start: int, direction: Direction | None) -> int:
        if direction == "device" and start < len(buf) and buf[start] != REPLY_ADDRESS:
            return -1
        return FRAME_LEN


_RAW_CRC = _raw_crc()

__all__ = ["COMMANDS", "REPLIES", "RESULTS", "START_RESULTS", "Board101Framer"]
