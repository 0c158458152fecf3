"""ccTalk on the wire: every shared vector, corruption, stream hunting, the spec's dialogues
replayed through the host core, and the simulators' packet-level behaviour."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from vendhw.cli import cli
from vendhw.devices.cash import CashEventKind
from vendhw.devices.cctalk import CcTalkBillValidator, CcTalkBus, CcTalkCoinAcceptor, Op, Request
from vendhw.errors import ChecksumError, FramingError, LengthError
from vendhw.framing import Frame, get_framer
from vendhw.resources import protocol_vectors
from vendhw.sim import available, create
from vendhw.sim.cctalk import CcTalkCoinSimulator, CcTalkHopperSimulator
from vendhw.transport import SimTransport

K = CashEventKind
T = TypeVar("T")
VECTORS = protocol_vectors("cctalk")
VALID = [v for v in VECTORS if v.get("expect_valid", True)]
BAD = [v for v in VECTORS if not v.get("expect_valid", True)]


def framer_for(vector: dict[str, Any]) -> Any:
    return get_framer("cctalk", checksum=vector.get("checksum", "simple"))


# --- vectors ------------------------------------------------------------------------------------


def test_vector_file_holds_both_variants_and_the_spec_typos() -> None:
    spec = [v for v in VECTORS if not v.get("peer")]
    spec_bad = [v for v in BAD if not v.get("peer")]
    assert len(spec) == 74 and len(VECTORS) - len(spec) == 11  # + other implementations'
    assert any(v.get("checksum") == "crc16" for v in VALID)
    assert len(spec_bad) == 2 and all(not v["verified"] and v["notes"] for v in spec_bad)
    assert len(BAD) - len(spec_bad) == 3  # ccTalk4j's corrupt frames
    assert all(v["source"] and v["direction"] in ("host", "device") for v in VECTORS)


@pytest.mark.parametrize("vector", VALID, ids=[v["hex"][:32] for v in VALID])
def test_every_vector_decodes_names_its_command_and_corruption_is_caught(
        vector: dict[str, Any]) -> None:
    framer = framer_for(vector)
    raw = bytes.fromhex(vector["hex"])
    frame = framer.parse(raw, vector["direction"])
    assert frame["command"] and not frame["command"].startswith("HEADER ")
    fields = {k: frame[k] for k in ("dest", "header", "data")}
    if "src" in frame.fields:
        fields["src"] = frame["src"]
    assert framer.build(direction=frame.direction, **fields) == raw
    for pos in range(len(raw)):
        for mask in (0x01, 0x80, 0xFF):
            bad = bytearray(raw)
            bad[pos] ^= mask
            with pytest.raises(FramingError):
                framer.parse(bytes(bad), vector["direction"])


@pytest.mark.parametrize("vector", BAD, ids=[v["hex"] for v in BAD])
def test_known_bad_vectors_are_rejected(vector: dict[str, Any]) -> None:
    with pytest.raises((ChecksumError, LengthError)):
        framer_for(vector).parse(bytes.fromhex(vector["hex"]), vector["direction"])


def test_decode_cli_names_commands_and_replies() -> None:
    result = CliRunner().invoke(cli, ["decode", "cctalk", "--json", "02 00 01 E5 18",
                                      "01 00 02 00 FD", "01 00 02 05 F8"])
    assert result.exit_code == 0, result.output
    names = [json.loads(line)["command"] for line in result.stdout.splitlines()]
    assert names == ["READ BUFFERED CREDIT OR ERROR CODES", "ACK", "NAK"]


def test_reply_plausibility_rules() -> None:
    framer = get_framer("cctalk")
    nak_with_data = bytes.fromhex("01 01 02 05 00")
    assert framer.measure(nak_with_data, 0, "device") == -1
    from_host = framer.build(direction="device", dest=1, src=1, header=0)
    assert framer.measure(from_host, 0, "device") == -1
    ack = framer.build(direction="device", dest=1, src=2, header=0)
    assert framer.measure(ack, 0, "device") == 5


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80), st.integers(2, 255), st.binary(max_size=40),
       st.sampled_from(["simple", "crc16"]))
def test_after_50_ms_of_silence_any_noise_is_forgotten(noise: bytes, src: int, data: bytes,
                                                       checksum: str) -> None:
    """Part 1 §11: the receiver resets after 50 ms, so noise never hides the next reply."""
    framer = get_framer("cctalk", checksum=checksum)
    reply = framer.build(direction="device", dest=1, src=src, header=0, data=data)
    deframer = framer.deframer("device", gap=0.05)
    items = deframer.feed(noise, now=0.0)
    items = deframer.feed(reply, now=0.2) + deframer.flush()
    assert [i.raw for i in items if isinstance(i, Frame)] == [reply]
    assert deframer.pending == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(2, 255), st.binary(max_size=20)), max_size=6),
       st.sampled_from(["simple", "crc16"]))
def test_back_to_back_replies_in_any_chunking(replies: list[tuple[int, bytes]],
                                              checksum: str) -> None:
    framer = get_framer("cctalk", checksum=checksum)
    packets = [framer.build(direction="device", dest=1, src=s, header=0, data=d)
               for s, d in replies]
    stream = b"".join(packets)
    deframer = framer.deframer("device")
    items = []
    for i in range(0, len(stream), 3):
        items += deframer.feed(stream[i:i + 3])
    items += deframer.flush()
    assert [i.raw for i in items if isinstance(i, Frame)] == packets


# --- the spec's dialogues through the host core ---------------------------------------------------


def replay(op: Op[T], answers: Callable[[Request], bytes]) -> T:
    try:
        step = next(op)
        while True:
            step = op.send(None if not isinstance(step, Request) else answers(step))
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


def reply_data(hex_reply: str) -> bytes:
    return get_framer("cctalk").parse(bytes.fromhex(hex_reply), "device")["data"]


def test_appendix_11_credit_polls() -> None:
    dev = CcTalkCoinAcceptor(CcTalkBus(SimTransport(CcTalkCoinSimulator())),
                             coin_values={1: 200, 5: 0})
    dev.values = {1: 200, 2: 100, 3: 50}
    dev.counter.last = 0
    seen = []
    for hex_reply in ("01 0B 02 00 00 00 00 00 00 00 00 00 00 00 00 F2",
                      "01 0B 02 00 02 01 05 01 05 00 00 00 00 00 00 E4",
                      "01 0B 02 00 03 05 05 01 05 01 05 00 00 00 00 D9"):
        seen += replay(dev.poll_op(), lambda r, h=hex_reply: reply_data(h))
    assert [(e.kind, e.channel, e.detail["sorter_path"]) for e in seen] == [
        (K.CREDIT, 1, 5), (K.CREDIT, 1, 5), (K.CREDIT, 5, 5)]
    assert seen[-1].value == 0 and "unknown" in (seen[-1].reason or "")  # a token channel


def test_appendix_16_bill_events() -> None:
    dev = CcTalkBillValidator(CcTalkBus(SimTransport(CcTalkCoinSimulator())))
    dev.values = {1: 500, 2: 1000, 3: 2000}
    dev.counter.last = 0
    seen = []
    for hex_reply in ("01 0B 28 00 00 00 00 00 00 00 00 00 00 00 00 CC",
                      "01 0B 28 00 01 03 01 00 00 00 00 00 00 00 00 C7",
                      "01 0B 28 00 02 03 00 03 01 00 00 00 00 00 00 C3",
                      "01 0B 28 00 04 00 01 00 02 03 00 03 01 00 00 BE"):
        seen += replay(dev.poll_op(), lambda r, h=hex_reply: reply_data(h))
    assert [(e.kind, e.value) for e in seen] == [
        (K.ESCROW, 2000), (K.CREDIT, 2000), (K.REJECTED, 0), (K.RETURNED, 0)]
    again = CcTalkBillValidator(CcTalkBus(SimTransport(CcTalkCoinSimulator())))
    again.counter.last = 0
    seen = []
    for hex_reply in ("01 0B 28 00 02 FF 01 00 14 00 00 00 00 00 00 B6",
                      "01 0B 28 00 03 FF 00 FF 01 00 14 00 00 00 00 B6",
                      "01 0B 28 00 05 00 00 00 0E FF 00 FF 01 00 14 A6",
                      "01 0B 28 00 06 00 0B 00 00 00 0E FF 00 FF 01 AE"):
        seen += replay(again.poll_op(), lambda r, h=hex_reply: reply_data(h))
    assert [e.kind for e in seen] == [K.ESCROW, K.CREDIT, K.CASHBOX_FULL, K.DISABLED,
                                      K.CASHBOX_REMOVED]
    assert seen[0].detail["barcode"] and seen[1].value == 0


# --- simulators at packet level --------------------------------------------------------------


def ask(sim: Any, header: int, data: bytes = b"", *, dest: int = 2, now: float = 0.0,
        checksum: str = "simple") -> Frame | None:
    framer = get_framer("cctalk", checksum=checksum)
    replies = sim.receive(framer.build(direction="host", dest=dest, src=1, header=header,
                                       data=data), now)
    return framer.parse(replies[-1][1], "device") if replies else None


def test_power_up_defaults_as_a_real_coin_acceptor() -> None:
    sim = CcTalkCoinSimulator()
    assert ask(sim, 227)["data"] == b"\x00"  # type: ignore[index]  # master inhibit active
    assert ask(sim, 230)["data"] == b"\x00\x00"  # type: ignore[index]  # all coins inhibited
    credit = ask(sim, 229)
    assert credit is not None and credit["data"] == bytes(11)  # counter 0 after power-up
    assert ask(sim, 245)["data"] == b"Coin Acceptor"  # type: ignore[index]
    assert ask(sim, 184, b"\x06")["data"] == b"EU200A"  # type: ignore[index]
    assert ask(sim, 111)["command"] == "NAK"  # type: ignore[index]  # encryption: not here


def test_every_spec_request_to_address_2_gets_a_reply() -> None:
    sim = CcTalkCoinSimulator()
    framer = get_framer("cctalk")
    for vector in VALID:
        raw = bytes.fromhex(vector["hex"])
        if vector["direction"] != "host" or raw[0] != 2:
            continue
        replies = sim.receive(raw, 0.0)
        reply = framer.parse(replies[-1][1], "device")
        assert reply["dest"] == 1 and reply["src"] == 2 and reply["command"] in (
            "ACK", "REPLY", "NAK")


def test_bad_packets_other_addresses_and_broadcasts_get_no_answer() -> None:
    sim = CcTalkCoinSimulator()
    assert sim.receive(bytes.fromhex("02 00 01 FE 00"), 0.0) == []  # bad checksum
    assert ask(sim, 254, dest=3) is None
    assert ask(sim, 254, dest=0) is None
    ask(sim, 228, b"\x01")
    ask(sim, 1, dest=0)  # a broadcast reset is obeyed
    assert not sim.master_enabled


def test_partial_packet_is_dropped_after_50_ms() -> None:
    sim = CcTalkCoinSimulator()
    poll = bytes.fromhex("02 00 01 FE FF")
    assert sim.receive(poll[:3], 0.0) == []
    assert len(sim.receive(poll[3:], 0.01)) == 1  # the rest within 50 ms: answered
    assert sim.receive(poll[:3], 1.0) == []
    assert sim.receive(poll[3:], 1.2) == []  # too late: the receiver had reset
    assert len(sim.receive(poll, 1.3)) == 1


def test_crc16_simulator_and_echo() -> None:
    sim = CcTalkCoinSimulator(checksum="crc16", echo="1")
    packet = get_framer("cctalk", checksum="crc16").build(direction="host", dest=2, header=254)
    echo, reply = sim.receive(packet, 0.0)
    assert echo == (0.0, packet)
    assert get_framer("cctalk", checksum="crc16").parse(reply[1])["command"] == "ACK"


def test_hopper_dispense_count_survives_a_reset() -> None:
    sim = CcTalkHopperSimulator(coin_time=0.01, security="none")
    ask(sim, 164, b"\xa5", dest=3)
    counter = ask(sim, 167, b"\x03", dest=3)
    assert counter is not None and counter["data"] == b"\x01"
    status = ask(sim, 166, dest=3, now=1.0)
    assert status is not None and status["data"] == bytes((1, 0, 3, 0))
    ask(sim, 1, dest=3, now=1.0)
    assert ask(sim, 166, dest=3, now=1.1)["data"] == bytes(4)  # type: ignore[index]
    assert ask(sim, 168, dest=3, now=1.1)["data"] == b"\x03\x00\x00"  # type: ignore[index]
    assert ask(sim, 167, b"\x03", dest=3, now=1.2)["command"] == "NAK"  # type: ignore[index]


def test_simulators_are_listed_and_validate_faults() -> None:
    specs = available()
    for name in ("cctalk-coin", "cctalk-hopper", "cctalk-bill"):
        assert specs[name].kind == "cash" and specs[name].protocol == "cctalk"
    sim = create("cctalk-hopper", coins="5", jam="2")
    assert sim.inventory == 5 and sim.jam_after == 2  # type: ignore[attr-defined]
    with pytest.raises(KeyError, match="device faults: jam, reverse_limit, empty"):
        sim.set_fault("smoke")


def test_random_bytes_never_break_a_simulator() -> None:
    sim = CcTalkCoinSimulator()

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=300))
    def check(data: bytes) -> None:
        for _, reply in sim.receive(data, 0.0):  # never raises; every reply is a valid packet
            assert get_framer("cctalk").parse(reply, "device")["dest"] == 1

    check()
