"""The compiled stream scan (``vendhw/framing/_scan.c``): built where CI builds it, its CRC
tables right, its lazy frames and garbage reasons the framers' own, its fallbacks used.

That its output equals the Python scan's, frame for frame, is proven on random and long
seeded streams in ``tests/fuzz/test_fuzz_deframe_fast.py``.
"""

from __future__ import annotations

import os
import random

import pytest

from vendhw.framing import Frame, get_framer
from vendhw.framing import base as framing_base
from vendhw.framing.base import Deframer, Garbage, LazyFrame
from vendhw.framing.checksums import CATALOGUE
from vendhw.framing.id003 import Id003Framer
from vendhw.framing.ssp import SspFramer

compiled_only = pytest.mark.skipif(not framing_base.COMPILED_SCAN,
                                   reason="the compiled scan is not built here")


def test_ci_builds_the_compiled_scan() -> None:
    """`pip install -e .` (what .ci/run does) compiles it: CI must not lose it silently."""
    if not os.environ.get("CI") or os.environ.get("VENDHW_PURE_PYTHON"):
        pytest.skip("only CI promises a compiler")
    assert framing_base.COMPILED_SCAN


@compiled_only
@pytest.mark.parametrize("name", ["crc16-ssp", "crc16-xmodem", "crc16-kermit", "crc16-modbus"])
def test_the_c_crc_tables_agree_with_the_catalogue(name: str) -> None:
    from vendhw.framing import _scan  # type: ignore[attr-defined]

    rng = random.Random(name)
    assert _scan.crc(name, b"123456789") == CATALOGUE[name].check
    for _ in range(300):
        data = rng.randbytes(rng.randrange(0, 300))
        assert _scan.crc(name, data) == CATALOGUE[name](data)


@compiled_only
def test_frames_are_decoded_on_first_access_by_the_framers_own_parse() -> None:
    framer = SspFramer()
    raw = framer.build(data=b"\xf0\xee\x01\x00\x00\x00\x00\x00", seq=1)
    deframer = framer.deframer(None)
    assert deframer.compiled
    (frame,) = deframer.feed(raw)
    assert isinstance(frame, LazyFrame)
    assert not hasattr(frame, "_fields")  # not decoded yet
    eager = framer.parse(raw)
    assert frame.direction == eager.direction == "device"  # inferred, as parse infers it
    assert frame.fields == eager.fields
    assert frame == eager and eager == frame
    assert frame["command"] == "OK" and frame.to_dict() == eager.to_dict()
    assert repr(frame) == repr(eager)


@compiled_only
def test_garbage_reasons_are_the_parse_errors_text() -> None:
    framer = SspFramer()
    good = framer.build(data=b"\x07")
    bad = good[:-1] + bytes((good[-1] ^ 0x55,))
    items = framer.deframer("host").feed(bad + good)
    python = Deframer(framer, direction="host", compiled=False).feed(bad + good)
    assert [type(i) for i in items] == [Garbage, LazyFrame]
    assert items[0].reason == python[0].reason
    assert "checksum" in items[0].reason.lower() or "crc" in items[0].reason.lower()
    assert items[0] == python[0] and hash(items[0]) == hash(python[0])
    assert items[0].to_dict()["error"] == python[0].reason


@compiled_only
def test_a_verdict_the_c_scan_cannot_give_is_asked_of_parse() -> None:
    """ID-003's CURRENCY ASSIGN reply is a table of its own: the scan asks parse, and the
    frame comes back decoded (a plain Frame), not lazy."""
    framer = Id003Framer()
    raw = framer.build(code=0x8A, data=bytes.fromhex("61 01 01 62 01 05"))
    (frame,) = framer.deframer("device").feed(raw)
    assert type(frame) is Frame
    assert frame["currency_assign"][0]["escrow_code"] == 0x61


def test_a_subclass_that_does_not_say_so_gets_the_python_scan() -> None:
    class MyFramer(SspFramer):
        def measure(self, buf: bytes | bytearray, start: int, direction: object) -> int:
            return super().measure(buf, start, direction)  # type: ignore[arg-type]

    assert not MyFramer().deframer("host").compiled
    assert not Deframer(SspFramer(), compiled=False).compiled


@compiled_only
@pytest.mark.parametrize("name,options", [
    ("ssp", {}), ("cctalk", {}), ("cctalk", {"checksum": "crc16"}), ("id003", {}),
    ("mdb", {}), ("mdb", {"wire": "9bit"}), ("fafb", {}), ("board101", {}), ("easivend", {}),
])
def test_every_shipped_framer_has_the_compiled_scan(name: str, options: dict[str, str]) -> None:
    framer = get_framer(name, **options)
    for direction in (None, "host", "device"):
        assert framer.deframer(direction).compiled  # type: ignore[arg-type]


def test_garbage_keeps_its_value_semantics() -> None:
    a = Garbage("ssp", b"\x01", "no frame start")
    assert a == Garbage("ssp", b"\x01", "no frame start")
    assert a != Garbage("ssp", b"\x01", "truncated frame")
    assert len({a, Garbage("ssp", b"\x01", "no frame start")}) == 1
    assert a.to_dict() == {"protocol": "ssp", "valid": False, "hex": "01",
                           "error": "no frame start"}
    assert not a.valid
