"""SETUP REQUEST layouts (vendhw.framing.ssp): declared once, read by the host's parse_setup
and built by the simulator. Round trips per unit type and protocol version, short and garbled
replies, the version-dependent fields, and equality with the parser they replaced."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from vendhw.devices.ssp import PAYOUT_UNITS, UNIT_TYPES, Channel, SetupInfo, parse_setup
from vendhw.errors import FramingError, UnexpectedReplyError
from vendhw.framing.ssp import (
    SETUP_HOPPER,
    SETUP_VALIDATOR,
    SspFramer,
    UnitType,
    setup_layout,
)
from vendhw.sim.ssp import VALUES, SspSimulator

ROOT = Path(__file__).resolve().parents[2]


# --- the parser before the layouts were declared (frozen copy, for the equality test) -------


def _old_ascii(data: bytes) -> str:
    return data.decode("ascii", "replace").strip("\0 ")


def _old_parse_setup(data: bytes) -> SetupInfo:
    try:
        unit = data[0]
        firmware = _old_ascii(data[1:5])
        country = _old_ascii(data[5:8])
        if unit == 0x03:
            version = data[8]
            n = data[9]
            values = [int.from_bytes(data[10 + 2 * i:12 + 2 * i], "little") for i in range(n)]
            pos = 10 + 2 * n
            if len(values) != n or pos > len(data):
                raise IndexError
            currencies = [country] * n
            if version >= 6 and len(data) >= pos + 3 * n:
                currencies = [_old_ascii(data[pos + 3 * i:pos + 3 * i + 3]) for i in range(n)]
            channels = [Channel(i + 1, v, c)
                        for i, (v, c) in enumerate(zip(values, currencies, strict=True))]
            return SetupInfo(unit, firmware, country, version, channels)
        multiplier = int.from_bytes(data[8:11], "big")
        n = data[11]
        short = list(data[12:12 + n])
        pos = 12 + 2 * n
        real = int.from_bytes(data[pos:pos + 3], "big") or 1
        version = data[pos + 3]
        pos += 4
        channels = []
        if version >= 6 and len(data) >= pos + 7 * n:
            for i in range(n):
                currency = _old_ascii(data[pos + 3 * i:pos + 3 * i + 3])
                base = pos + 3 * n + 4 * i
                value = int.from_bytes(data[base:base + 4], "little")
                channels.append(Channel(i + 1, value * real, currency))
        else:
            if len(short) != n:
                raise IndexError
            channels = [Channel(i + 1, v * (multiplier or 1) * real, country)
                        for i, v in enumerate(short)]
        return SetupInfo(unit, firmware, country, version, channels)
    except IndexError:
        raise UnexpectedReplyError(f"SETUP REQUEST reply too short: {data.hex(' ')}") from None


def _old_simulator_setup(currency: str, version: int) -> bytes:
    """The simulator's SETUP reply as it was written by hand before the layout."""
    n = len(VALUES)
    out = bytearray(b"\x06" + b"0420" + currency.encode())
    out += (1).to_bytes(3, "big") + bytes((n,))
    out += bytes(v // 100 for v in VALUES) + bytes((2,)) * n
    out += (100).to_bytes(3, "big") + bytes((version,))
    if version >= 6:
        out += currency.encode() * n
        out += b"".join((v // 100).to_bytes(4, "little") for v in VALUES)
    return bytes(out)


def _outcome(parse: Any, data: bytes) -> Any:
    try:
        return parse(data)
    except UnexpectedReplyError as exc:
        return (type(exc), str(exc))


# --- inputs --------------------------------------------------------------------------------


def _validator(rng: random.Random, unit: int, version: int, n: int) -> bytes:
    out = bytes((unit,)) + rng.randbytes(4) + rng.choice([b"EUR", b"GBP", rng.randbytes(3)])
    out += rng.randbytes(3) if rng.random() < 0.5 else rng.choice([0, 1, 100]).to_bytes(3, "big")
    out += bytes((n,)) + rng.randbytes(n) + rng.randbytes(n)
    out += rng.choice([0, 1, 100, rng.getrandbits(24)]).to_bytes(3, "big") + bytes((version,))
    out += rng.randbytes(3 * n) + rng.randbytes(4 * n)
    return out


def _hopper(rng: random.Random, version: int, n: int) -> bytes:
    out = b"\x03" + rng.randbytes(4) + rng.choice([b"EUR", b" US", rng.randbytes(3)])
    out += bytes((version, n)) + rng.randbytes(2 * n) + rng.randbytes(3 * n)
    return out


def _inputs(count: int, seed: int) -> list[bytes]:
    """Structured replies of every unit type and version, cut at every kind of boundary,
    with extra bytes, and plain random bytes."""
    rng = random.Random(seed)
    out: list[bytes] = [b"", b"\x00", b"\x03"]
    for _ in range(count):
        version = rng.choice([0, 4, 5, 6, 7, 8, 255, rng.randrange(256)])
        n = rng.choice([0, 1, 2, 7, 16, rng.randrange(256)])
        unit = rng.choice([0x00, 0x06, 0x07, 0x0D, rng.randrange(256)])
        full = _hopper(rng, version, n) if rng.random() < 0.4 else _validator(rng, unit,
                                                                               version, n)
        cut = rng.choice([len(full), len(full) + 1, len(full) - 1, rng.randrange(len(full) + 1),
                          len(full) - 4 * n, len(full) - 7 * n, len(full) - 3 * n,
                          len(full) - 7 * n - 1, len(full) - 3 * n - 1, 16 + 2 * n,
                          15 + 2 * n, 10 + 2 * n, 9 + 2 * n])
        data = full[:max(cut, 0)]
        if rng.random() < 0.2:
            data += rng.randbytes(rng.randrange(1, 6))
        out.append(data)
        out.append(rng.randbytes(rng.randrange(40)))
    return out


def _vector_setup_replies() -> list[bytes]:
    """The SETUP REQUEST reply among the GA138 packet examples (data after OK)."""
    vectors = json.loads((ROOT / "protocols/ssp/vectors.json").read_text(encoding="utf-8"))
    entries = vectors if isinstance(vectors, list) else vectors["vectors"]
    framer = SspFramer()
    found = []
    for entry in entries:
        if "Setup Request" in entry.get("meaning", "") and entry.get("direction") == "device":
            frame = framer.parse(bytes.fromhex(entry["hex"]), "device")
            found.append(bytes(frame["data"]))
    return found


# --- equality with the parser they replaced --------------------------------------------------


def test_the_ga138_example_reads_as_before() -> None:
    (example,) = _vector_setup_replies()
    info = parse_setup(example)
    assert info == _old_parse_setup(example)
    assert (info.unit, info.currency, info.protocol_version) == ("note validator", "GBP", 5)
    # GA138 prints the real value multiplier as 40 00 00 (read BE, as ssp-rs and the SDK do).
    assert [c.value for c in info.channels] == [5 * 0x400000, 10 * 0x400000, 20 * 0x400000]


def test_parse_setup_gives_what_the_old_parser_gave_for_every_input() -> None:
    inputs = _inputs(3000, seed=138) + _vector_setup_replies()
    accepted = 0
    for data in inputs:
        new, old = _outcome(parse_setup, data), _outcome(_old_parse_setup, data)
        assert new == old, data.hex(" ")
        accepted += isinstance(old, SetupInfo)
    # Both outcomes are well represented, so the comparison says something about each.
    assert accepted > 1000 and len(inputs) - accepted > 1000


# --- round trips: build, then parse, per unit type and protocol version ---------------------


def _validator_fields(unit: int, version: int) -> dict[str, Any]:
    return {"unit_type": unit, "firmware": b"0420", "country": b"EUR", "multiplier": 1,
            "count": 3, "values": bytes((5, 10, 20)), "security": bytes((2, 2, 2)),
            "real_multiplier": 100, "protocol_version": version,
            "expanded": {"currencies": [b"EUR", b"EUR", b"GBP"], "values": [5, 10, 50]}
            if version >= 6 else None}


@pytest.mark.parametrize("version", [4, 5, 6, 7, 8])
@pytest.mark.parametrize("unit", [UnitType.NOTE_VALIDATOR, UnitType.SMART_PAYOUT, UnitType.NV11,
                                  UnitType.TEBS])
def test_validator_layouts_round_trip(unit: UnitType, version: int) -> None:
    fields = _validator_fields(unit, version)
    data = setup_layout(unit).build(fields, "ssp")
    assert setup_layout(unit) is SETUP_VALIDATOR
    assert SETUP_VALIDATOR.build(SETUP_VALIDATOR.parse(data, "ssp"), "ssp") == data
    info = parse_setup(data)
    assert (info.unit_type, info.firmware, info.currency, info.protocol_version) == (
        unit, "0420", "EUR", version)
    if version >= 6:  # expanded value x real value multiplier, a currency per channel
        assert [(c.value, c.currency) for c in info.channels] == [
            (500, "EUR"), (1000, "EUR"), (5000, "GBP")]
        assert len(data) == 16 + 2 * 3 + 7 * 3
    else:  # the short value x both multipliers, the unit's country
        assert [(c.value, c.currency) for c in info.channels] == [
            (500, "EUR"), (1000, "EUR"), (2000, "EUR")]
        assert len(data) == 16 + 2 * 3


@pytest.mark.parametrize("version", [4, 5, 6, 7, 8])
def test_hopper_layout_round_trips(version: int) -> None:
    fields = {"unit_type": UnitType.SMART_HOPPER, "firmware": b"0110", "country": b"EUR",
              "protocol_version": version, "count": 2, "values": [5, 200],
              "currencies": [b"EUR", b"GBP"] if version >= 6 else None}
    data = SETUP_HOPPER.build(fields, "ssp")
    assert setup_layout(UnitType.SMART_HOPPER) is SETUP_HOPPER
    assert SETUP_HOPPER.build(SETUP_HOPPER.parse(data, "ssp"), "ssp") == data
    info = parse_setup(data)
    assert (info.unit, info.firmware, info.protocol_version) == ("SMART Hopper", "0110", version)
    currencies = ["EUR", "GBP"] if version >= 6 else ["EUR", "EUR"]
    assert [(c.value, c.currency) for c in info.channels] == list(zip([5, 200], currencies,
                                                                      strict=True))
    assert len(data) == 10 + 2 * 2 + (3 * 2 if version >= 6 else 0)


@pytest.mark.parametrize("version", [4, 5, 6, 7, 8])
def test_the_simulator_builds_its_reply_from_the_layout(version: int) -> None:
    sim = SspSimulator(max_version=8)
    sim.version = version
    data = sim._setup()
    assert data == _old_simulator_setup("EUR", version)  # the same bytes as before
    assert SETUP_VALIDATOR.build(SETUP_VALIDATOR.parse(data, "ssp"), "ssp") == data
    info = parse_setup(data)
    assert (info.unit, info.protocol_version) == ("SMART Payout", version)
    assert [c.value for c in info.channels] == list(VALUES)


# --- version-dependent fields ------------------------------------------------------------------


def test_the_expanded_table_is_read_only_from_protocol_6() -> None:
    v6 = SETUP_VALIDATOR.build(_validator_fields(UnitType.SMART_PAYOUT, 6), "ssp")
    as_v5 = bytearray(v6)
    as_v5[15 + 2 * 3] = 5  # the version byte: the same bytes follow, but version 5 has none
    reply = SETUP_VALIDATOR.parse(bytes(as_v5), "ssp")
    assert reply["expanded"] is None
    assert [c.value for c in parse_setup(bytes(as_v5)).channels] == [500, 1000, 2000]
    assert SETUP_VALIDATOR.parse(v6, "ssp")["expanded"]["values"] == [5, 10, 50]


def test_a_version_6_reply_cut_inside_the_expanded_table_keeps_the_short_values() -> None:
    v6 = SETUP_VALIDATOR.build(_validator_fields(UnitType.SMART_PAYOUT, 6), "ssp")
    for cut in range(16 + 2 * 3, len(v6)):
        reply = SETUP_VALIDATOR.parse(v6[:cut], "ssp")
        assert reply["expanded"] is None, cut
        assert [(c.value, c.currency) for c in parse_setup(v6[:cut]).channels] == [
            (500, "EUR"), (1000, "EUR"), (2000, "EUR")]


def test_hopper_currencies_only_from_protocol_6_and_only_when_complete() -> None:
    base = b"\x03" + b"0110" + b"EUR"
    v5 = base + b"\x05\x01" + b"\xc8\x00" + b"GBP"  # trailing bytes are no currency before 6
    assert SETUP_HOPPER.parse(v5, "ssp")["currencies"] is None
    assert parse_setup(v5).channels == [Channel(1, 200, "EUR")]
    v6_cut = base + b"\x06\x01" + b"\xc8\x00" + b"GB"
    assert parse_setup(v6_cut).channels == [Channel(1, 200, "EUR")]
    v6 = base + b"\x06\x01" + b"\xc8\x00" + b"GBP"
    assert parse_setup(v6).channels == [Channel(1, 200, "GBP")]


def test_a_zero_multiplier_counts_as_one() -> None:
    fields = _validator_fields(UnitType.NOTE_VALIDATOR, 5)
    fields.update(multiplier=0, real_multiplier=0)
    assert [c.value for c in parse_setup(SETUP_VALIDATOR.build(fields, "ssp")).channels] == [
        5, 10, 20]


# --- short and garbled replies -----------------------------------------------------------------


@pytest.mark.parametrize("unit", [UnitType.SMART_PAYOUT, UnitType.SMART_HOPPER])
def test_every_reply_shorter_than_its_layout_is_one_line_error(unit: UnitType) -> None:
    if unit == UnitType.SMART_HOPPER:
        data = SETUP_HOPPER.build({"unit_type": unit, "firmware": b"0110", "country": b"EUR",
                                   "protocol_version": 5, "count": 2, "values": [5, 200],
                                   "currencies": None}, "ssp")
    else:
        data = SETUP_VALIDATOR.build(_validator_fields(unit, 5), "ssp")
    for cut in range(len(data)):
        with pytest.raises(UnexpectedReplyError) as caught:
            parse_setup(data[:cut])
        assert "\n" not in str(caught.value)
        assert str(caught.value) == f"SETUP REQUEST reply too short: {data[:cut].hex(' ')}"
    assert parse_setup(data).protocol_version == 5


def test_a_garbled_reply_is_a_vendhw_error_not_a_crash() -> None:
    # A channel count of 0xFF with a handful of bytes behind it, and non-ASCII text fields.
    garbled = b"\x06\xff\xfe\x80\x00\x81\x82\x83" + b"\x00\x00\x01\xff" + bytes(10)
    with pytest.raises(UnexpectedReplyError, match="too short"):
        parse_setup(garbled)
    odd_text = b"\x00\xff\xfe\x80\x00\x81\x82\x83" + b"\x00\x00\x01\x00" + b"\x00\x00\x64\x05"
    info = parse_setup(odd_text)
    assert info.firmware == "\ufffd\ufffd\ufffd" and info.currency == "\ufffd\ufffd\ufffd"


def test_the_layouts_name_the_field_when_parsed_directly() -> None:
    with pytest.raises(FramingError, match="SETUP REQUEST reply"):
        SETUP_HOPPER.parse(b"\x03" + b"0110" + b"EUR" + b"\x06\x02\x05", "ssp")


def test_unit_type_codes_come_from_the_one_enum() -> None:
    assert set(UNIT_TYPES) == set(UnitType)
    assert UNIT_TYPES[3] == "SMART Hopper" and 0x06 in PAYOUT_UNITS
    assert SetupInfo(0x0D, "", "", 6).unit == "TEBS" and SetupInfo(0x42, "", "", 6).unit == (
        "unit type 0x42")


@pytest.mark.parametrize("country", [b"EURO", b"EU"])
def test_building_a_field_of_the_wrong_length_is_refused_not_written(country: bytes) -> None:
    """construct's compiled builder skips the Bytes length check: a 4-letter currency used to
    be written as is, shifting every later field of the simulator's SETUP reply."""
    fields = {**_validator_fields(UnitType.SMART_PAYOUT, 6), "country": country}
    with pytest.raises(FramingError, match="country"):
        SETUP_VALIDATOR.build(fields, "ssp")


def test_the_simulator_refuses_a_currency_that_is_not_three_letters() -> None:
    with pytest.raises(ValueError, match="3 letters"):
        SspSimulator(currency="EURO")
    assert SspSimulator(currency="usd").currency == "USD"
