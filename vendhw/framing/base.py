"""Frames, framers and the hunting stream deframer: pure bytes in, frames out, no I/O.

A :class:`Framer` knows one protocol's frame: how to build it, how to parse one frame, and
how long a candidate frame starting at some offset of a byte stream is (:meth:`measure`).
The :class:`Deframer` uses that to cut a stream into frames, skipping garbage and
resynchronising on the next plausible start; it never sleeps and never reads a clock (the
caller passes ``now`` when it wants the inter-byte gap rule applied).

Frame layouts are declared with ``construct`` (:class:`Layout`). The fast path checks length
and checksum by hand, then runs the compiled parse; when that fails the plain parse runs only
to build a precise error message naming the field.
"""

from __future__ import annotations

import os
import re
import struct
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import construct as cs

from vendhw import registry
from vendhw.errors import ChecksumError, FramingError

Direction = Literal["host", "device"]
"""Who sent a frame: ``"host"`` (host -> device) or ``"device"`` (device -> host)."""

DIRECTIONS: tuple[Direction, ...] = ("host", "device")


def normalise_direction(value: str | None) -> Direction | None:
    """Accept ``host``/``device`` and the vectors' ``host->device``/``device->host``."""
    if value is None:
        return None
    value = value.strip().lower()
    if value in ("host", "host->device", "vmc->peripheral", "tx"):
        return "host"
    if value in ("device", "device->host", "peripheral->vmc", "rx"):
        return "device"
    raise ValueError(f"unknown direction {value!r}; use 'host' or 'device'")


