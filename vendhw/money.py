"""Money shown one way everywhere: minor units in, ``"3.50 CNY"`` out.

Amounts travel as integers in minor units (cents, fen); people read them with the currency's
decimals. ISO 4217 currencies without minor units are listed in :data:`ZERO_DECIMALS`.
"""

from __future__ import annotations

ZERO_DECIMALS = frozenset({"JPY", "KRW", "HUF", "ISK", "CLP", "VND", "XAF", "XOF", "PYG",
                           "UGX", "RWF", "KMF", "GNF", "BIF", "DJF", "VUV", "XPF"})


def decimals(currency: str) -> int:
    """Digits after the decimal point for ``currency``."""
    return 0 if currency.upper() in ZERO_DECIMALS else 2


def format_money(minor: int | None, currency: str = "") -> str:
    """``350, "CNY"`` -> ``"3.50 CNY"``; ``None`` -> ``"-"``."""
    if minor is None:
        return "-"
    places = decimals(currency)
    sign = "-" if minor < 0 else ""
    whole, frac = divmod(abs(int(minor)), 10 ** places)
    text = f"{sign}{whole}.{frac:0{places}d}" if places else f"{sign}{whole}"
    return f"{text} {currency}".strip()
