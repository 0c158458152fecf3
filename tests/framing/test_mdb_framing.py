"""MDB blocks: golden vectors, corruption, round trips, random input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vendhw.errors import VendhwError
from vendhw.framing import get_framer
from vendhw.framing.mdb import DEVICES, decode_9bit, encode_9bit
from vendhw.resources import protocol_vectors

VECTORS = protocol_vectors("mdb")


@pytest.mark.parametrize("vector", VECTORS, ids=[v["hex"] for v in VECTORS])
def test_vector_parses_and_rebuilds(vector: dict) -> None:
    framer = get_framer("mdb", wire=vector.get("wire", "plain"))
    raw = bytes.fromhex(vector["hex"])
    frame = framer.parse(raw, vector["direction"])
    assert frame.valid and frame["command"]
    if frame["command"] in ("ACK", "NAK", "RET"):
        rebuilt = framer.build(direction=vector["direction"], control=frame["command"])
    elif vector["direction"] == "device":
        rebuilt = framer.build(direction="device", data=frame["data"])
    else:
        rebuilt = framer.build(direction="host", head=frame["code"], data=frame["data"])
    assert rebuilt == raw


@pytest.mark.parametrize("vector", [v for v in VECTORS if len(bytes.fromhex(v["hex"])) > 1],
                         ids=lambda v: v["hex"])
def test_every_one_byte_corruption_is_rejected(vector: dict) -> None:
    framer = get_framer("mdb", wire=vector.get("wire", "plain"))
    raw = bytes.fromhex(vector["hex"])
    for pos in range(len(raw)):
        for delta in (0x01, 0x80):
            bad = bytearray(raw)
            bad[pos] ^= delta
            with pytest.raises(VendhwError):
                framer.parse(bytes(bad), vector["direction"])


def test_named_commands() -> None:
    framer = get_framer("mdb")
    assert framer.parse(bytes.fromhex("13 00 00 64 00 01 78"), "host")["command"] == \
        "VEND / VEND REQUEST"
    assert framer.parse(bytes.fromhex("0B 0B"), "host")["command"] == "POLL"
    assert framer.parse(bytes.fromhex("00"), "device")["command"] == "ACK"


addresses = st.sampled_from(sorted(a for a in DEVICES if a))


@settings(max_examples=300, deadline=None)
@given(addresses, st.integers(0, 7), st.binary(max_size=30), st.sampled_from(["plain", "9bit"]))
def test_host_round_trip(address: int, command: int, data: bytes, wire: str) -> None:
    framer = get_framer("mdb", wire=wire)
    raw = framer.build(direction="host", address=address, command=command, data=data)
    frame = framer.parse(raw, "host")
    assert frame["address"] == address and frame["code"] & 7 == command
    assert frame["data"] == data


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=30), st.sampled_from(["plain", "9bit"]))
def test_device_round_trip(data: bytes, wire: str) -> None:
    framer = get_framer("mdb", wire=wire)
    frame = framer.parse(framer.build(direction="device", data=data), "device")
    assert frame["data"] == data


@given(st.lists(st.tuples(st.integers(0, 255), st.booleans()), max_size=50))
def test_9bit_escape_round_trip(words: list[tuple[int, bool]]) -> None:
    encoded = encode_9bit(words)
    assert decode_9bit(encoded) == (words, len(encoded))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=80), st.sampled_from(["host", "device", None]),
       st.sampled_from(["plain", "9bit"]))
def test_random_bytes_raise_only_vendhw_errors(data: bytes, direction: str | None,
                                               wire: str) -> None:
    framer = get_framer("mdb", wire=wire)
    try:
        framer.parse(data, direction)  # type: ignore[arg-type]
    except VendhwError:
        pass
    d = framer.deframer(direction)  # type: ignore[arg-type]
    d.feed(data)
    d.flush()
    assert d.pending == 0
