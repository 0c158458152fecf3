"""Pickup and lottery codes: generation, hashing and the attempt counters' arithmetic.

A code is ``code_digits`` decimal digits from :mod:`secrets`. Its first four digits are the
*selector*: they find the candidate rows (several live codes may share one) and key the
attempt counters; the whole code is stored only as its SHA-256 and compared with
:func:`hmac.compare_digest` against every candidate, so neither the lookup nor the comparison
tells a guesser how close they came. Wrong attempts are counted per machine and selector and
per machine overall; past the limit the selector (or the keypad) locks for a while.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from collections.abc import Iterable

SELECTOR_DIGITS = 4
KEYPAD = "*"
"""Selector value of the per-machine counter (all prefixes together)."""


def generate_code(digits: int) -> str:
    """A uniformly random numeric code (leading zeros allowed)."""
    if digits < SELECTOR_DIGITS + 4:
        raise ValueError(f"codes need at least {SELECTOR_DIGITS + 4} digits")
    return "".join(secrets.choice(string.digits) for _ in range(digits))


def normalize(code: str) -> str:
    """Drop what people type between digit groups (spaces, dashes)."""
    return "".join(ch for ch in code if ch not in " -_\t")


def code_hash(code: str) -> str:
    """Hex SHA-256 of the code: what the database keeps."""
    return hashlib.sha256(code.encode("ascii")).hexdigest()


def selector(code: str) -> str:
    return code[:SELECTOR_DIGITS]


def find_match(code: str, candidates: Iterable[tuple[int, str]]) -> int | None:
    """The id of the candidate whose hash matches, comparing every one in constant time."""
    wanted = code_hash(code).encode()
    found: int | None = None
    for code_id, stored in candidates:
        if hmac.compare_digest(wanted, stored.encode()):
            found = code_id
    return found


__all__ = ["KEYPAD", "SELECTOR_DIGITS", "code_hash", "find_match", "generate_code",
           "normalize", "selector"]
