"""The SETUP, IDENTIFICATION and SEND DIAGNOSTIC STATUS replies, read into values in the
currency's minor units."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vendhw.devices.mdb.tables import CHANGER_DIAGNOSTICS, TOKEN_CREDIT
from vendhw.errors import UnexpectedReplyError
from vendhw.framing.base import Layout
from vendhw.framing.mdb import BILL_SETUP, CHANGER_SETUP, IDENTIFICATION


@dataclass(frozen=True)
class ChangerSetup:
    """The 23-byte changer SETUP reply (coin values already scaled, minor units; ``scaling``
    and ``decimals`` as the device sent them)."""

    level: int
    country: int
    scaling: int
    decimals: int
    routing: int
    coin_values: tuple[int, ...]
    """Value of each coin type; 0 for an unused type and for a vend token."""
    tokens: frozenset[int] = frozenset()
    """Coin types whose credit byte is ``TOKEN_CREDIT``: vend tokens, never money."""


@dataclass(frozen=True)
class BillSetup:
    """The 27-byte bill validator SETUP reply (bill values scaled, minor units)."""

    level: int
    country: int
    scaling: int
    decimals: int
    stacker_capacity: int
    security: int
    escrow: bool
    bill_values: tuple[int, ...]


ZERO_DECIMAL_CURRENCIES = frozenset({"JPY", "KRW", "HUF"})
"""Currencies vendhw counts in whole units (as ``vendhw cash`` prints them); others in 1/100."""


def minor_unit_factor(country: int, decimals: int) -> int:
    """Multiplier from the device's units (``decimals`` places) to vendhw's minor units.

    MDB values are credit x scaling with the device's own decimal places; vender and
    Zzzzipper's masters both convert them to the currency's minor units (a bill validator with
    scaling 10 and 0 decimals reports 1000 for credit 1 in a two-decimal currency)."""
    digits = 0 if currency_of(country) in ZERO_DECIMAL_CURRENCIES else 2
    if decimals > digits:
        raise UnexpectedReplyError(
            f"MDB device reports {decimals} decimal places, more than the {digits} of its "
            "currency: values would need fractions of a minor unit")
    return int(10 ** (digits - decimals))


def _parse(layout: Layout, data: bytes) -> Any:
    """A reply by its declared layout, or one line saying how short it is."""
    if len(data) < layout.fixed_size:
        raise UnexpectedReplyError(f"{layout.name} has {len(data)} bytes, "
                                   f"need >= {layout.fixed_size}")
    return layout.parse(data, "mdb")


def parse_changer_setup(data: bytes) -> ChangerSetup:
    """A credit byte of ``TOKEN_CREDIT`` marks a vend token: value 0, listed in ``tokens``.
    Coin values are in the currency's minor units (see :func:`minor_unit_factor`)."""
    reply = _parse(CHANGER_SETUP, data)
    scaling = reply["scaling"] * minor_unit_factor(reply["country"], reply["decimals"])
    credits = reply["credits"][:16]
    tokens = frozenset(i for i, c in enumerate(credits) if c == TOKEN_CREDIT)
    values = tuple(0 if i in tokens else c * scaling for i, c in enumerate(credits)) \
        + (0,) * (16 - len(credits))
    return ChangerSetup(reply["level"], reply["country"], reply["scaling"], reply["decimals"],
                        reply["routing"], values, tokens)


def parse_bill_setup(data: bytes) -> BillSetup:
    reply = _parse(BILL_SETUP, data)
    factor = minor_unit_factor(reply["country"], reply["decimals"])
    credits = reply["credits"][:16]
    values = tuple(c * reply["scaling"] * factor for c in credits) + (0,) * (16 - len(credits))
    return BillSetup(reply["level"], reply["country"], reply["scaling"], reply["decimals"],
                     reply["stacker_capacity"], reply["security"], reply["escrow"] == 0xFF,
                     values)


@dataclass(frozen=True)
class Identification:
    """EXPANSION IDENTIFICATION: ASCII manufacturer code, serial and model, BCD software
    version, and (changer; bill validator level 2) the optional-feature bits."""

    manufacturer: str
    serial: str
    model: str
    software_version: str
    features: int | None = None


def parse_diagnostic_status(data: bytes) -> list[dict[str, Any]]:
    """A changer's SEND DIAGNOSTIC STATUS reply: one ``{"code", "status", "known"}`` per
    two-byte code (``code`` as hex, ``"1130"``); an odd last byte is ignored."""
    out: list[dict[str, Any]] = []
    for i in range(0, len(data) - 1, 2):
        main, sub = data[i], data[i + 1]
        name = CHANGER_DIAGNOSTICS.get((main, sub))
        known = name is not None
        if name is None:
            general = CHANGER_DIAGNOSTICS.get((main, 0))
            name = f"{general} (sub code 0x{sub:02X})" if general else (
                f"unknown status 0x{main:02X}{sub:02X}")
        out.append({"code": f"{main:02X}{sub:02X}", "status": name, "known": known})
    return out


def parse_identification(data: bytes) -> Identification:
    reply = _parse(IDENTIFICATION, data)
    rest = reply["rest"]
    return Identification(_text(reply["manufacturer"]), _text(reply["serial"]),
                          _text(reply["model"]), reply["software_version"].hex(),
                          int.from_bytes(rest[:4], "big") if len(rest) >= 4 else None)


def _text(raw: bytes) -> str:
    return raw.decode("ascii", "replace").strip()


def currency_of(country: int) -> str:
    """MDB country codes: 0x1nnn is an ISO 4217 numeric code in BCD (0x1978 = EUR)."""
    known = {978: "EUR", 840: "USD", 826: "GBP", 156: "CNY", 392: "JPY", 643: "RUB",
             756: "CHF", 36: "AUD", 124: "CAD"}
    if country >> 12 == 1:
        digits = f"{country & 0x0FFF:03X}"
        if digits.isdigit():
            return known.get(int(digits), digits)
    return ""
