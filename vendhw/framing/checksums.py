"""The checksum catalogue: every integrity check vendhw's protocols use, in one place.

CRCs come from ``crcmod`` (its C extension when built), parameterised as the research notes
and specifications give them; the 8-bit sums are one-liners over ``bytes``. Each entry carries
the standard "123456789" check value where one exists, so a test can prove the parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import reduce
from operator import xor

import crcmod


@dataclass(frozen=True)
class Checksum:
    """A named integrity check: ``func(data) -> int`` of ``width`` bytes."""

    name: str
    width: int
    func: Callable[[bytes], int]
    check: int | None = None  # value over b"123456789", for CRCs

    def __call__(self, data: bytes) -> int:
        return self.func(data)


def _sum8(data: bytes) -> int:
    return sum(data) & 0xFF


def _zero_sum8(data: bytes) -> int:
    # ccTalk simple checksum: the byte that makes the whole packet sum to 0 mod 256.
    # Always reduced mod 256 (a peer library returns 256 when the sum is already 0).
    return -sum(data) & 0xFF


def _xor8(data: bytes) -> int:
    return reduce(xor, data, 0)


# SSP / eSSP (ITL GA138 §"Packet format"): poly 0x8005, seed 0xFFFF, not reflected.
CRC16_SSP = Checksum(
    "CRC-16/SSP (poly 0x8005, init 0xFFFF)", 2,
    crcmod.mkCrcFun(0x18005, initCrc=0xFFFF, rev=False, xorOut=0), 0xAEE7,
)
# ccTalk CRC-16 variant (Generic Spec v4.7 Part 3 App. 9) and the Easivend lift board.
CRC16_XMODEM = Checksum(
    "CRC-16/XMODEM", 2, crcmod.mkCrcFun(0x11021, initCrc=0, rev=False, xorOut=0), 0x31C3,
)
# JCM ID-003: CCITT polynomial, reflected, init 0 ("KERMIT"), LSB first on the wire.
CRC16_KERMIT = Checksum(
    "CRC-16/KERMIT", 2, crcmod.mkCrcFun(0x11021, initCrc=0, rev=True, xorOut=0), 0x2189,
)
# "101" motor boards.
CRC16_MODBUS = Checksum(
    "CRC-16/MODBUS", 2, crcmod.mkCrcFun(0x18005, initCrc=0xFFFF, rev=True, xorOut=0), 0x4B37,
)
# DEX/UCS and EVA-DTS G85.
CRC16_ARC = Checksum(
    "CRC-16/ARC", 2, crcmod.mkCrcFun(0x18005, initCrc=0, rev=True, xorOut=0), 0xBB3D,
)
SUM8 = Checksum("8-bit additive sum (mod 256)", 1, _sum8)
ZERO_SUM8 = Checksum("8-bit zero-sum (two's complement)", 1, _zero_sum8)
XOR8 = Checksum("8-bit XOR", 1, _xor8)

CATALOGUE: dict[str, Checksum] = {
    "crc16-ssp": CRC16_SSP,
    "crc16-xmodem": CRC16_XMODEM,
    "crc16-kermit": CRC16_KERMIT,
    "crc16-modbus": CRC16_MODBUS,
    "crc16-arc": CRC16_ARC,
    "sum8": SUM8,
    "zero-sum8": ZERO_SUM8,
    "xor8": XOR8,
}

__all__ = [
    "CATALOGUE",
    "CRC16_ARC",
    "CRC16_KERMIT",
    "CRC16_MODBUS",
    "CRC16_SSP",
    "CRC16_XMODEM",
    "SUM8",
    "XOR8",
    "ZERO_SUM8",
    "Checksum",
]
