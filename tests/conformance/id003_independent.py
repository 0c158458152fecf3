"""ID-003 frames for the conformance tests, built without vendhw.framing.

CRC-16/KERMIT written bit by bit from its definition (CCITT polynomial 0x1021 reflected =
0x8408, initial value 0, low byte sent first), the algorithm lamassu-machine
``lib/id003/crc.js`` and py-id003 ``get_crc`` implement with tables.
"""

from __future__ import annotations

SYNC = 0xFC


def crc_kermit(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc


def frame(code: int, data: bytes = b"") -> bytes:
    """``SYNC LNG CMD DATA CRCL CRCH`` (LNG counts every byte, py-id003 ``send_command``)."""
    body = bytes((SYNC, 5 + len(data), code)) + data
    crc = crc_kermit(body)
    return body + bytes((crc & 0xFF, crc >> 8))


def frame_ok(raw: bytes) -> bool:
    if len(raw) < 5 or raw[0] != SYNC or raw[1] != len(raw):
        return False
    crc = crc_kermit(raw[:-2])
    return raw[-2] == crc & 0xFF and raw[-1] == crc >> 8