def _jsonable(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex(" ").upper()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


class Frame:
    """One valid frame: its wire bytes and its decoded, named fields."""

    __slots__ = ("direction", "fields", "protocol", "raw")
    valid: ClassVar[bool] = True

    def __init__(
        self, protocol: str, raw: bytes, fields: dict[str, Any], direction: Direction | None
    ) -> None:
        self.protocol = protocol
        self.raw = raw
        self.fields = fields
        self.direction = direction

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)

    def __repr__(self) -> str:
        name = self.fields.get("command") or self.fields.get("status") or ""
        return f"<{self.protocol} frame {name} {self.raw.hex(' ').upper()}>"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Frame)
            and self.protocol == other.protocol
            and self.raw == other.raw
            and self.fields == other.fields
        )

    __hash__ = None  # type: ignore[assignment]

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of ``vendhw decode --json``."""
        out: dict[str, Any] = {
            "protocol": self.protocol,
            "valid": True,
            "hex": self.raw.hex(" ").upper(),
            "error": None,
            "direction": self.direction,
        }
        for key, value in self.fields.items():
            if not key.startswith("_"):
                out[key] = _jsonable(value)
        return out


class LazyFrame(Frame):
    """A frame the compiled scan found valid: its fields are decoded on first access.

    The scan (``vendhw/framing/_scan.c``) proves the candidate is a frame with the same
    checks :meth:`Framer.parse` makes; the fields and, when the deframer was given no
    direction, the direction are then the framer's own ``parse`` of :attr:`raw`. A reader
    that only forwards or counts frames never pays for decoding them.
    """

    __slots__ = ("_direction", "_fields", "_framer")
    _direction: Direction | None
    _fields: dict[str, Any]
    _framer: Framer

    def __init__(self, framer: Framer, raw: bytes, direction: Direction | None) -> None:
        self.protocol = framer.name
        self.raw = raw
        self._framer = framer
        self._direction = direction

    def _decode(self) -> dict[str, Any]:
        frame = self._framer.parse(self.raw, self._direction)
        self._fields = frame.fields
        self._direction = frame.direction
        return frame.fields

    @property
    def fields(self) -> dict[str, Any]:
        try:
            return self._fields
        except AttributeError:
            return self._decode()

    @fields.setter
    def fields(self, value: dict[str, Any]) -> None:
        self._fields = value

    @property
    def direction(self) -> Direction | None:
        if self._direction is None and not hasattr(self, "_fields"):
            self._decode()
        return self._direction

    @direction.setter
    def direction(self, value: Direction | None) -> None:
        self._direction = value


class Garbage:
    """Bytes a deframer skipped, with the reason (checksum error, no frame start, stale).

    When the reason is a parse error found by the compiled scan, its text is produced by
    the framer's ``parse`` when first read (``_why`` holds the candidate), so skipping
    garbage never formats an error message nobody reads.
    """

    __slots__ = ("_reason", "_why", "protocol", "raw")
    valid: ClassVar[bool] = False
    _reason: str
    _why: tuple[Framer, bytes, Direction | None]
    protocol: str
    raw: bytes

    def __init__(self, protocol: str, raw: bytes, reason: str) -> None:
        self.protocol = protocol
        self.raw = raw
        self._reason = reason

    @property
    def reason(self) -> str:
        try:
            return self._reason
        except AttributeError:
            framer, candidate, direction = self._why
            try:
                framer.parse(candidate, direction)
            except FramingError as exc:
                self._reason = str(exc)
            else:  # pragma: no cover - the scan and parse disagree: say so, do not hide it
                self._reason = "rejected by the compiled scan"
            return self._reason

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Garbage) and self.protocol == other.protocol
                and self.raw == other.raw and self.reason == other.reason)

    def __hash__(self) -> int:
        return hash((self.protocol, self.raw, self.reason))

    def __repr__(self) -> str:
        return f"Garbage(protocol={self.protocol!r}, raw={self.raw!r}, reason={self.reason!r})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "valid": False,
            "hex": self.raw.hex(" ").upper(),
            "error": self.reason,
        }


class _FixedPlan:
    """A stdlib ``struct`` equivalent of a construct Struct of plain fixed-width fields.

    Derived from the construct declaration itself (so construct stays the one source of
    truth) whenever every field is a FormatField, fixed Bytes, Const or Padding, optionally
    followed by one GreedyBytes tail. Unpacking into a plain dict skips construct's Container
    and BytesIO, which cost most of its compiled parse time. Read fields by key
    (``parsed["name"]``), which works for both this dict and construct's Container.
    """

    def __init__(self, fmt: struct.Struct, names: list[str | None],
                 consts: dict[int, bytes], pads: dict[int, int], tail: str | None,
                 lengths: dict[int, int]) -> None:
        self.fmt = fmt
        self.lengths = lengths
        self.names = names
        self.consts = consts
        self.pads = pads
        self.tail = tail
        self.size = fmt.size
        self.keys = [n if n is not None else f"_{i}" for i, n in enumerate(names)]
        self.tail_keys = [*self.keys, tail or "_tail"]

    @classmethod
    def derive(cls, struct_: cs.Construct) -> _FixedPlan | None:
        if not isinstance(struct_, cs.Struct):
            return None
        order = ""
        parts: list[str] = []
        names: list[str | None] = []
        consts: dict[int, bytes] = {}
        pads: dict[int, int] = {}
        tail: str | None = None
        lengths: dict[int, int] = {}
        for sub in struct_.subcons:
            if tail is not None:
                return None  # nothing may follow the greedy tail
            name = sub.name
            inner = sub.subcon if isinstance(sub, cs.Renamed) else sub
            if isinstance(inner, cs.FormatField):
                fmt: str = inner.fmtstr
                if inner.length > 1:
                    if order and order != fmt[0]:
                        return None
                    order = fmt[0]
                parts.append(fmt[1:])
                names.append(name)
            elif isinstance(inner, cs.Const) and isinstance(inner.value, bytes):
                consts[len(names)] = inner.value
                parts.append(f"{len(inner.value)}s")
                names.append(None)
            elif isinstance(inner, cs.Bytes) and isinstance(inner.length, int):
                lengths[len(names)] = inner.length
                parts.append(f"{inner.length}s")
                names.append(name)
            elif isinstance(inner, cs.Padded) and isinstance(inner.length, int) and \
                    isinstance(inner.subcon, type(cs.Pass)):
                pads[len(names)] = inner.length
                parts.append(f"{inner.length}s")
                names.append(None)
            elif inner is cs.GreedyBytes and name:
                tail = name
            else:
                return None
        return cls(struct.Struct((order or ">") + "".join(parts)), names, consts, pads, tail,
                   lengths)

    def parse(self, data: bytes) -> dict[str, Any] | None:
        n = len(data)
        if n < self.size or (self.tail is None and n != self.size):
            return None
        values = self.fmt.unpack_from(data)
        if self.consts:
            for index, const in self.consts.items():
                if values[index] != const:
                    return None
        if self.tail is None:
            # Constants and pads land under private keys; lengths match by construction.
            return dict(zip(self.keys, values, strict=True))
        return dict(zip(self.tail_keys, (*values, data[self.size:]), strict=True))

    def build(self, values: Mapping[str, Any]) -> bytes | None:
        args: list[Any] = []
        try:
            for i, name in enumerate(self.names):
                if name is not None:
                    value = values[name]
                    if i in self.lengths and len(value) != self.lengths[i]:
                        return None  # struct would pad or truncate silently
                    args.append(value)
                elif i in self.consts:
                    args.append(self.consts[i])
                else:
                    args.append(bytes(self.pads[i]))
            head = self.fmt.pack(*args)
        except (KeyError, struct.error, TypeError):
            return None
        if self.tail is None:
            return head
        return head + bytes(values.get(self.tail, b""))


class Layout:
    """A construct declaration, parsed three ways for three needs.

    1. A stdlib ``struct`` plan derived from the declaration, when the layout is plain
       fixed-width fields (the hot path: about a microsecond);
    2. otherwise construct's compiled parser (building uses the plain one, which checks
       field lengths);
    3. on any failure, the plain (uncompiled) parser, only to build an error message that
       names the field, since compiled construct loses the path.
    """

    def __init__(self, struct_: cs.Construct, name: str = "") -> None:
        self.plain = struct_
        self.compiled = struct_.compile()
        self.fast = _FixedPlan.derive(struct_)
        self.name = name

    @property
    def fixed_size(self) -> int:
        """Bytes before a greedy tail: the least a valid input holds (0 when the layout is
        not plain fixed-width fields)."""
        return self.fast.size if self.fast is not None else 0

    def parse(self, data: bytes, protocol: str) -> Any:
        if self.fast is not None:
            parsed = self.fast.parse(data)
            if parsed is not None:
                return parsed
        else:
            try:
                return self.compiled.parse(data)
            except Exception:
                pass
        try:
            return self.plain.parse(data)
        except cs.ConstructError as exc:
            raise FramingError(f"cannot parse {self.name or 'frame'}: {exc}",
                               protocol=protocol, data=data) from None

    def build(self, values: Any, protocol: str) -> bytes:
        """``values``: a mapping for a Struct, a list for a Range of them."""
        if self.fast is not None:
            built = self.fast.build(values)
            if built is not None:
                return built
        # Not construct's compiled builder: it leaves out the length check of Bytes fields,
        # so a 4-letter currency would be written as is and shift every field after it.
        # Building is rare (simulators, requests) and never on a hot path.
        try:
            return bytes(self.plain.build(values))
        except cs.ConstructError as exc:
            raise FramingError(f"cannot build {self.name or 'frame'}: {exc}",
                               protocol=protocol) from None


class Framer(ABC):
    """One protocol's frame format, both directions; stateless and safe to share."""

    name: ClassVar[str]
    """Registry name, as on the command line (``ssp``, ``cctalk``, ...)."""
    description: ClassVar[str] = ""
    start_byte: ClassVar[int | None] = None
    """Every frame begins with this byte, if the protocol has one (speeds up hunting)."""
    needs_direction: ClassVar[bool] = False
    """True when the same bytes mean different things per direction (ID-003, MDB)."""

    @abstractmethod
    def build(self, *, direction: Direction | None = None, **fields: Any) -> bytes:
        """Encode a frame from named fields (checksum and stuffing included)."""

    @abstractmethod
    def parse(self, data: bytes, direction: Direction | None = None) -> Frame:
        """Decode exactly one frame; raise a :class:`~vendhw.errors.FramingError` if invalid."""

    @abstractmethod
    def measure(self, buf: bytes | bytearray, start: int, direction: Direction | None) -> int:
        """Wire length of the candidate frame at ``buf[start]``.

        Returns the length (> 0), 0 when more bytes are needed to tell, or -1 when no
        frame can start at this offset.
        """

    def hunt_bytes(self, direction: Direction | None) -> bytes | None:
        """Byte values that can begin a frame sent by ``direction``, or None for any.

        The deframer skips everything else with ``find``/a regex search instead of measuring
        at every offset, which is what makes hunting through garbage fast. Protocols
        without a start byte can still narrow it (ccTalk replies go to address 1).
        """
        return None if self.start_byte is None else bytes((self.start_byte,))

    def hunt_pattern(self, direction: Direction | None) -> bytes | None:
        """A regex (bytes, DOTALL) matching, at an offset, exactly where :meth:`measure` does
        not return -1, or None. For protocols without a start byte whose plausibility rules
        look at a few bytes (ccTalk's source address and header): the deframer then skips
        the offsets where no frame can start at C speed with ``search``. It must match
        wherever :meth:`measure` returns 0 or a length, typically with a lookahead plus a
        ``.{0,N}\\Z`` alternative for the offsets too close to the end to tell. When given it
        replaces :meth:`hunt_bytes` and must also hold what they say.
        """
        return None

    def reject(self, buf: bytes | bytearray, start: int, length: int) -> int:
        """A cheap verdict on the complete candidate ``buf[start:start + length]``.

        0: cannot tell, parse it; 1: :meth:`parse` would raise a ChecksumError; 2: it would
        raise another FramingError. The deframer asks this inside a run of garbage, where the
        error's text is not needed, so hunting costs a checksum instead of an exception; it
        must agree with :meth:`parse` exactly (the default never rejects).
        """
        return 0

    def skip(self, buf: bytes, start: int, direction: Direction | None) -> tuple[int, int]:
        """Inside garbage, run over the offsets from ``start`` the scan would only step past.

        Returns the first offset where :meth:`measure` is not -1 and the candidate is either
        incomplete in ``buf`` or not rejected by :meth:`reject`, together with the number of
        offsets on the way that :meth:`reject` rejects with 1 (checksum errors). A protocol
        whose every offset is a candidate (101 boards) checks them in one tight loop instead
        of three calls each. The default skips nothing.
        """
        return start, 0

    def compiled_scan(self, direction: Direction | None) -> dict[str, Any] | None:
        """How the compiled scan reads this framer's frames, or None (the Python scan).

        ``{"proto": NAME}`` names the scan in ``_scan.c`` that ports this class's
        :meth:`measure` and the checks of :meth:`parse`; MDB adds its address tables. Only
        a class that defines this method itself gets the compiled scan: a subclass that
        changes ``measure`` or ``parse`` falls back to the Python scan unless it says so.
        """
        return None

    def deframer(self, direction: Direction | None = None, gap: float | None = None) -> Deframer:
        """A stream deframer for frames sent by ``direction``."""
        return Deframer(self, direction=direction, gap=gap)

    def check(self, *, protocol: str, algorithm: str, expected: int, received: int,
              width: int, data: bytes) -> None:
        """Raise a precise :class:`ChecksumError` when the two values differ."""
        if expected != received:
            raise ChecksumError(protocol=protocol, algorithm=algorithm, expected=expected,
                                received=received, width=width, data=data)


