"""Easivend (Fujian Junpeng) column-board frames: 8 bytes, XOR of the first seven.

Request ``ED | LEN | SN | MT | COLUMN | D1 | D2 | XOR`` (MT 0x70 dispense, 0x72 check);
reply ``EE | STATUS | SN | MT | COLUMN | 00 | 00 | XOR``. A request whose SN repeats the
last one is answered as a status check, never a second vend (``CP_recv``). Sources:
``protocols/easivend/README.md``.
"""

from __future__ import annotations

from typing import Any

import construct as cs

from vendhw.errors import FramingError, LengthError, StartByteError
from vendhw.framing.base import Direction, Frame, Framer, Layout
from vendhw.framing.checksums import XOR8

FRAME_LEN = 8
REQUEST_HEAD, REPLY_HEAD = 0xED, 0xEE
DISPENSE, CHECK = 0x70, 0x72
MAX_COLUMN = 80
"""API_channelProtocol.h: CP_MAX_COLUMN, columns 1..80."""
FRAME_WAIT = 0.2
"""CP_recv: the board waits 200 ms for the eight bytes of a request."""
INTER_BYTE_GAP = 0.02
"""Not in the sources: 8 bytes take 8 ms at 9600 baud."""

MESSAGE_TYPES: dict[int, str] = {DISPENSE: "DISPENSE", CHECK: "CHECK"}
CODES: dict[str, int] = {name: code for code, name in MESSAGE_TYPES.items()}

STATUS_BITS: dict[int, str] = {
    0x01: "VEND FAILED", 0x02: "BUSY", 0x04: "MOTOR NOT HOME", 0x08: "MOTOR DID NOT TURN",
    0x10: "MOTOR NOT RETURNED", 0x20: "NOT DROPPED", 0x80: "DROP DETECTOR FAULT",
}
"""API_channelProtocol.h: CP_FAIL .. CP_HOLE_ERR (bit 0x40 is not defined)."""

_REQUEST = Layout(cs.Struct("head" / cs.Const(bytes((REQUEST_HEAD,))), "length" / cs.Int8ub,
                            "sn" / cs.Int8ub, "mt" / cs.Int8ub, "column" / cs.Int8ub,
                            "d1" / cs.Int8ub, "d2" / cs.Int8ub, "xor" / cs.Int8ub),
                  "Easivend request")
_REPLY = Layout(cs.Struct("head" / cs.Const(bytes((REPLY_HEAD,))), "status" / cs.Int8ub,
                          "sn" / cs.Int8ub, "mt" / cs.Int8ub, "column" / cs.Int8ub,
                          "d1" / cs.Int8ub, "d2" / cs.Int8ub, "xor" / cs.Int8ub),
                "Easivend reply")


def _flags(status: int) -> tuple[str, ...]:
    return tuple(name for bit, name in STATUS_BITS.items() if status & bit) + (
        ("BIT 0x40",) if status & 0x40 else ())


_FLAGS: tuple[tuple[str, ...], ...] = tuple(_flags(s) for s in range(256))
_NAMES: tuple[str, ...] = tuple("/".join(f) or "SUCCESS" for f in _FLAGS)


def status_flags(status: int) -> list[str]:
    """Names of the bits set in a reply STATUS (empty list = success)."""
    return list(_FLAGS[status & 0xFF])


def status_name(status: int) -> str:
    """``"SUCCESS"`` or the set bits joined with ``/``."""
    return _NAMES[status & 0xFF]


class EasivendFramer(Framer):
    """ED requests and EE replies (the head byte gives the direction)."""

    name = "easivend"
    description = "Easivend column board (8-byte ED/EE frames, XOR, SN idempotency)"

    def hunt_bytes(self, direction: Direction | None) -> bytes | None:
        if direction == "host":
            return bytes((REQUEST_HEAD,))
        if direction == "device":
            return bytes((REPLY_HEAD,))
        return bytes((REQUEST_HEAD, REPLY_HEAD))

    def build(self, *, direction: Direction | None = None, **fields: Any) -> bytes:
        """Host fields: ``sn``, ``mt`` (or ``command`` DISPENSE/CHECK), ``column``, ``d1``,
        ``d2``, ``length`` (default 8). Device fields: ``status``, ``sn``, ``mt``, ``column``."""
        if "mt" in fields:
            mt = int(fields["mt"])
        elif "command" in fields and str(fields["command"]).upper() in CODES:
            mt = CODES[str(fields["command"]).upper()]
        elif "code" in fields and direction != "device":
            mt = int(fields["code"])
        else:
            mt = DISPENSE
        values = {"sn": int(fields.get("sn", 0)), "mt": mt,
                  "column": int(fields.get("column", 0)), "d1": int(fields.get("d1", 0)),
                  "d2": int(fields.get("d2", 0)), "xor": 0}
        if direction == "device":
            layout = _REPLY
            values["status"] = int(fields.get("status", 0))
        else:
            layout = _REQUEST
            values["length"] = int(fields.get("length", FRAME_LEN))
        if any(not 0 <= v <= 0xFF for v in values.values()):
            raise FramingError(f"every field must be a byte: {values}", protocol=self.name)
        body = layout.build(values, self.name)[:-1]
        return body + bytes((XOR8.func(body),))

    def parse(self, data: bytes, direction: Direction | None = None) -> Frame:
        raw = bytes(data)
        if len(raw) != FRAME_LEN:
            raise LengthError(f"an Easivend frame is {FRAME_LEN} bytes, got {len(raw)}",
                              protocol=self.name, data=raw)
        head = raw[0]
        if head not in (REQUEST_HEAD, REPLY_HEAD) or (
                direction == "host" and head != REQUEST_HEAD) or (
                direction == "device" and head != REPLY_HEAD):
            want = {"host": "ED", "device": "EE"}.get(direction or "", "ED or EE")
            raise StartByteError(f"frame must start with {want}, got {head:02X}",
                                 protocol=self.name, data=raw)
        self.check(protocol=self.name, algorithm=XOR8.name, expected=XOR8.func(raw[:7]),
                   received=raw[7], width=1, data=raw)
        fields: dict[str, Any]
        if head == REQUEST_HEAD:
            p = _REQUEST.parse(raw, self.name)
            mt = p["mt"]
            fields = {"command": MESSAGE_TYPES.get(mt, f"MT 0x{mt:02X}"), "code": mt,
                      "length": p["length"], "sn": p["sn"], "mt": mt, "column": p["column"],
                      "d1": p["d1"], "d2": p["d2"]}
            return Frame(self.name, raw, fields, "host")
        p = _REPLY.parse(raw, self.name)
        status = p["status"]
        fields = {"command": _NAMES[status], "code": status, "status": status,
                  "flags": list(_FLAGS[status]), "sn": p["sn"], "mt": p["mt"],
                  "request": MESSAGE_TYPES.get(p["mt"], f"MT 0x{p['mt']:02X}"),
                  "column": p["column"]}
        return Frame(self.name, raw, fields, "device")

    def compiled_scan(self, direction: Direction | None) -> dict[str, Any] | None:
        return {"proto": "EASIVEND"}

    def measure(self, buf: bytes | bytearray, start: int, direction: Direction | None) -> int:
        if start >= len(buf):
            return 0
        starts = self.hunt_bytes(direction) or b""
        return FRAME_LEN if buf[start] in starts else -1


__all__ = ["CHECK", "DISPENSE", "MESSAGE_TYPES", "STATUS_BITS", "EasivendFramer",
           "status_flags", "status_name"]
