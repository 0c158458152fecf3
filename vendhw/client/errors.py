"""What the backend client raises: refusals (the server said no) and unavailability."""

from __future__ import annotations

from typing import Any

from vendhw.errors import ProtocolError, TransportError


class BackendError(ProtocolError):
    """The backend refused the request; ``code`` is its stable reason (``code_used``, ...)."""

    def __init__(self, status: int, code: str, detail: str = "",
                 body: dict[str, Any] | None = None) -> None:
        self.status = status
        self.code = code
        self.detail = detail
        self.body = body or {}
        super().__init__(f"backend refused ({status} {code}): {detail}" if detail
                         else f"backend refused ({status} {code})")


class AuthenticationError(BackendError):
    """401/403: wrong secret, unknown machine, stale clock or replayed nonce."""


class RateLimitedError(BackendError):
    """429: too many wrong codes; ``retry_after`` seconds until the lock lifts."""

    @property
    def retry_after(self) -> float:
        return float(self.body.get("retry_after", 0) or 0)


class BackendUnavailable(TransportError):
    """The backend could not be reached (or kept failing) after every retry."""


__all__ = ["AuthenticationError", "BackendError", "BackendUnavailable", "RateLimitedError"]
