"""Decoding a two-way byte stream: live (``vendhw monitor``) or from a capture (``replay``).

A capture is vendhw's JSON Lines format (:class:`~vendhw.transport.base.CaptureWriter`): one
``{"t": seconds, "dir": "tx"|"rx", "hex": ...}`` object per burst, ``tx`` from the host and
``rx`` from the device. :class:`StreamDecoder` keeps one deframer per direction, so frames
that are cut across bursts still decode, and counts frames, garbage and checksum errors.
No I/O here: callers feed bytes with their time and direction.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vendhw.errors import ConfigurationError, VendhwError
from vendhw.framing import Deframer, Frame, Framer, Garbage, framer_names, get_framer

DIRECTIONS = {"tx": "host", "rx": "device"}
"""Capture direction -> who sent the bytes."""


@dataclass(frozen=True)
class Record:
    """One burst of a capture."""

    t: float
    dir: str
    data: bytes


@dataclass
class Event:
    """A decoded frame or a run of garbage, with when, who sent it and the gap before it."""

    t: float
    dir: str
    item: Frame | Garbage
    gap: float | None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"t": round(self.t, 6), "dir": self.dir}
        if self.gap is not None:
            out["gap_ms"] = round(self.gap * 1000, 3)
        out.update(self.item.to_dict())
        return out


def read_capture(path: str | Path) -> list[Record]:
    """The records of a capture file; a bad line is a ConfigurationError naming it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigurationError(f"no capture file {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"{path}: cannot read ({exc})") from None
    records: list[Record] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            direction = str(obj["dir"])
            if direction not in DIRECTIONS:
                raise ValueError(f"dir must be tx or rx, not {direction!r}")
            records.append(Record(float(obj.get("t", 0.0)), direction, bytes.fromhex(obj["hex"])))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigurationError(
                f"{path}:{number}: not a vendhw capture record ({type(exc).__name__}: {exc}); "
                'each line is {"t": seconds, "dir": "tx"|"rx", "hex": "..."}') from None
    return records


class StreamDecoder:
    """One deframer per direction; :meth:`feed` returns the events the bytes completed."""

    def __init__(self, framer: Framer, gap: float | None = None,
                 directions: dict[str, str | None] | None = None) -> None:
        self.framer = framer
        self.directions = dict(DIRECTIONS) if directions is None else directions
        self.deframers: dict[str, Deframer] = {
            d: framer.deframer(direction=who, gap=gap)  # type: ignore[arg-type]
            for d, who in self.directions.items()
        }
        self._last_t: float | None = None
        self._pending_t: dict[str, float] = {}

    def feed(self, direction: str, data: bytes, t: float) -> list[Event]:
        deframer = self.deframers[direction]
        start = self._pending_t.get(direction, t) if deframer.pending else t
        try:
            items = deframer.feed(data, t)
        except VendhwError as exc:
            items = [Garbage(self.framer.name, data, str(exc))]
        out = self._events(direction, items, start, t)
        if deframer.pending:
            self._pending_t.setdefault(direction, start)
        else:
            self._pending_t.pop(direction, None)
        return out

    def flush(self) -> list[Event]:
        out: list[Event] = []
        for direction, deframer in self.deframers.items():
            items = deframer.flush()
            t = self._pending_t.pop(direction, self._last_t or 0.0)
            out += self._events(direction, items, t, t)
        return out

    def _events(self, direction: str, items: list[Frame | Garbage], start: float,
                t: float) -> list[Event]:
        out: list[Event] = []
        for index, item in enumerate(items):
            when = start if index == 0 else t
            gap = None if self._last_t is None else max(0.0, when - self._last_t)
            out.append(Event(when, direction, item, gap))
            self._last_t = when
        return out

    @property
    def frames(self) -> int:
        return sum(d.stats.frames for d in self.deframers.values())

    @property
    def garbage_bytes(self) -> int:
        return sum(d.stats.garbage_bytes for d in self.deframers.values())

    @property
    def checksum_errors(self) -> int:
        return sum(d.stats.checksum_errors for d in self.deframers.values())

    def counters(self) -> dict[str, int]:
        return {"frames": self.frames, "garbage_bytes": self.garbage_bytes,
                "checksum_errors": self.checksum_errors}


def decode_records(framer: Framer, records: Iterable[Record]) -> Iterator[Event]:
    """Every event of a capture, in order."""
    decoder = StreamDecoder(framer)
    for record in records:
        yield from decoder.feed(record.dir, record.data, record.t)
    yield from decoder.flush()


def _score(framer: Framer, records: list[Record]) -> tuple[int, int]:
    decoder = StreamDecoder(framer)
    for record in records:
        decoder.feed(record.dir, record.data, record.t)
    decoder.flush()
    total = sum(len(r.data) for r in records) or 1
    framed = total - decoder.garbage_bytes
    return framed * 100 // total, decoder.frames


def guess_protocol(records: list[Record]) -> str:
    """The protocol whose framer explains most of the capture's bytes."""
    best: tuple[int, int, str] | None = None
    for name in framer_names():
        options = {"wire": "9bit"} if name == "mdb" else {}
        try:
            framer = get_framer(name, **options)
        except (VendhwError, TypeError):
            continue
        percent, frames = _score(framer, records)
        if frames and (best is None or (percent, frames) > best[:2]):
            best = (percent, frames, name)
    if best is None or best[0] < 50:
        raise ConfigurationError("no protocol explains this capture; give --protocol")
    return best[2]


def framer_for(protocol: str, checksum: str | None = None) -> Framer:
    """A framer by name; MDB captures are in the 9-bit in-band form."""
    options: dict[str, Any] = {}
    if protocol == "mdb":
        options["wire"] = "9bit"
    if checksum:
        options["checksum"] = checksum
    try:
        return get_framer(protocol, **options)
    except TypeError:
        raise ConfigurationError(f"--checksum does not apply to {protocol}") from None
