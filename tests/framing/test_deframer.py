"""The hunting deframer: garbage, bad checksums, splits at every offset, stale partials."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from vendhw.framing import Frame, Garbage, get_framer

MDB = get_framer("mdb", wire="9bit")
FRAMES = [
    MDB.build(direction="host", address=0x30, command=4, data=bytes.fromhex("012FFFFF")),
    MDB.build(direction="host", address=0x10, command=3),
    MDB.build(direction="host", address=0x08, command=7, data=b"\x05"),
]
STREAM = b"".join(FRAMES)


def frames_of(items: list[Frame | Garbage]) -> list[bytes]:
    return [i.raw for i in items if isinstance(i, Frame)]


def test_garbage_in_front_between_and_after() -> None:
    d = MDB.deframer("host")
    items = d.feed(b"\x01\x02" + FRAMES[0] + b"\x03" + FRAMES[1]) + d.feed(b"\x04") + d.flush()
    assert frames_of(items) == FRAMES[:2]
    assert d.stats.frames == 2 and d.stats.garbage_bytes == 4
    assert all(not g.valid and g.reason for g in items if isinstance(g, Garbage))


def test_split_at_every_offset() -> None:
    for cut in range(len(STREAM) + 1):
        d = MDB.deframer("host")
        items = d.feed(STREAM[:cut]) + d.feed(STREAM[cut:]) + d.flush()
        assert frames_of(items) == FRAMES, cut


def test_byte_by_byte() -> None:
    d = MDB.deframer("host")
    items = [x for b in STREAM for x in d.feed(bytes([b]))] + d.flush()
    assert frames_of(items) == FRAMES


def test_bad_checksum_is_counted_and_resynchronised() -> None:
    bad = bytearray(FRAMES[0])
    bad[-1] ^= 0x01
    d = MDB.deframer("host")
    items = d.feed(bytes(bad) + FRAMES[1]) + d.flush()
    # Inside the rejected block an escaped FF FF reads as the VMC's one-byte NAK; what
    # matters is that no multi-byte block is lost or invented.
    assert [f for f in frames_of(items) if len(f) > 2] == [FRAMES[1]]


def test_stale_partial_frame_is_dropped_after_the_gap() -> None:
    d = MDB.deframer("host", gap=0.05)
    assert d.feed(FRAMES[0][:4], now=1.0) == []
    assert d.pending == 4
    items = d.feed(FRAMES[1], now=1.2)  # 200 ms of silence: the partial is stale
    assert frames_of(items) == [FRAMES[1]]
    assert d.stats.stale_drops == 1
    garbage = [i for i in items if isinstance(i, Garbage)]
    assert garbage and "stale" in garbage[0].reason


def test_partial_frame_within_the_gap_is_kept() -> None:
    d = MDB.deframer("host", gap=0.05)
    assert d.feed(FRAMES[0][:4], now=1.0) == []
    assert frames_of(d.feed(FRAMES[0][4:], now=1.01)) == [FRAMES[0]]


def test_memory_stays_bounded_on_endless_garbage() -> None:
    d = MDB.deframer("host")
    rng = random.Random(7)
    for _ in range(200):
        d.feed(bytes(rng.randrange(256) for _ in range(512)))
        assert d.pending <= 3 * 40


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.binary(max_size=300))
def test_frames_survive_surrounding_noise(before: bytes, after: bytes) -> None:
    d = MDB.deframer("host")
    noise_free = before.replace(b"\xff", b"") + b"\x00"  # noise that cannot hold a mode bit
    items = d.feed(noise_free + STREAM) + d.feed(after.replace(b"\xff", b"")) + d.flush()
    # Unmarked noise can only read as one-byte control blocks; every real block survives.
    assert [f for f in frames_of(items) if len(f) > 1] == FRAMES
