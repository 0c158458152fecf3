"""The three motor-board framers: golden vectors, corruption, round trips, streams, noise."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vendhw.errors import ChecksumError, LengthError, StartByteError, VendhwError
from vendhw.framing import Frame, Framer, Garbage, get_framer
from vendhw.resources import protocol_vectors

FAMILIES = ("fafb", "board101", "easivend")
CASES = [(p, v) for p in FAMILIES for v in protocol_vectors(p)]
IDS = [f"{p}:{v['hex'][:24]}" for p, v in CASES]


def rebuild(protocol: str, frame: Frame) -> bytes:
    framer = get_framer(protocol)
    f = frame.fields
    if protocol == "fafb":
        return framer.build(code=f["code"], pack_no=f["pack_no"], text=f["text"])
    if protocol == "board101":
        return framer.build(direction=frame.direction, code=f["code"], address=f["address"],
                            data=f["data"])
    if frame.direction == "device":
        return framer.build(direction="device", status=f["status"], sn=f["sn"], mt=f["mt"],
                            column=f["column"])
    return framer.build(direction="host", length=f["length"], sn=f["sn"], mt=f["mt"],
                        column=f["column"], d1=f["d1"], d2=f["d2"])


def test_every_family_has_vectors_with_sources() -> None:
    for protocol in FAMILIES:
        vectors = protocol_vectors(protocol)
        assert vectors, protocol
        for v in vectors:
            assert v["source"] and v["meaning"] and v["direction"] in ("host", "device")
            assert isinstance(v["verified"], bool)
            if not v["verified"]:
                assert "illustrative" in v["notes"]


@pytest.mark.parametrize(("protocol", "vector"), CASES, ids=IDS)
def test_vector_parses_names_its_command_and_rebuilds(protocol: str, vector: dict[str, Any]
                                                      ) -> None:
    raw = bytes.fromhex(vector["hex"])
    frame = get_framer(protocol).parse(raw, vector["direction"])
    assert frame.valid and frame.direction == vector["direction"]
    assert frame["command"] and not frame["command"].startswith(("CMD ", "MT "))
    assert isinstance(frame["code"], int)
    assert rebuild(protocol, frame) == raw


@pytest.mark.parametrize(("protocol", "vector"), CASES, ids=IDS)
def test_every_one_byte_corruption_is_rejected(protocol: str, vector: dict[str, Any]) -> None:
    framer = get_framer(protocol)
    raw = bytes.fromhex(vector["hex"])
    for pos in range(len(raw)):
        for mask in (0x01, 0x10, 0x80, 0xFF):
            bad = bytearray(raw)
            bad[pos] ^= mask
            with pytest.raises(VendhwError):
                framer.parse(bytes(bad), vector["direction"])


def test_vectors_decode_to_the_documented_fields() -> None:
    fafb = get_framer("fafb")
    drive = fafb.parse(bytes.fromhex("FA FB 06 05 01 01 00 00 0A 08"))
    assert (drive["pack_no"], drive["selection"], drive["drop_sensor"], drive["elevator"]) == \
        (1, 10, True, False)
    jam = fafb.parse(bytes.fromhex("FA FB 04 04 06 03 00 0A 0E"))
    assert (jam["status"], jam["status_text"], jam.direction) == (3, "selection jammed", "device")
    b101 = get_framer("board101")
    start = b101.parse(bytes.fromhex("01 05 0B 01 01" + " 00" * 13 + " B5 BF"))
    assert (start["motor_index"], start["motor_type"], start["light_type"]) == (11, 1, 1)
    easi = get_framer("easivend")
    check = easi.parse(bytes.fromhex("ED 08 02 72 05 00 00 90"))
    assert (check["command"], check["sn"], check["column"]) == ("CHECK", 2, 5)


def test_reply_fields_of_the_101_board() -> None:
    framer = get_framer("board101")
    raw = framer.build(direction="device", code=0x03, result=0, drop_time_ms=42)
    assert raw[0] == 0 and raw[4] == 0 and raw[11] == 42  # Data101ReviImpl byte positions
    frame = framer.parse(raw)
    assert frame.direction == "device"
    assert (frame["command"], frame["result"], frame["drop_time_ms"]) == ("VEND RESULT", 0, 42)
    version = framer.parse(framer.build(direction="device", code=0x01, version="V2.3"))
    assert version["version"] == "V2.3"


def test_errors_name_algorithm_expected_and_received() -> None:
    with pytest.raises(ChecksumError, match=r"8-bit XOR.*expected 0x40, received 0x41"):
        get_framer("fafb").parse(bytes.fromhex("FA FB 41 00 41"))
    bad = bytearray(bytes.fromhex("01 03" + " 00" * 16 + " D0 E8"))
    bad[-1] = 0
    with pytest.raises(ChecksumError, match=r"CRC-16/MODBUS.*expected 0xE8D0, received 0x00D0"):
        get_framer("board101").parse(bytes(bad))
    with pytest.raises(LengthError, match="LEN says 4 bytes"):
        get_framer("fafb").parse(bytes.fromhex("FA FB 01 04 01 00 0A 09"))
    with pytest.raises(StartByteError, match="EE"):
        get_framer("easivend").parse(bytes.fromhex("ED 08 01 70 05 00 00 91"), "device")
    with pytest.raises(LengthError, match="20 bytes"):
        get_framer("board101").parse(b"\x01\x03")


def test_build_refuses_bad_fields() -> None:
    with pytest.raises(VendhwError):
        get_framer("fafb").build(code=0x06, pack_no=300, selection=1)
    with pytest.raises(VendhwError):
        get_framer("fafb").build(code=0x06, text=b"\x01")  # text without a PackNO
    with pytest.raises(VendhwError):
        get_framer("board101").build(code=0x05, data=bytes(17))
    with pytest.raises(VendhwError):
        get_framer("easivend").build(sn=256, column=1)


# --- round trips --------------------------------------------------------------------------

byte = st.integers(0, 255)


@settings(max_examples=200, deadline=None)
@given(code=byte, pack=st.integers(1, 255), text=st.binary(max_size=254))
def test_fafb_round_trip(code: int, pack: int, text: bytes) -> None:
    framer = get_framer("fafb")
    raw = framer.build(code=code, pack_no=pack, text=text)
    frame = framer.parse(raw)
    assert (frame["code"], frame["pack_no"], frame["text"]) == (code, pack, text)
    assert framer.measure(raw, 0, None) == len(raw)


@settings(max_examples=200, deadline=None)
@given(address=byte, code=byte, data=st.binary(max_size=16),
       direction=st.sampled_from(["host", "device"]))
def test_board101_round_trip(address: int, code: int, data: bytes, direction: str) -> None:
    framer = get_framer("board101")
    raw = framer.build(direction=direction, address=address, code=code, data=data)  # type: ignore[arg-type]
    frame = framer.parse(raw, direction)  # type: ignore[arg-type]
    assert (frame["address"], frame["code"], frame["data"]) == \
        (address, code, data.ljust(16, b"\x00"))


@settings(max_examples=200, deadline=None)
@given(sn=byte, mt=byte, column=byte, d1=byte, d2=byte, status=byte)
def test_easivend_round_trip(sn: int, mt: int, column: int, d1: int, d2: int,
                             status: int) -> None:
    framer = get_framer("easivend")
    req = framer.parse(framer.build(direction="host", sn=sn, mt=mt, column=column, d1=d1, d2=d2))
    assert (req["sn"], req["mt"], req["column"], req["d1"], req["d2"]) == (sn, mt, column, d1, d2)
    rep = framer.parse(framer.build(direction="device", status=status, sn=sn, mt=mt,
                                    column=column))
    assert (rep["status"], rep["sn"], rep["mt"], rep["column"]) == (status, sn, mt, column)
    assert rep["command"] == ("SUCCESS" if status == 0 else "/".join(rep["flags"]))


# --- noise ----------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", FAMILIES)
@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=300), direction=st.sampled_from([None, "host", "device"]))
def test_random_bytes_only_raise_vendhw_errors(protocol: str, data: bytes,
                                               direction: str | None) -> None:
    framer = get_framer(protocol)
    try:
        frame = framer.parse(data, direction)  # type: ignore[arg-type]
    except VendhwError:
        return
    assert frame.raw == data


@pytest.mark.parametrize("protocol", FAMILIES)
@settings(max_examples=100, deadline=None)
@given(chunks=st.lists(st.binary(max_size=64), max_size=12),
       direction=st.sampled_from([None, "host", "device"]))
def test_random_streams_never_raise_and_stay_bounded(protocol: str, chunks: list[bytes],
                                                     direction: str | None) -> None:
    deframer = get_framer(protocol).deframer(direction)  # type: ignore[arg-type]
    total = 0
    for chunk in chunks:
        for item in deframer.feed(chunk):
            total += len(item.raw)
        assert deframer.pending <= 260 + 64
    for item in deframer.flush():
        total += len(item.raw)
    assert total == sum(len(c) for c in chunks)


def _frames(protocol: str) -> tuple[Framer, str, list[bytes]]:
    framer = get_framer(protocol)
    if protocol == "fafb":
        return framer, "device", [framer.build(code=0x41),
                                  framer.build(code=0x04, pack_no=7, status=2, selection=10),
                                  framer.build(code=0x54, pack_no=8, status=0)]
    if protocol == "board101":
        return framer, "device", [framer.build(direction="device", code=c, result=1)
                                  for c in (0x03, 0x05, 0x1B)]
    return framer, "device", [framer.build(direction="device", status=s, sn=s + 1, mt=0x70,
                                           column=3) for s in (0, 0x21, 0x02)]


@pytest.mark.parametrize("protocol", FAMILIES)
def test_stream_with_garbage_split_at_every_offset(protocol: str) -> None:
    framer, direction, frames = _frames(protocol)
    stream = b"\x13\x37" + frames[0] + b"\x99" + frames[1] + frames[2] + b"\x42"
    for cut in range(len(stream) + 1):
        deframer = framer.deframer(direction)  # type: ignore[arg-type]
        items = deframer.feed(stream[:cut]) + deframer.feed(stream[cut:]) + deframer.flush()
        found = [i.raw for i in items if isinstance(i, Frame)]
        assert found == frames, cut
        assert b"".join(i.raw for i in items if isinstance(i, Garbage)) == b"\x13\x37\x99\x42"
