"""Per-protocol codec cost, checksums and the stream deframer, for pytest-benchmark.

Run: ``pytest benchmarks --benchmark-only`` (compare runs with ``--benchmark-autosave`` and
``--benchmark-compare``). ``benchmarks/report.py`` produces the headline figures.
"""

from __future__ import annotations

from typing import Any

import construct as cs
import pytest
from report import build_stream, rebuild_fields, stream_frames, typical_frames

from vendhw.framing import framer_names
from vendhw.framing.checksums import CATALOGUE

PROTOCOLS = [name for name in framer_names() if typical_frames(name)]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_decode(benchmark: Any, protocol: str) -> None:
    framer, raw, direction = typical_frames(protocol)[0]
    frame = benchmark(framer.parse, raw, direction)
    assert frame.valid


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_encode(benchmark: Any, protocol: str) -> None:
    framer, raw, direction = typical_frames(protocol)[0]
    fields = rebuild_fields(framer.parse(raw, direction))
    if fields is None:
        pytest.skip("no generic rebuild for this framer")
    assert benchmark(lambda: framer.build(direction=direction, **fields)) == raw


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_checksum_64_bytes(benchmark: Any, name: str) -> None:
    benchmark(CATALOGUE[name], bytes(range(64)))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_stream_deframer_100kb_half_garbage(benchmark: Any, protocol: str) -> None:
    stream, inserted, direction = build_stream(protocol, 100_000)
    framer = stream_frames(protocol)[0][0]

    def run() -> int:
        deframer = framer.deframer(direction)
        for i in range(0, len(stream), 4096):
            deframer.feed(stream[i:i + 4096])
        deframer.flush()
        return deframer.stats.frames

    assert benchmark(run) >= len(inserted) * 0.5


def test_peer_construct_compiled_parse(benchmark: Any) -> None:
    decl = cs.Struct("dest" / cs.Int8ub, "length" / cs.Int8ub, "src" / cs.Int8ub,
                     "header" / cs.Int8ub, "data" / cs.GreedyBytes).compile()
    benchmark(decl.parse, bytes.fromhex("02 00 01 E5"))
