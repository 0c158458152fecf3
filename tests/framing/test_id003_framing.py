"""ID-003 packets: vectors both ways, direction-dependent names, corruption, streams."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vendhw.errors import ChecksumError, VendhwError
from vendhw.framing import Frame, get_framer
from vendhw.resources import protocol_vectors

ID003 = get_framer("id003")
VECTORS = protocol_vectors("id003")


@pytest.mark.parametrize("vector", VECTORS, ids=[v["hex"] for v in VECTORS])
def test_vector_parses_names_and_rebuilds(vector: dict) -> None:
    raw = bytes.fromhex(vector["hex"])
    frame = ID003.parse(raw, vector["direction"])
    assert not frame["command"].startswith(("COMMAND 0x", "STATUS 0x"))
    data = frame["data"]
    if "extension" in frame.fields:
        data = b"\x20" + bytes((frame["extension"],)) + data
    assert ID003.build(code=frame["code"], data=data) == raw


@pytest.mark.parametrize("vector", VECTORS[::2], ids=[v["hex"] for v in VECTORS[::2]])
def test_every_one_byte_corruption_is_rejected(vector: dict) -> None:
    raw = bytes.fromhex(vector["hex"])
    for pos in range(len(raw)):
        bad = bytearray(raw)
        bad[pos] ^= 0x01
        with pytest.raises(VendhwError):
            ID003.parse(bytes(bad), vector["direction"])


def test_direction_decides_the_meaning() -> None:
    raw = bytes.fromhex("FC 05 40 2B 15")
    assert ID003.parse(raw, "host")["command"] == "RESET"
    assert ID003.parse(raw, "device")["command"] == "POWER UP"
    both = ID003.parse(bytes.fromhex("FC 05 11 27 56"))
    assert both["command"] == "STATUS REQUEST" and both["device_reading"] == "ENABLE/IDLING"


def test_status_details() -> None:
    escrow = ID003.parse(bytes.fromhex("FC 06 13 63 A2 D8"), "device")
    assert escrow["denomination_code"] == 0x63
    rejecting = ID003.parse(bytes.fromhex("FC 06 17 71 51 8C"), "device")
    assert rejecting["reject_reason"] == "insertion error"
    failure = ID003.parse(ID003.build(code=0x49, data=b"\xa2"), "device")
    assert failure["failure"] == "stack motor failure"


def test_bad_crc_names_both_values() -> None:
    with pytest.raises(ChecksumError, match=r"CRC-16/KERMIT.*expected 0x5627, received 0x5628"):
        ID003.parse(bytes.fromhex("FC 05 11 28 56"))


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 255), st.binary(max_size=200), st.sampled_from(["host", "device"]))
def test_round_trip(code: int, data: bytes, direction: str) -> None:
    raw = ID003.build(code=code, data=data)
    frame = ID003.parse(raw, direction)  # type: ignore[arg-type]
    assert frame["code"] == code and frame.raw == raw


def test_stream_resynchronises_on_sync() -> None:
    frames = [bytes.fromhex(v["hex"]) for v in VECTORS if v["direction"] == "device"]
    stream = b"\xfc\x03\x00" + b"\x00\xfc".join(frames)
    for cut in range(0, len(stream), 2):
        d = ID003.deframer("device")
        items = d.feed(stream[:cut]) + d.feed(stream[cut:]) + d.flush()
        assert [i.raw for i in items if isinstance(i, Frame)] == frames, cut


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(["host", "device", None]))
def test_random_bytes_raise_only_vendhw_errors(data: bytes, direction: str | None) -> None:
    try:
        ID003.parse(data, direction)  # type: ignore[arg-type]
    except VendhwError:
        pass
    d = ID003.deframer(direction)  # type: ignore[arg-type]
    d.feed(data)
    d.flush()
    assert d.pending == 0
