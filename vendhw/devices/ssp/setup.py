"""SETUP REQUEST replies and money parameters (GA138)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vendhw.devices.ssp.tables import UNIT_TYPES
from vendhw.errors import FramingError, UnexpectedReplyError
from vendhw.framing.ssp import UnitType, setup_layout

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

    The layouts are declared once, in :mod:`vendhw.framing.ssp` (:data:`SETUP_VALIDATOR`,
    :data:`SETUP_HOPPER`), and the simulator builds its reply from the same declaration.
    Validators, SMART Payout and NV11: a channel is worth its expanded value (protocol 6 on)
    x real value multiplier cents; before 6 (or when the expanded table is missing) the short
    value times both multipliers. SMART Hopper: coin values are cents; currencies from 6.
    A reply too short for its layout raises :class:`~vendhw.errors.UnexpectedReplyError`.
    """
    try:
        reply = setup_layout(data[0] if data else UnitType.NOTE_VALIDATOR).parse(data, "ssp")
    except FramingError:
        raise UnexpectedReplyError(f"SETUP REQUEST reply too short: {data.hex(' ')}") from None
    unit, version = reply["unit_type"], reply["protocol_version"]
    firmware, country = _ascii(reply["firmware"]), _ascii(reply["country"])
    n = reply["count"]
    if unit == UnitType.SMART_HOPPER:
        found = reply["currencies"]
        currencies = [_ascii(c) for c in found] if found is not None else [country] * n
        channels = [Channel(i + 1, v, c)
                    for i, (v, c) in enumerate(zip(reply["values"], currencies, strict=True))]
        return SetupInfo(unit, firmware, country, version, channels)
    real = reply["real_multiplier"] or 1
    expanded = reply["expanded"]
    if expanded is not None:
        channels = [Channel(i + 1, value * real, _ascii(currency)) for i, (currency, value)
                    in enumerate(zip(expanded["currencies"], expanded["values"], strict=True))]
    else:
        channels = [Channel(i + 1, v * (reply["multiplier"] or 1) * real, country)
                    for i, v in enumerate(reply["values"])]
    return SetupInfo(unit, firmware, country, version, channels)


def money(value: int, currency: str, version: int) -> bytes:
    """A money parameter: 4-byte LE value, plus the currency from protocol 6."""
    out = value.to_bytes(4, "little")
    if version >= 6:
        out += currency.encode("ascii")[:3].ljust(3, b" ")
    return out
