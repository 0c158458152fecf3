"""Checksums for ccTalk written for the conformance tests, independent of vendhw.framing.

Each follows the specification's description directly (Part 1 v4.7: the simple checksum
makes the packet sum to zero modulo 256; CRC-16/CCITT, polynomial 0x1021, initial value 0,
over destination, length, header and data, low byte in the source slot, high byte last),
bit by bit, so a shared table or helper cannot hide a shared mistake.
"""

from __future__ import annotations


def simple_checksum_ok(packet: bytes) -> bool:
    """Part 1: the 8-bit sum of every byte, checksum included, is 0."""
    return sum(packet) % 256 == 0


def crc16_ccitt(data: bytes) -> int:
    """CRC-16, polynomial x^16 + x^12 + x^5 + 1, initial 0, no reflection, no final xor."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = (crc << 1) ^ 0x1021 if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def crc_packet_ok(packet: bytes) -> bool:
    """CRC-16 ccTalk packet: the CRC covers every byte but slot 2 (its low byte) and the
    last byte (its high byte)."""
    covered = packet[:2] + packet[3:-1]
    crc = crc16_ccitt(covered)
    return packet[2] == crc & 0xFF and packet[-1] == crc >> 8


def with_simple_checksum(body: bytes) -> bytes:
    return body + bytes(((-sum(body)) % 256,))


def with_crc(dest: int, header: int, data: bytes = b"") -> bytes:
    crc = crc16_ccitt(bytes((dest, len(data), header)) + data)
    return bytes((dest, len(data), crc & 0xFF, header)) + data + bytes((crc >> 8,))
