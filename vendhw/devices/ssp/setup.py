"""SETUP REQUEST replies and money parameters (GA138)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vendhw.devices.ssp.tables import UNIT_TYPES
from vendhw.errors import UnexpectedReplyError

# --- setup request (all formats of GA138) ------------------------------------------------------


@dataclass
class Channel:
    number: int
    value: int
    """Minor units (cents)."""
    currency: str


@dataclass
class SetupInfo:
    """What SETUP REQUEST says about the device and its dataset."""

    unit_type: int
    firmware: str
    currency: str
    protocol_version: int
    channels: list[Channel] = field(default_factory=list)

    @property
    def unit(self) -> str:
        return UNIT_TYPES.get(self.unit_type, f"unit type 0x{self.unit_type:02X}")

    def to_dict(self) -> dict[str, Any]:
        return {"unit_type": self.unit_type, "unit": self.unit, "firmware": self.firmware,
                "currency": self.currency, "protocol_version": self.protocol_version,
                "channels": {str(c.number): {"value": c.value, "currency": c.currency}
                             for c in self.channels}}


def _ascii(data: bytes) -> str:
    return data.decode("ascii", "replace").strip("\0 ")


def parse_setup(data: bytes) -> SetupInfo:
    """Parse the data of a SETUP REQUEST reply (after OK) in any GA138 format.

    Validators, SMART Payout and NV11 (unit types 0, 6, 7): unit, firmware (4 ASCII), country
    (3), value multiplier (3, BE), n, n channel values, n security bytes, real value
    multiplier (3, BE), protocol version; from protocol 6 also n currencies (3 each) and n
    4-byte LE values. A channel is worth value x real value multiplier cents (before 6 the
    short value times both multipliers). SMART Hopper (3): unit, firmware, country, protocol
    version, n, n 2-byte LE coin values (cents); from 6 also n currencies.
    """
    try:
        unit = data[0]
        firmware = _ascii(data[1:5])
        country = _ascii(data[5:8])
        if unit == 0x03:
            version = data[8]
            n = data[9]
            values = [int.from_bytes(data[10 + 2 * i:12 + 2 * i], "little") for i in range(n)]
            pos = 10 + 2 * n
            if len(values) != n or pos > len(data):
                raise IndexError
            currencies = [country] * n
            if version >= 6 and len(data) >= pos + 3 * n:
                currencies = [_ascii(data[pos + 3 * i:pos + 3 * i + 3]) for i in range(n)]
            channels = [Channel(i + 1, v, c)
                        for i, (v, c) in enumerate(zip(values, currencies, strict=True))]
            return SetupInfo(unit, firmware, country, version, channels)
        multiplier = int.from_bytes(data[8:11], "big")
        n = data[11]
        short = list(data[12:12 + n])
        pos = 12 + 2 * n
        real = int.from_bytes(data[pos:pos + 3], "big") or 1
        version = data[pos + 3]
        pos += 4
        channels = []
        if version >= 6 and len(data) >= pos + 7 * n:
            for i in range(n):
                currency = _ascii(data[pos + 3 * i:pos + 3 * i + 3])
                base = pos + 3 * n + 4 * i
                value = int.from_bytes(data[base:base + 4], "little")
                channels.append(Channel(i + 1, value * real, currency))
        else:
            if len(short) != n:
                raise IndexError
            channels = [Channel(i + 1, v * (multiplier or 1) * real, country)
                        for i, v in enumerate(short)]
        return SetupInfo(unit, firmware, country, version, channels)
    except IndexError:
        raise UnexpectedReplyError(f"SETUP REQUEST reply too short: {data.hex(' ')}") from None


def money(value: int, currency: str, version: int) -> bytes:
    """A money parameter: 4-byte LE value, plus the currency from protocol 6."""
    out = value.to_bytes(4, "little")
    if version >= 6:
        out += currency.encode("ascii")[:3].ljust(3, b" ")
    return out
