"""Frames typed as hex text (``vendhw decode``, ``vendhw send``, the toolbox)."""

from __future__ import annotations

import re

_SEPARATORS = re.compile(r"[\s,:;_\-]+")


def parse_hex(text: str) -> bytes:
    """``"7F 80 01"``, ``"7f8001"``, ``"0x7F,0x80"`` -> bytes; ValueError says what is wrong."""
    cleaned = _SEPARATORS.sub(" ", text.strip())
    tokens = [t[2:] if t.lower().startswith("0x") else t for t in cleaned.split()]
    if tokens and all(len(t) <= 2 for t in tokens):
        joined = "".join(t.zfill(2) for t in tokens)
    else:
        joined = "".join(tokens)
    if not joined:
        raise ValueError("empty frame")
    if len(joined) % 2:
        raise ValueError(f"odd number of hex digits in {text.strip()!r}")
    try:
        return bytes.fromhex(joined)
    except ValueError:
        bad = next((c for c in joined if c not in "0123456789abcdefABCDEF"), "?")
        raise ValueError(f"not hex: {bad!r} in {text.strip()!r}") from None


__all__ = ["parse_hex"]
