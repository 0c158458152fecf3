"""The fast deframer against the original byte-by-byte scan, on random streams of valid
frames and garbage for every protocol and direction, however the stream is cut: the same
frames, garbage spans (bytes and reasons) and counters. Both scans of today's Deframer are
compared, the Python one and the compiled one (``vendhw/framing/_scan.c``, whose frames and
garbage reasons are decoded lazily: comparing them decodes them)."""

from __future__ import annotations

from typing import Any

import pytest
from fuzzprofile import FUZZ
from hypothesis import given
from hypothesis import strategies as st
from reference_deframer import ReferenceDeframer
from test_fuzz_framing import NAMES, TARGETS, _valid_frames, framer_of

from vendhw.framing import Frame
from vendhw.framing.base import Deframer
from vendhw.framing.mdb import MdbFramer

TARGETS.setdefault("cctalk-crc16", ("cctalk", {"checksum": "crc16"}))
FAST_NAMES = [*NAMES, "cctalk-crc16"]


def _shape(items: list[Any]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for item in items:
        if isinstance(item, Frame):
            out.append(("frame", item.protocol, item.raw, item.direction, item.fields))
        else:
            out.append(("garbage", item.protocol, item.raw, item.reason))
    return out


def _run(deframer: Deframer, stream: bytes, cuts: list[int]) -> list[tuple[Any, ...]]:
    items: list[Any] = []
    pos = 0
    for cut in sorted({c % (len(stream) + 1) for c in cuts}):
        items += deframer.feed(stream[pos:cut])
        pos = cut
    items += deframer.feed(stream[pos:])
    items += deframer.flush()
    return _shape(items)


def _same_checksum(args: tuple[bytes, int, int, int, bool]) -> bytes:
    """A frame with two bytes changed so that an 8-bit sum (or XOR) still holds: the
    checksum passes and only the layout rules of parse (mode bits, addresses, headers,
    lengths) can refuse it, the verdicts a compiled scan must get exactly right."""
    frame, a, b, delta, use_xor = args
    out = bytearray(frame)
    i, j = a % len(out), b % len(out)
    if i == j:
        return bytes(out)
    if use_xor:
        out[i] ^= delta
        out[j] ^= delta
    else:
        out[i] = (out[i] + delta) & 0xFF
        out[j] = (out[j] - delta) & 0xFF
    return bytes(out)


@pytest.mark.parametrize("target", FAST_NAMES)
@given(data=st.data(), direction=st.sampled_from([None, "host", "device"]))
@FUZZ
def test_fast_scan_matches_reference(target: str, data: st.DataObject,
                                     direction: str | None) -> None:
    framer = framer_of(target)
    frames = [f for group in _valid_frames(target).values() for f in group]
    if target == "cctalk-crc16":  # no crc16 vectors: build a few both ways
        frames = [framer.build(direction="host", dest=2, header=h, data=d)
                  for h, d in ((254, b""), (229, b"\x01"), (231, b"\xff\x00"))]
        frames += [framer.build(direction="device", dest=1, header=0, data=d)
                   for d in (b"", b"\x05\x06", b"\x01\x00\x00")]
    parts = data.draw(st.lists(
        st.one_of(st.binary(max_size=40),
                  st.sampled_from(frames) if frames else st.binary(max_size=8),
                  st.sampled_from(frames).map(lambda f: f[:-1]) if frames
                  else st.binary(max_size=4),
                  st.tuples(st.sampled_from(frames), st.integers(0, 255), st.integers(0, 255),
                            st.integers(1, 255), st.booleans()).map(_same_checksum)
                  if frames else st.binary(max_size=4)),
        max_size=12))
    stream = b"".join(parts)
    cuts = data.draw(st.lists(st.integers(min_value=0, max_value=10_000), max_size=5))
    plain = ReferenceDeframer(framer, direction=direction)  # type: ignore[arg-type]
    want = _run(plain, stream, cuts)
    for compiled in (False, True):  # the Python scan, and the C scan where it is built
        fast = Deframer(framer, direction=direction, compiled=compiled)  # type: ignore[arg-type]
        assert _run(fast, stream, cuts) == want, f"compiled={compiled}"
        assert fast.stats == plain.stats, f"compiled={compiled}"
        assert fast.pending == plain.pending, f"compiled={compiled}"


@given(raw=st.binary(max_size=40), direction=st.sampled_from([None, "host", "device"]))
@FUZZ
def test_mdb_9bit_fast_parse_matches_decode(raw: bytes, direction: str | None) -> None:
    """MDB's 9-bit parse skips the word-by-word decode when the escapes are only where a
    well-formed frame has them; it must agree with the decoding path, errors included."""
    framer = MdbFramer(wire="9bit")
    for candidate in (raw, b"\xff\x00" + raw, raw + b"\xff\x00" + raw[:1]):
        try:
            want: Any = framer._parse_decoding(candidate, direction)  # type: ignore[arg-type]
            want = ("ok", want.raw, want.fields, want.direction)
        except Exception as exc:
            want = ("err", type(exc), str(exc))
        try:
            got: Any = framer.parse(candidate, direction)  # type: ignore[arg-type]
            got = ("ok", got.raw, got.fields, got.direction)
        except Exception as exc:
            got = ("err", type(exc), str(exc))
        assert got == want


@pytest.mark.parametrize("checksum", ["simple", "crc16"])
@given(buf=st.binary(max_size=12), direction=st.sampled_from(["host", "device"]))
@FUZZ
def test_cctalk_hunt_pattern_is_measure(checksum: str, buf: bytes, direction: str) -> None:
    """The regex matches at an offset exactly where measure does not rule a frame out (and,
    for replies, where the start byte is)."""
    import re

    from vendhw.framing.cctalk import CcTalkFramer

    framer = CcTalkFramer(checksum=checksum)
    pattern = framer.hunt_pattern(direction)  # type: ignore[arg-type]
    assert pattern is not None
    regex = re.compile(pattern, re.DOTALL)
    starts = framer.hunt_bytes(direction)  # type: ignore[arg-type]
    for start in range(len(buf)):
        plausible = (starts is None or buf[start] in starts) and \
            framer.measure(buf, start, direction) != -1  # type: ignore[arg-type]
        assert bool(regex.match(buf, start)) == plausible


def test_board101_raw_crc_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without crcmod's worker in reach (another crcmod, no C extension) the 101 skip loop
    falls back to the ordinary CRC function and gives the same residue verdicts."""
    import dataclasses

    from vendhw.framing import board101
    from vendhw.framing.checksums import CRC16_MODBUS

    real = CRC16_MODBUS.func
    fake = dataclasses.replace(CRC16_MODBUS, func=lambda data: real(data))
    monkeypatch.setattr(board101, "CRC16_MODBUS", fake)
    worker, init, table = board101._raw_crc()
    assert worker is not real
    frame = board101.Board101Framer().build(direction="host", address=1, code=0x01)
    assert worker(frame, init, table) == 0
    assert worker(frame[:-1] + bytes((frame[-1] ^ 1,)), init, table) != 0
    assert board101._RAW_CRC[0](frame, board101._RAW_CRC[1], board101._RAW_CRC[2]) == 0


def _stress_frames(target: str) -> list[bytes]:
    framer = framer_of(target)
    frames = [f for group in _valid_frames(target).values() for f in group]
    if target == "mdb":  # plain wire: no vectors come out alone, build blocks both ways
        frames = [framer.build(direction="host", address=a, command=c, data=d)
                  for a, c, d in ((0x08, 3, b""), (0x30, 1, b"\x00"), (0x60, 5, b"\x01\x02"))]
        frames += [framer.build(direction="device", data=bytes.fromhex(h))
                   for h in ("0B", "52 14", "08 00 01 02 05 0A 14 00")]
        frames += [framer.build(direction=d, control="ACK") for d in ("host", "device")]
    if target == "cctalk-crc16":
        frames = [framer.build(direction="host", dest=2, header=254),
                  framer.build(direction="device", dest=1, header=0, data=b"\x05\x06")]
    return frames


@pytest.mark.parametrize("target", FAST_NAMES)
@pytest.mark.parametrize("direction", [None, "host", "device"])
def test_compiled_scan_matches_python_scan_on_long_streams(target: str,
                                                           direction: str | None) -> None:
    """Seeded streams far longer than Hypothesis draws (40 KB each): valid frames, frames
    cut short, frames with a compensated two-byte change (8-bit checksum still good), and
    random garbage, fed in uneven chunks; the C scan must give the Python scan's output."""
    import random

    framer = framer_of(target)
    frames = _stress_frames(target)
    rng = random.Random(f"{target}/{direction}")
    parts: list[bytes] = []
    size = 0
    while size < 40_000:
        roll = rng.random()
        if frames and roll < 0.4:
            part = rng.choice(frames)
        elif frames and roll < 0.5:
            part = rng.choice(frames)[:-1]
        elif frames and roll < 0.65:
            part = _same_checksum((rng.choice(frames), rng.randrange(256), rng.randrange(256),
                                   rng.randrange(1, 256), rng.random() < 0.5))
        else:
            part = rng.randbytes(rng.randrange(1, 30))
        parts.append(part)
        size += len(part)
    stream = b"".join(parts)
    cuts = sorted(rng.randrange(len(stream)) for _ in range(60))
    outputs = []
    for compiled in (False, True):
        deframer = Deframer(framer, direction=direction, compiled=compiled)  # type: ignore[arg-type]
        if compiled and not deframer.compiled:
            pytest.skip("the compiled scan is not built here")
        outputs.append((_run(deframer, stream, cuts), deframer.stats, deframer.pending))
    python, compiled_out = outputs
    assert compiled_out[1] == python[1]
    assert compiled_out[2] == python[2]
    assert len(compiled_out[0]) == len(python[0])
    for got, want in zip(compiled_out[0], python[0], strict=True):
        assert got == want
