"""Random input never breaks the DEX parser, the link engines or the cashless pieces."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vendhw.devices.mdb_cashless import parse_poll
from vendhw.dex import DexMaster, DexSlave, parse_all
from vendhw.dex.report import DexFormatError
from vendhw.framing.mdb import MdbFramer
from vendhw.sim.mdb_cashless import MdbCashlessSimulator


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400))
def test_parser_raises_only_its_own_error(text: str) -> None:
    try:
        for doc in parse_all(text):
            assert isinstance(doc.valid, bool)
    except DexFormatError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=10))
def test_link_engines_take_any_bytes(chunks: list[bytes]) -> None:
    master, slave = DexMaster(), DexSlave(b"DXS*1\r\n", "MACHINE001")
    master.start(0.0)
    for i, chunk in enumerate(chunks):
        assert isinstance(master.receive(chunk, float(i)), bytes)
        assert isinstance(slave.receive(chunk, float(i)), bytes)
        if master.deadline is not None:
            master.expire(master.deadline)
        if slave.deadline is not None:
            slave.expire(slave.deadline)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40), st.integers(1, 3))
def test_poll_walker_takes_any_reply(data: bytes, level: int) -> None:
    events = parse_poll(data, level=level)
    assert b"".join(e.raw for e in events) == data  # every byte is accounted for, once


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_cashless_simulator_answers_only_valid_blocks(data: bytes) -> None:
    sim = MdbCashlessSimulator()
    framer = MdbFramer(wire="9bit")
    for _, reply in sim.receive(data, 0.0):
        framer.parse(reply, "device")  # never raises: a well-formed MDB reply


@pytest.mark.parametrize(("level", "kinds"), [
    (1, ["just_reset", "out_of_sequence", "display_request"]),  # level 1: 0B is one byte
    (2, ["just_reset", "out_of_sequence", "malfunction"]),
    (3, ["just_reset", "out_of_sequence", "malfunction"])])
def test_poll_walker_lengths_follow_the_level(level: int, kinds: list[str]) -> None:
    reply = bytes.fromhex("00" "0B02" "0A05")
    assert [e.kind for e in parse_poll(reply, level=level)] == kinds
