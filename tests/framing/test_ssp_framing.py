"""SSP packets: golden vectors, stuffing, corruption, round trips, streams, random input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vendhw.errors import ChecksumError, FramingError, VendhwError
from vendhw.framing import Frame, get_framer
from vendhw.framing.checksums import CRC16_SSP
from vendhw.framing.ssp import stuff, unstuff
from vendhw.resources import protocol_vectors

SSP = get_framer("ssp")
VECTORS = protocol_vectors("ssp")
FRAMES = [v for v in VECTORS if v.get("expect_valid", True) and not v.get("form")]


def rebuild(frame: Frame) -> bytes:
    payload = bytes(frame.raw[0:0])
    if frame["command"] == "ENCRYPTED":
        payload = b"\x7e" + frame["encrypted"]
    elif frame.direction == "host":
        payload = bytes((frame["code"],)) + frame["params"]
    else:
        payload = bytes((frame["code"],)) + frame["data"]
    return SSP.build(data=payload, seq=frame["seq"], address=frame["address"])


@pytest.mark.parametrize("vector", FRAMES, ids=[v["hex"][:40] for v in FRAMES])
def test_vector_parses_names_and_rebuilds(vector: dict) -> None:
    raw = bytes.fromhex(vector["hex"])
    frame = SSP.parse(raw, vector["direction"])
    assert frame["command"] and not frame["command"].startswith("COMMAND 0x")
    assert rebuild(frame) == raw


@pytest.mark.parametrize("vector", FRAMES[::4], ids=[v["hex"][:40] for v in FRAMES[::4]])
def test_every_one_byte_corruption_is_rejected(vector: dict) -> None:
    raw = bytes.fromhex(vector["hex"])
    for pos in range(len(raw)):
        for delta in (0x01, 0x80):
            bad = bytearray(raw)
            bad[pos] ^= delta
            with pytest.raises(VendhwError):
                SSP.parse(bytes(bad), vector["direction"])


def test_known_bad_stuffing_vector_is_a_checksum_error() -> None:
    (bad,) = [v for v in VECTORS if v.get("expect_valid") is False]
    with pytest.raises(ChecksumError, match="expected 0xE731, received 0x8265"):
        SSP.parse(bytes.fromhex(bad["hex"]))


def test_decrypted_essp_inner_block_crc() -> None:
    (inner,) = [v for v in VECTORS if v.get("form") == "essp-inner"]
    block = bytes.fromhex(inner["hex"])
    assert CRC16_SSP(block[:-2]) == int.from_bytes(block[-2:], "little")


def test_names_and_events() -> None:
    frame = SSP.parse(bytes.fromhex("7F 80 04 F0 EE 01 EB B9 48"))
    assert frame.direction == "device" and frame["command"] == "OK"
    assert [e["event"] for e in frame["events"]] == ["CREDIT NOTE", "NOTE STACKED"]
    assert frame["events"][0]["channel"] == 1
    assert SSP.parse(bytes.fromhex("7F 80 01 11 65 82"))["command"] == "SYNC"


def test_stuffing() -> None:
    packet = SSP.build(data=bytes([0x7F, 0x7F, 0x01]), seq=1)
    assert packet.count(b"\x7f\x7f") >= 2
    assert SSP.parse(packet)["params"] == b"\x7f\x01"
    with pytest.raises(FramingError, match="unpaired"):
        unstuff(b"\x80\x7f\x01")


@given(st.binary(max_size=60))
def test_stuff_round_trip(body: bytes) -> None:
    assert unstuff(stuff(body)) == body


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=255), st.integers(0, 1), st.integers(0, 0x7D))
def test_build_parse_round_trip(data: bytes, seq: int, address: int) -> None:
    frame = SSP.parse(SSP.build(data=data, seq=seq, address=address), "host")
    assert frame["seq"] == seq and frame["address"] == address
    rest = frame.get("params") or frame.get("encrypted", b"")
    assert bytes((frame["code"],)) + rest == data


def test_stream_split_at_every_offset_with_garbage() -> None:
    frames = [bytes.fromhex(v["hex"]) for v in FRAMES[:12]]
    stream = b"\x00\x7f\x01" + b"\xaa".join(frames) + b"\x7f"
    for cut in range(0, len(stream), 3):
        d = SSP.deframer()
        items = d.feed(stream[:cut]) + d.feed(stream[cut:]) + d.flush()
        assert [i.raw for i in items if isinstance(i, Frame)] == frames, cut


def test_unpaired_stx_drops_the_partial_packet() -> None:
    partial = bytes.fromhex("7F 80 05 07")  # cut short by a new packet
    whole = bytes.fromhex("7F 80 01 07 12 02")
    d = SSP.deframer()
    items = d.feed(partial + whole) + d.flush()
    assert [i.raw for i in items if isinstance(i, Frame)] == [whole]


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=120), st.sampled_from(["host", "device", None]))
def test_random_bytes_raise_only_vendhw_errors(data: bytes, direction: str | None) -> None:
    try:
        SSP.parse(data, direction)  # type: ignore[arg-type]
    except VendhwError:
        pass
    d = SSP.deframer(direction)  # type: ignore[arg-type]
    d.feed(data)
    d.flush()
    assert d.pending == 0
