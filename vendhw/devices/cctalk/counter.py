"""The ccTalk event counter of headers 229/159 (credit safety rests on it).

The host diffs each reading against the last one it *committed*, and commits an event only
after the sink accepted it, so a failing journal means the same events (with the same
``event_id``) come again at the next poll. The counter runs 1..255 then wraps to 1; 0 means
the device was reset. More than five new events means some fell out of the device's
five-event buffer.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from vendhw.devices.cctalk.tables import BUFFER_EVENTS, BUFFER_REPLY_LENGTH, parse_reply
from vendhw.errors import ConfigurationError, UnexpectedReplyError
from vendhw.framing.cctalk import BUFFERED_CREDIT_REPLY, RESULT_FIELDS

# --- the event counter (the heart) ------------------------------------------------------------


def counter_distance(last: int, counter: int) -> int:
    """Events between two non-zero readings of an event counter that runs 1..255, 1, 2...

    ``last`` 0 means "just reset" (the device counts 1, 2... from there).
    """
    if last == 0 or counter >= last:
        return counter - last
    return counter + 255 - last


def counter_advance(last: int, steps: int) -> int:
    """The counter value ``steps`` events after ``last`` (wrapping 255 -> 1, never 0)."""
    if steps <= 0:
        return last
    return (last + steps - 1) % 255 + 1


@dataclass
class CounterState:
    """What the host has committed of one device's event counter.

    ``session`` changes whenever the device resets (its counter restarts); ``ordinal`` counts
    events within the session, so ``(session, ordinal)`` names each event for ever. Persist
    :meth:`checkpoint` with the journal to resume across host restarts without double counting.
    """

    session: str = field(default_factory=lambda: secrets.token_hex(4))
    last: int | None = None
    """Last committed counter value; None until the baseline reading."""
    ordinal: int = 0
    ident: str = ""
    """The device identity this session's events are named with (``cctalk:<address>:<serial>``),
    fixed at the session's first start: a restart whose serial number read goes unanswered
    names a repeated event as before, not as ``noserial`` (a second credit)."""

    def checkpoint(self) -> dict[str, Any]:
        return {"session": self.session, "counter": self.last, "ordinal": self.ordinal,
                "ident": self.ident}

    @classmethod
    def resume(cls, data: dict[str, Any]) -> CounterState:
        return cls(str(data["session"]), None if data.get("counter") is None
                   else int(data["counter"]), int(data.get("ordinal", 0)),
                   str(data.get("ident") or ""))


@dataclass(frozen=True)
class BufferRead:
    """One reading of a five-event buffer, diffed against the committed state."""

    counter: int
    reset: bool
    """The counter reads 0 while the host had committed events: the device was reset."""
    lost: int
    """Events that fell out of the buffer between two readings."""
    results: tuple[tuple[int, int], ...]
    """The new (result A, result B) pairs still in the buffer, oldest first."""
    suspicious: bool = False
    """More than five new events: either a burst or a reset followed by new events."""


def buffer_fields(data: bytes) -> tuple[int, list[tuple[int, int]]]:
    """The event counter and the complete (A, B) pairs of a 229/159 reply, newest first.

    Read through the declared layout (229 and 159 share it). A short reply keeps the pairs it
    holds (the caller decides whether they cover the new events); bytes past the five pairs,
    and an odd last byte, are ignored, as this host always did.
    """
    fields = parse_reply(BUFFERED_CREDIT_REPLY, bytes(data).ljust(BUFFER_REPLY_LENGTH, b"\0"))
    present = RESULT_FIELDS[:max(0, (len(data) - 1) // 2)]
    return fields["counter"], [(fields[a], fields[b]) for a, b in present]


def read_buffer(state: CounterState, data: bytes) -> BufferRead:
    """Diff a 229/159 reply (``[counter][A1][B1]...[A5][B5]``, newest first) against ``state``."""
    if not data:
        raise UnexpectedReplyError("event buffer reply is empty")
    counter, pairs = buffer_fields(data)
    if state.last is None:
        raise ConfigurationError("event counter has no baseline; call start() first")
    if counter == 0:
        return BufferRead(0, state.last != 0, 0, ())
    n = counter_distance(state.last, counter)
    available = min(n, BUFFER_EVENTS)
    if len(pairs) < available:
        # Devices always send all five pairs; a short reply is damage, not lost events.
        raise UnexpectedReplyError(f"event buffer reply has {len(pairs)} event(s), the "
                                   f"counter says {available} are new")
    lost = n - available
    return BufferRead(counter, False, lost, tuple(reversed(pairs[:available])),
                      suspicious=n > BUFFER_EVENTS)
