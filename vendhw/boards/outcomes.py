"""What a vend came to: the normalised outcome and the board's own words for it.

Kept in a module of its own so profiles, drivers and simulators can share it without
importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Outcome(str, Enum):
    """The normalised result of one vend (values are the lowercase strings)."""

    DELIVERED = "delivered"
    """The product left the slot (seen by the drop sensor where there is one)."""
    EMPTY = "empty"
    """The board says the slot is empty; nothing moved."""
    JAMMED = "jammed"
    """The motor stalled (over-current, spiral blocked)."""
    MOTOR_FAULT = "motor_fault"
    """No motor, broken wire, or the board refused to drive it; nothing vended."""
    NOT_DROPPED = "not_dropped"
    """The motor turned but the drop sensor saw nothing (product stuck or slot empty)."""
    SENSOR_FAULT = "sensor_fault"
    """The drop sensor itself failed (self test, blocked beam)."""
    TIMEOUT = "timeout"
    """The board reported its motor timeout, or kept saying "not done" past the run limit."""
    UNKNOWN = "unknown"
    """The board may or may not have vended: never retried, never refunded automatically."""

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class VendReport:
    """What the board said about one vend."""

    outcome: Outcome
    raw_code: int | None
    """The board's own result/status code."""
    drop_time_ms: int | None
    """Light-curtain time where the board reports it."""
    detail: str = ""
    """Human text, e.g. ``"board code 0x03: selection jammed"``."""

    @property
    def delivered(self) -> bool:
        return self.outcome is Outcome.DELIVERED

    def to_dict(self) -> dict[str, object]:
        return {"outcome": self.outcome.value, "raw_code": self.raw_code,
                "drop_time_ms": self.drop_time_ms, "detail": self.detail}


__all__ = ["Outcome", "VendReport"]
