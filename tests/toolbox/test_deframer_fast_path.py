"""The deframer's checksum fast path inside garbage gives exactly what the full parse gives."""

from __future__ import annotations

import random

import pytest

from vendhw.framing import Deframer, get_framer


def _stream(protocol: str, seed: int, **options: object) -> bytes:
    framer = get_framer(protocol, **options)
    rng = random.Random(seed)
    out = bytearray()
    for _ in range(300):
        if protocol == "board101":
            frame = framer.build(code=rng.choice([1, 3, 5, 0x1B]),
                                 data=rng.randbytes(rng.randrange(0, 17)),
                                 address=rng.choice([0, 1]))
        else:
            frame = framer.build(dest=rng.choice([1, 2, 40]), header=rng.choice([0, 254, 229]),
                                 data=rng.randbytes(rng.randrange(0, 12)),
                                 src=rng.choice([1, 2]))
        if rng.random() < 0.1:  # a corrupted frame: a checksum error inside the stream
            frame = frame[:-1] + bytes((frame[-1] ^ 0x5A,))
        out += rng.randbytes(rng.randrange(0, 2 * len(frame)))
        out += frame
    return bytes(out)


def _run(deframer: Deframer, stream: bytes, chunk: int) -> tuple[list[dict[str, object]], object]:
    items = []
    for i in range(0, len(stream), chunk):
        items += deframer.feed(stream[i:i + chunk])
    items += deframer.flush()
    return [item.to_dict() for item in items], deframer.stats


@pytest.mark.parametrize(("protocol", "options"), [
    ("board101", {}), ("cctalk", {}), ("cctalk", {"checksum": "crc16"})])
@pytest.mark.parametrize("direction", [None, "host", "device"])
def test_fast_path_agrees_with_the_full_parse(protocol: str, options: dict[str, object],
                                              direction: str | None) -> None:
    framer = get_framer(protocol, **options)
    for seed in range(3):
        stream = _stream(protocol, seed, **options)
        chunk = 1 + seed * 997
        fast = framer.deframer(direction)  # type: ignore[arg-type]
        assert fast._reject is not None
        slow = framer.deframer(direction)  # type: ignore[arg-type]
        slow._reject = None  # the full parse at every candidate, as before the fast path
        fast_items, fast_stats = _run(fast, stream, chunk)
        slow_items, slow_stats = _run(slow, stream, chunk)
        assert fast_items == slow_items
        assert fast_stats == slow_stats
        assert fast_stats.checksum_errors > 0 and fast_stats.frames > 0
