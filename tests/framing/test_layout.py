"""The struct fast path derived from a construct declaration agrees with construct itself."""

from __future__ import annotations

import construct as cs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vendhw.errors import FramingError
from vendhw.framing import Layout

DECL = cs.Struct(
    "sync" / cs.Const(b"\xfa\xfb"),
    "cmd" / cs.Int8ub,
    "value" / cs.Int16ul,
    "label" / cs.Bytes(3),
    "pad" / cs.Padding(2),
    "body" / cs.GreedyBytes,
)
LAYOUT = Layout(DECL, "test frame")


def test_fast_plan_is_derived() -> None:
    assert LAYOUT.fast is not None
    assert Layout(cs.Struct("x" / cs.Int16ub, "y" / cs.Int16ul)).fast is None  # mixed order
    assert Layout(cs.Struct("n" / cs.Int8ub, "d" / cs.Bytes(cs.this.n))).fast is None


@given(st.integers(0, 255), st.integers(0, 0xFFFF), st.binary(min_size=3, max_size=3),
       st.binary(max_size=20))
def test_fast_path_agrees_with_construct(cmd: int, value: int, label: bytes, body: bytes) -> None:
    fields = {"cmd": cmd, "value": value, "label": label, "body": body}
    built = LAYOUT.build(fields, "t")
    assert built == DECL.build(fields)
    parsed = LAYOUT.parse(built, "t")
    reference = DECL.parse(built)
    assert {k: parsed[k] for k in fields} == {k: reference[k] for k in fields}


def test_errors_name_the_field() -> None:
    with pytest.raises(FramingError, match="sync"):
        LAYOUT.parse(b"\xfa\xfc" + bytes(8), "t")
    with pytest.raises(FramingError, match="test frame"):
        LAYOUT.parse(b"\xfa\xfb\x01", "t")
    with pytest.raises(FramingError, match="label"):
        LAYOUT.build({"cmd": 1, "value": 2, "label": b"toolong", "body": b""}, "t")
