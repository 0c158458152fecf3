"""A frozen copy of the deframer's original byte-by-byte scan (before the fast path), the
reference the equivalence tests compare the optimised :class:`~vendhw.framing.base.Deframer`
with. Framers' ``parse`` is shared, so MDB's fast 9-bit parse is checked separately."""

from __future__ import annotations

import re

from vendhw.errors import ChecksumError, FramingError
from vendhw.framing.base import Deframer, Direction, Frame, Framer, Garbage


class ReferenceDeframer(Deframer):
    """The plain scan: measure at every offset, parse a copy of each candidate."""

    def __init__(self, framer: Framer, *, direction: Direction | None = None,
                 gap: float | None = None) -> None:
        super().__init__(framer, direction=direction, gap=gap)
        # The original hunting: start bytes only (no hunt_pattern, no skip).
        starts = framer.hunt_bytes(direction)
        self._start_byte = starts[0] if starts is not None and len(starts) == 1 else None
        self._start_re = (
            re.compile(b"[" + b"".join(b"\\x%02x" % b for b in sorted(set(starts))) + b"]")
            if starts is not None and len(starts) > 1 else None
        )
        self._skip = None

    def _scan(self, out: list[Frame | Garbage], *, final: bool, stale: bool = False) -> None:
        buf = self._buf
        framer = self.framer
        protocol = framer.name
        direction = self.direction
        start_byte = self._start_byte
        start_re = self._start_re
        reject = self._reject
        n = len(buf)
        i = 0
        junk_from = -1
        junk_reason = ""

        def junk(upto: int) -> None:
            nonlocal junk_from
            if junk_from >= 0 and upto > junk_from:
                raw = bytes(buf[junk_from:upto])
                self.stats.garbage_bytes += len(raw)
                out.append(Garbage(protocol, raw, junk_reason))
            junk_from = -1

        while i < n:
            if start_byte is not None and buf[i] != start_byte:
                j = buf.find(start_byte, i)
                if j < 0:
                    j = n
                if junk_from < 0:
                    junk_from, junk_reason = i, "no frame start"
                i = j
                continue
            if start_re is not None:
                match = start_re.search(buf, i)
                j = n if match is None else match.start()
                if j > i:
                    if junk_from < 0:
                        junk_from, junk_reason = i, "no frame start"
                    i = j
                    continue
            length = framer.measure(buf, i, direction)
            if length == 0:
                if not final:
                    break
                length = -1
                reason = "stale partial frame" if stale else "truncated frame"
            else:
                reason = "no frame start"
            if length < 0:
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
                verdict = reject(buf, i, length)  # inside garbage: no error text needed
                if verdict:
                    if verdict == 1:
                        self.stats.checksum_errors += 1
                    i += 1
                    continue
            try:
                frame = framer.parse(bytes(buf[i:i + length]), direction)
            except ChecksumError as exc:
                self.stats.checksum_errors += 1
                if junk_from < 0:
                    junk_from, junk_reason = i, str(exc)
                i += 1
                continue
            except FramingError as exc:
                if junk_from < 0:
                    junk_from, junk_reason = i, str(exc)
                i += 1
                continue
            junk(i)
            self.stats.frames += 1
            out.append(frame)
            i += length
        junk(i)
        del buf[:i]
