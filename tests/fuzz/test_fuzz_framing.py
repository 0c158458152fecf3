"""Every framer and deframer on random bytes: only vendhw errors, every byte accounted for,
valid frames found again however the stream is cut."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fuzzprofile import FUZZ
from hypothesis import given
from hypothesis import strategies as st

from vendhw.errors import VendhwError
from vendhw.framing import FRAMERS, Frame, Framer, get_framer

ROOT = Path(__file__).resolve().parents[2] / "protocols"
TARGETS: dict[str, tuple[str, dict[str, str]]] = {name: (name, {}) for name in FRAMERS}
TARGETS["mdb-9bit"] = ("mdb", {"wire": "9bit"})
NAMES = sorted(TARGETS)


def framer_of(target: str) -> Framer:
    name, options = TARGETS[target]
    return get_framer(name, **options)
DIRECTIONS = st.sampled_from([None, "host", "device"])


def _valid_frames(target: str) -> dict[str | None, list[bytes]]:
    """Vectors that parse with the framer and come out of its deframer alone, by direction."""
    framer = framer_of(target)
    name = TARGETS[target][0]
    out: dict[str | None, list[bytes]] = {}
    if name == "mdb":
        if framer.wire == "plain":  # type: ignore[attr-defined]
            return {}  # without mode bits back-to-back blocks are ambiguous by design
        out = {"host": [framer.build(direction="host", address=a, command=c)
                        for a, c in ((0x08, 3), (0x30, 3), (0x08, 0), (0x10, 2))],
               "device": [framer.build(direction="device", data=bytes.fromhex(h))
                          for h in ("0B", "52 14", "90", "08 00 01 02 05 0A 14 00", "FF")]
               + [framer.build(direction="device", control="ACK")]}
        return out
    for vector in json.loads((ROOT / name / "vectors.json").read_text())["vectors"]:
        if vector.get("expect_valid") is False or vector.get("checksum") not in (None,
                                                                                  "simple"):
            continue
        direction = vector.get("direction")
        try:
            raw = bytes.fromhex(vector["hex"])
            framer.parse(raw, direction)
        except (VendhwError, ValueError):
            continue
        alone = framer.deframer(direction).feed(raw) + framer.deframer(direction).flush()
        if [item.raw for item in alone if item.valid] != [raw]:
            continue  # parses, but the stream's plausibility rules skip it (cctalk pitfall)
        out.setdefault(direction, []).append(raw)
    return out


VALID = {name: _valid_frames(name) for name in NAMES}


@pytest.mark.parametrize("name", NAMES)
@given(data=st.binary(max_size=300), direction=DIRECTIONS)
@FUZZ
def test_parse_random_bytes(name: str, data: bytes, direction: str | None) -> None:
    framer = framer_of(name)
    try:
        frame = framer.parse(data, direction)  # type: ignore[arg-type]
    except VendhwError:
        return
    assert isinstance(frame, Frame) and frame.raw == data
    frame.to_dict()  # a parsed frame always renders (the decode CLI)


@pytest.mark.parametrize("name", NAMES)
@given(pieces=st.lists(st.one_of(st.binary(max_size=40), st.integers(0, 10_000)),
                       max_size=12),
       cuts=st.lists(st.integers(1, 64), max_size=20), direction=DIRECTIONS,
       gap=st.booleans())
@FUZZ
def test_deframer_accounts_for_every_byte(name: str, pieces: list[bytes | int],
                                          cuts: list[int], direction: str | None,
                                          gap: bool) -> None:
    """Garbage mixed with valid frames, fed in random chunks: frames + garbage + pending is
    exactly what was fed; after flush nothing is pending."""
    frames = [f for d, fs in VALID[name].items() if d in (direction, None) or direction is None
              for f in fs]
    stream = b"".join(p if isinstance(p, bytes) else (frames[p % len(frames)] if frames
                                                      else b"")
                      for p in pieces)
    deframer = framer_of(name).deframer(direction, gap=0.5 if gap else None)  # type: ignore[arg-type]
    out = []
    i = 0
    now = 0.0
    for cut in cuts or [len(stream)]:
        now += cut / 10  # sometimes past the gap: a stale partial frame is dropped
        out += deframer.feed(stream[i:i + cut], now)
        i += cut
    out += deframer.feed(stream[i:], now)
    assert sum(len(item.raw) for item in out) + deframer.pending == len(stream)
    out += deframer.flush()
    assert deframer.pending == 0
    assert b"".join(item.raw for item in out) == stream


@pytest.mark.parametrize("name", NAMES)
@given(picks=st.lists(st.integers(0, 10_000), min_size=1, max_size=8),
       cuts=st.lists(st.integers(1, 16), max_size=30))
@FUZZ
def test_back_to_back_frames_come_out_unchanged(name: str, picks: list[int],
                                                cuts: list[int]) -> None:
    for direction, frames in VALID[name].items():
        chosen = [frames[p % len(frames)] for p in picks]
        stream = b"".join(chosen)
        deframer = framer_of(name).deframer(direction)  # type: ignore[arg-type]
        out = []
        i = 0
        for cut in cuts:
            out += deframer.feed(stream[i:i + cut])
            i += cut
        out += deframer.feed(stream[i:])
        out += deframer.flush()
        assert [item.raw for item in out] == chosen, (direction, out)
