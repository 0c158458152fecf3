"""Motor-board checksums for the conformance tests, independent of vendhw.framing.

CRC-16/MODBUS bit by bit (reflected polynomial 0xA001, initial 0xFFFF, low byte first), the
algorithm of Acccord/SPOpenApi ``CRC16Util.getCRC``; the 8-bit XOR of FA FB frames (mohamed-29
/try-5 ``vmc_protocol.build_frame``: every byte before the check) and Easivend frames
(github188/STC_bento ``Driver/board.c`` ``xorCheck`` over the first seven bytes).
"""

from __future__ import annotations


def crc16_modbus(data: bytes) -> int:
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def board101_ok(frame: bytes) -> bool:
    crc = crc16_modbus(frame[:18])
    return len(frame) == 20 and frame[18] == crc & 0xFF and frame[19] == crc >> 8


def xor_all(data: bytes) -> int:
    out = 0
    for byte in data:
        out ^= byte
    return out


def fafb_ok(frame: bytes) -> bool:
    return (len(frame) >= 5 and frame[:2] == b"\xfa\xfb" and frame[3] == len(frame) - 5
            and xor_all(frame[:-1]) == frame[-1])


def easivend_ok(frame: bytes) -> bool:
    return len(frame) == 8 and frame[0] in (0xED, 0xEE) and xor_all(frame[:7]) == frame[7]


def fafb(cmd: int, payload: bytes) -> bytes:
    body = bytes((0xFA, 0xFB, cmd, len(payload))) + payload
    return body + bytes((xor_all(body),))


def easivend(head: int, b1: int, sn: int, mt: int, column: int) -> bytes:
    body = bytes((head, b1, sn, mt, column, 0, 0))
    return body + bytes((xor_all(body),))
