"""ccTalk packets: both checksum variants, vectors, corruption, round trips, streams."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vendhw.errors import ChecksumError, LengthError, VendhwError
from vendhw.framing import Frame, get_framer
from vendhw.resources import protocol_vectors

VECTORS = protocol_vectors("cctalk")
VALID = [v for v in VECTORS if v.get("expect_valid", True)]


def framer_for(vector: dict):  # type: ignore[no-untyped-def]
    return get_framer("cctalk", checksum=vector.get("checksum", "simple"))


def rebuild(framer, frame: Frame) -> bytes:  # type: ignore[no-untyped-def]
    fields = {"dest": frame["dest"], "header": frame["header"], "data": frame["data"]}
    if "src" in frame.fields:
        fields["src"] = frame["src"]
    return framer.build(direction=frame.direction, **fields)


@pytest.mark.parametrize("vector", VALID, ids=[v["hex"][:40] for v in VALID])
def test_vector_parses_names_and_rebuilds(vector: dict) -> None:
    framer = framer_for(vector)
    raw = bytes.fromhex(vector["hex"])
    frame = framer.parse(raw, vector["direction"])
    assert frame["command"] and not frame["command"].startswith("HEADER ")
    assert rebuild(framer, frame) == raw


@pytest.mark.parametrize("vector", VALID[::3], ids=[v["hex"][:40] for v in VALID[::3]])
def test_every_one_byte_corruption_is_rejected(vector: dict) -> None:
    framer = framer_for(vector)
    raw = bytes.fromhex(vector["hex"])
    for pos in range(len(raw)):
        bad = bytearray(raw)
        bad[pos] ^= 0x01
        with pytest.raises(VendhwError):
            framer.parse(bytes(bad), vector["direction"])


def test_spec_typos_are_reported_precisely() -> None:
    simple = get_framer("cctalk")
    with pytest.raises(ChecksumError, match="expected 0x18, received 0x12"):
        simple.parse(bytes.fromhex("02 00 01 E5 12"))
    with pytest.raises(LengthError, match="11 data bytes"):
        simple.parse(bytes.fromhex("01 0B 02 00 00 00 00 00 00 00 00 00 00 00 F2"))


def test_crc16_variant_appendix_9_example() -> None:
    crc = get_framer("cctalk", checksum="crc16")
    assert crc.build(dest=40, header=1) == bytes.fromhex("28 00 46 01 3F")
    reply = crc.parse(bytes.fromhex("01 00 30 00 37"))
    assert reply.direction == "device" and reply["command"] == "ACK"


def test_checksum_option_is_validated() -> None:
    with pytest.raises(ValueError):
        get_framer("cctalk", checksum="md5")


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255),
       st.binary(max_size=255), st.sampled_from(["simple", "crc16"]))
def test_round_trip(dest: int, src: int, header: int, data: bytes, checksum: str) -> None:
    framer = get_framer("cctalk", checksum=checksum)
    raw = framer.build(dest=dest, src=src, header=header, data=data)
    frame = framer.parse(raw, "host")
    assert (frame["dest"], frame["header"], frame["data"]) == (dest, header, data)


def test_reply_stream_hunts_for_the_host_address() -> None:
    framer = get_framer("cctalk")
    replies = [framer.build(direction="device", dest=1, src=2, header=0, data=bytes([7, 1, 0])),
               framer.build(direction="device", dest=1, src=2, header=0)]
    stream = b"\x55\xaa\x02" + replies[0] + b"\x99" + replies[1]
    for cut in range(len(stream) + 1):
        d = framer.deframer("device")
        items = d.feed(stream[:cut]) + d.feed(stream[cut:]) + d.flush()
        assert [i.raw for i in items if isinstance(i, Frame)] == replies, cut


def test_stale_partial_reply_is_dropped_after_50_ms() -> None:
    framer = get_framer("cctalk")
    reply = framer.build(direction="device", dest=1, src=2, header=0)
    d = framer.deframer("device", gap=0.05)
    assert d.feed(reply[:3], now=0.0) == []
    items = d.feed(reply, now=0.2)
    assert [i.raw for i in items if isinstance(i, Frame)] == [reply]


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(["host", "device", None]),
       st.sampled_from(["simple", "crc16"]))
def test_random_bytes_raise_only_vendhw_errors(data: bytes, direction: str | None,
                                               checksum: str) -> None:
    framer = get_framer("cctalk", checksum=checksum)
    try:
        framer.parse(data, direction)  # type: ignore[arg-type]
    except VendhwError:
        pass
    d = framer.deframer(direction)  # type: ignore[arg-type]
    d.feed(data)
    d.flush()
    assert d.pending == 0
