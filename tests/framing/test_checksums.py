"""The checksum catalogue reproduces the standard check values and the specs' worked examples."""

import pytest

from vendhw.framing.checksums import CATALOGUE, CRC16_XMODEM, SUM8, XOR8, ZERO_SUM8


@pytest.mark.parametrize("name", [n for n, c in CATALOGUE.items() if c.check is not None])
def test_crc_check_values(name: str) -> None:
    checksum = CATALOGUE[name]
    assert checksum(b"123456789") == checksum.check


@pytest.mark.parametrize(
    ("data", "crc"),
    [  # ccTalk Generic Spec v4.7 Part 3, Appendix 9 CRC test data
        ("49 D5 F2", 0xA6B3), ("2F BD 9D", 0x90B2), ("D9 53 D1", 0x7BB5),
        ("70 B8 D9 64 04 15", 0xFB00), ("72 61 B9 4E D0 78", 0x93E3),
        ("63 FA D1 9F E6 19", 0x5BB3),
    ],
)
def test_cctalk_appendix9_crc(data: str, crc: int) -> None:
    assert CRC16_XMODEM(bytes.fromhex(data)) == crc


def test_mdb_worked_example() -> None:
    # Bouni's MDB write-up: 11 01 00 C8 00 64 sums to 0x13E, so CHK = 0x3E.
    assert SUM8(bytes.fromhex("11 01 00 C8 00 64")) == 0x3E


def test_zero_sum_is_reduced_mod_256() -> None:
    # A peer library returns 256 here; the packet must sum to 0 mod 256 with a byte 0.
    assert ZERO_SUM8(bytes([0x80, 0x80])) == 0
    assert (sum(b"\x02\x00\x01\xe5") + ZERO_SUM8(b"\x02\x00\x01\xe5")) % 256 == 0


def test_xor8() -> None:
    assert XOR8(bytes.fromhex("FA FB 41 00")) == 0x40  # FA FB POLL frame's check byte
