"""The machine request signature shared by the client and the reference server.

Every machine request carries four headers::

    X-Vendhw-Machine:   the machine id
    X-Vendhw-Timestamp: unix seconds (integer) when the request was signed
    X-Vendhw-Nonce:     32 random hex digits, never reused by this machine
    X-Vendhw-Signature: hex HMAC-SHA256(machine secret, canonical string)

and the canonical string is, lines joined by ``\\n``::

    VENDHW1-HMAC-SHA256
    METHOD                   (upper case)
    /path?query              (as sent on the wire, percent-encoding untouched)
    timestamp
    nonce
    machine id
    hex SHA-256 of the body  (of b"" when there is no body)

The server refuses a timestamp outside its window (300 s by default), a nonce it has seen
from that machine, and a signature that does not match (compared in constant time). A retry
is therefore signed afresh (new timestamp and nonce); what stays the same across retries is the
``Idempotency-Key`` header, so the server still counts the request once.

This module is pure standard library so both sides import it: the server never depends on
httpx and the machine never depends on FastAPI.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

SCHEME = "VENDHW1-HMAC-SHA256"
"""First line of the canonical string; a new scheme gets a new name, never a silent change."""

HEADER_MACHINE = "X-Vendhw-Machine"
HEADER_TIMESTAMP = "X-Vendhw-Timestamp"
HEADER_NONCE = "X-Vendhw-Nonce"
HEADER_SIGNATURE = "X-Vendhw-Signature"
HEADER_IDEMPOTENCY = "Idempotency-Key"

DEFAULT_WINDOW_S = 300
"""How far a request's timestamp may be from the server's clock, either way."""


def body_digest(body: bytes) -> str:
    """Hex SHA-256 of the body, which is what the signature covers (not the body itself)."""
    return hashlib.sha256(body).hexdigest()


def canonical_string(method: str, path: str, timestamp: str, nonce: str, machine_id: str,
                     body: bytes) -> bytes:
    """The exact bytes that are signed; both sides build them with this one function."""
    lines = [SCHEME, method.upper(), path, timestamp, nonce, machine_id, body_digest(body)]
    return "\n".join(lines).encode("utf-8")


def sign(secret: str | bytes, method: str, path: str, timestamp: str, nonce: str,
         machine_id: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of the canonical string under the machine's secret."""
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    message = canonical_string(method, path, timestamp, nonce, machine_id, body)
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def new_nonce() -> str:
    """A fresh nonce: 128 random bits, so two requests never share one by chance."""
    return secrets.token_hex(16)


def signed_headers(secret: str | bytes, machine_id: str, method: str, path: str, body: bytes,
                   now: float, nonce: str | None = None) -> dict[str, str]:
    """The four authentication headers for one request attempt."""
    timestamp = str(int(now))
    nonce = nonce or new_nonce()
    return {
        HEADER_MACHINE: machine_id,
        HEADER_TIMESTAMP: timestamp,
        HEADER_NONCE: nonce,
        HEADER_SIGNATURE: sign(secret, method, path, timestamp, nonce, machine_id, body),
    }


@dataclass(frozen=True)
class SignedParts:
    """The authentication headers of a received request, before they are checked."""

    machine_id: str
    timestamp: str
    nonce: str
    signature: str

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> SignedParts | None:
        """Pick the four headers (case-insensitively); None when any is missing."""
        lower = {k.lower(): v for k, v in headers.items()}
        values = [lower.get(h.lower(), "") for h in
                  (HEADER_MACHINE, HEADER_TIMESTAMP, HEADER_NONCE, HEADER_SIGNATURE)]
        if not all(values):
            return None
        return cls(*values)


def verify(secret: str | bytes, parts: SignedParts, method: str, path: str,
           body: bytes) -> bool:
    """True when the signature matches; the comparison takes the same time either way."""
    expected = sign(secret, method, path, parts.timestamp, parts.nonce, parts.machine_id, body)
    received = parts.signature.strip().lower().encode("utf-8", "replace")
    return hmac.compare_digest(expected.encode("ascii"), received)


__all__ = [
    "DEFAULT_WINDOW_S",
    "HEADER_IDEMPOTENCY",
    "HEADER_MACHINE",
    "HEADER_NONCE",
    "HEADER_SIGNATURE",
    "HEADER_TIMESTAMP",
    "SCHEME",
    "SignedParts",
    "body_digest",
    "canonical_string",
    "new_nonce",
    "sign",
    "signed_headers",
    "verify",
]