@dataclass
class DeframerStats:
    """Counters a diagnostic tool or a benchmark can read."""

    frames: int = 0
    garbage_bytes: int = 0
    checksum_errors: int = 0
    stale_drops: int = 0


class Deframer:
    """Cut a byte stream into frames; garbage is skipped and reported, never fatal.

    Hunting: at each offset the framer measures a candidate; a candidate that fails its
    checksum or layout costs one byte and the scan goes on, so a frame hidden behind a false
    start is still found. A partial frame older than ``gap`` seconds (measured with the
    ``now`` the caller passes) is stale: the buffer is scanned as if no more bytes will come.
    Memory stays bounded by the longest frame the protocol allows.

    Where the compiled scan is built (``vendhw/framing/_scan.c``, see :data:`COMPILED_SCAN`)
    the same loop runs in C and yields :class:`LazyFrame` objects, decoded on first access;
    the output is the Python scan's, frame for frame, about ten times faster.
    """

    def __init__(
        self, framer: Framer, *, direction: Direction | None = None, gap: float | None = None,
        compiled: bool = True,
    ) -> None:
        """``compiled=False`` runs the Python scan even where the compiled one is built
        (the two give the same output; tests compare them)."""
        self.framer = framer
        self.direction = direction
        self.gap = gap
        self.stats = DeframerStats()
        self._buf = bytearray()
        self._last: float | None = None
        self._reject = framer.reject if type(framer).reject is not Framer.reject else None
        self._skip = framer.skip if type(framer).skip is not Framer.skip else None
        starts = framer.hunt_bytes(direction)
        self._start_byte = starts[0] if starts is not None and len(starts) == 1 else None
        self._start_re = (
            re.compile(b"[" + b"".join(b"\\x%02x" % b for b in sorted(set(starts))) + b"]")
            if starts is not None and len(starts) > 1 else None
        )
        pattern = framer.hunt_pattern(direction)
        if pattern is not None:  # finer than the start bytes: it replaces them
            self._start_byte = None
            self._start_re = re.compile(pattern, re.DOTALL)
        self._compiled = compiled_scanner(framer, direction) if compiled else None

    @property
    def pending(self) -> int:
        """Bytes held as a possible partial frame."""
        return len(self._buf)

    def feed(self, data: bytes, now: float | None = None) -> list[Frame | Garbage]:
        """Add bytes that arrived at monotonic time ``now``; return what they completed."""
        out: list[Frame | Garbage] = []
        if (
            self.gap is not None and now is not None and self._buf
            and self._last is not None and now - self._last > self.gap
        ):
            self.stats.stale_drops += 1
            self._scan(out, final=True, stale=True)
        if now is not None:
            self._last = now
        if data:
            self._buf += data
            self._scan(out, final=False)
        return out

    def flush(self) -> list[Frame | Garbage]:
        """End of stream: decode what is complete and report the rest as garbage."""
        out: list[Frame | Garbage] = []
        self._scan(out, final=True)
        return out

    def reset(self) -> None:
        """Forget any partial frame (e.g. before a new request on a half-duplex line)."""
        self._buf.clear()
        self._last = None

    def __iter__(self) -> Iterator[Frame | Garbage]:  # pragma: no cover - convenience
        return iter(self.flush())

    @property
    def compiled(self) -> bool:
        """True when this deframer runs the compiled scan (``vendhw/framing/_scan.c``)."""
        return self._compiled is not None

    def _scan(self, out: list[Frame | Garbage], *, final: bool, stale: bool = False) -> None:
        if self._compiled is not None:
            items, used, frames, junk, errors = self._compiled.scan(bytes(self._buf), final,
                                                                    stale)
            out += items
            stats = self.stats
            stats.frames += frames
            stats.garbage_bytes += junk
            stats.checksum_errors += errors
            del self._buf[:used]
            return
        # One immutable snapshot per scan: measure, reject and parse read it directly and a
        # candidate slice is already ``bytes`` (framers' ``bytes(data)`` is then free), where
        # slicing the bytearray cost two copies per candidate.
        buf = self._buf
        data = bytes(buf)
        framer = self.framer
        measure = framer.measure
        parse = framer.parse
        protocol = framer.name
        direction = self.direction
        start_byte = self._start_byte
        start_re = self._start_re
        search = start_re.search if start_re is not None else None
        reject = self._reject
        skip = self._skip
        stats = self.stats
        append = out.append
        n = len(data)
        i = 0
        junk_from = -1
        junk_reason = ""

        while i < n:
            if start_byte is not None and data[i] != start_byte:
                j = data.find(start_byte, i)
                if j < 0:
                    j = n
                if junk_from < 0:
                    junk_from, junk_reason = i, "no frame start"
                i = j
                continue
            if search is not None:
                match = search(data, i)
                j = n if match is None else match.start()
                if j > i:
                    if junk_from < 0:
                        junk_from, junk_reason = i, "no frame start"
                    i = j
                    continue
            length = measure(data, i, direction)
            if length <= 0:
                if length == 0:
                    if not final:
                        break
                    reason = "stale partial frame" if stale else "truncated frame"
                else:
                    reason = "no frame start"
                if junk_from < 0:
                    junk_from, junk_reason = i, reason
                i += 1
                continue
            if length > n - i:
                if not final:
                    break
                if junk_from < 0:
                    junk_from = i
                    junk_reason = "stale partial frame" if stale else "truncated frame"
                i += 1
                continue
            if junk_from >= 0 and reject is not None:
                verdict = reject(data, i, length)  # inside garbage: no error text needed
                if verdict:
                    if verdict == 1:
                        stats.checksum_errors += 1
                    i += 1
                    if skip is not None:
                        i, errors = skip(data, i, direction)
                        stats.checksum_errors += errors
                    continue
            try:
                frame = parse(data[i:i + length], direction)
            except ChecksumError as exc:
                stats.checksum_errors += 1
                if junk_from < 0:
                    junk_from, junk_reason = i, str(exc)
                i += 1
                continue
            except FramingError as exc:
                if junk_from < 0:
                    junk_from, junk_reason = i, str(exc)
                i += 1
                continue
            if junk_from >= 0:
                if i > junk_from:
                    stats.garbage_bytes += i - junk_from
                    append(Garbage(protocol, data[junk_from:i], junk_reason))
                junk_from = -1
            stats.frames += 1
            append(frame)
            i += length
        if junk_from >= 0 and i > junk_from:
            stats.garbage_bytes += i - junk_from
            append(Garbage(protocol, data[junk_from:i], junk_reason))
        del buf[:i]


# --- the compiled scan ------------------------------------------------------------------

try:
    from vendhw.framing import _scan as _compiled_module  # type: ignore[attr-defined]
except ImportError:  # not built (no compiler at install time): the Python scan does it all
    _compiled_module = None

COMPILED_SCAN: bool = _compiled_module is not None and not os.environ.get("VENDHW_PURE_PYTHON")
"""Whether deframers use the compiled scan; ``VENDHW_PURE_PYTHON=1`` turns it off."""


def compiled_scanner(framer: Framer, direction: Direction | None) -> Any:
    """The compiled scan for this framer and direction, or None for the Python scan."""
    if not COMPILED_SCAN or "compiled_scan" not in vars(type(framer)):
        return None
    spec = framer.compiled_scan(direction)
    if spec is None:
        return None
    starts = framer.hunt_bytes(direction)
    can_start = None if starts is None else byte_table(starts)
    mod = _compiled_module
    return mod.Scanner(
        getattr(mod, spec["proto"]), {None: 0, "host": 1, "device": 2}[direction], can_start,
        spec.get("heads"), spec.get("devices"), framer.name, framer, direction, LazyFrame,
        Garbage, ChecksumError, FramingError)


def byte_table(values: Any) -> bytes:
    """256 flags, one per byte value: 1 for each of ``values`` (compiled-scan tables)."""
    table = bytearray(256)
    for value in values:
        table[int(value)] = 1
    return bytes(table)


# --- registry ------------------------------------------------------------------------

FRAMERS: dict[str, str] = registry.framers()
"""Registered framers: name -> ``module:Class``, a view of :mod:`vendhw.registry`. Plugins add
entries through the ``vendhw.protocols`` (or the older ``vendhw.framers``) entry-point group."""
