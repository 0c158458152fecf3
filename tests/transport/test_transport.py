"""Transports: deadlines, the inter-byte gap rule, errors, tracing and capture."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from vendhw.errors import ConfigurationError, DisconnectedError, PortBusyError, PortNotFoundError
from vendhw.sim.base import Reply, Simulator
from vendhw.sim.echo import EchoSimulator
from vendhw.transport import PtyPair, SimTransport, SimulatorOnPty, open_transport


class TwoBursts(Simulator):
    """Answers with two bursts `gap` apart: checks that read() joins or splits them."""

    name = "two-bursts"
    kind = "test"
    protocol = "raw"

    def __init__(self, gap: float) -> None:
        super().__init__()
        self.gap = gap

    def receive(self, data: bytes, now: float) -> list[Reply]:
        return [(0.0, b"AB"), (self.gap, b"CD")]


def test_sim_transport_echo_and_silence() -> None:
    t = open_transport("sim://echo")
    t.write(b"hello")
    assert t.read(1.0) == b"hello"
    assert t.read(0.05) == b""  # silence is not an error at this layer


def test_gap_rule_joins_a_burst_with_short_gaps() -> None:
    t = SimTransport(TwoBursts(gap=0.01))
    t.write(b"x")
    assert t.read(1.0, gap=0.5) == b"ABCD"


def test_without_gap_read_returns_first_burst_only() -> None:
    t = SimTransport(TwoBursts(gap=0.3))
    t.write(b"x")
    assert t.read(1.0) == b"AB"
    assert t.read(1.0) == b"CD"


def test_sim_url_options_set_line_faults() -> None:
    t = open_transport("sim://echo?silent=1")
    t.write(b"x")
    assert t.read(0.05) == b""
    t = open_transport("sim://echo?garbage=EEEE")
    t.write(b"x")
    assert t.read(1.0, gap=0.05) == b"\xee\xeex"


def test_unknown_simulator_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="known simulators"):
        open_transport("sim://no-such-device")


def test_loop_url() -> None:
    t = open_transport("loop://", baudrate=9600)
    t.write(b"\x01\x02\x03")
    assert t.read(1.0, gap=0.01) == b"\x01\x02\x03"
    t.close()
    t.close()  # twice is fine


def test_missing_port() -> None:
    with pytest.raises(PortNotFoundError, match="/dev/ttyNOPE"):
        open_transport("/dev/ttyNOPE")


def test_port_is_opened_exclusively() -> None:
    with PtyPair() as pair:
        first = open_transport(pair.port)
        try:
            with pytest.raises(PortBusyError):
                open_transport(pair.port)
        finally:
            first.close()


def test_pty_round_trip_and_gap() -> None:
    with SimulatorOnPty(EchoSimulator()) as served:
        t = open_transport(served.port, baudrate=57600)
        for size in (1, 10, 200):
            payload = bytes(range(size))
            t.write(payload)
            got = b""
            while len(got) < size:
                chunk = t.read(2.0, gap=0.05)
                assert chunk, "echo went silent"
                got += chunk
            assert got == payload
        t.close()


def test_pty_peer_closing_is_disconnected_error() -> None:
    pair = PtyPair()
    t = open_transport(pair.port)
    pair.close()
    with pytest.raises(DisconnectedError):
        for _ in range(3):
            t.read(0.5)
    t.close()


def test_trace_and_capture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capture = tmp_path / "cap.jsonl"
    t = open_transport("sim://echo", trace=True, capture=str(capture))
    t.write(b"\x7f\x80")
    assert t.read(1.0) == b"\x7f\x80"
    t.close()
    err = capsys.readouterr().err
    assert "TX sim://echo 2 bytes: 7F 80" in err and "RX sim://echo 2 bytes: 7F 80" in err
    records = [json.loads(line) for line in capture.read_text().splitlines()]
    assert [(r["dir"], r["hex"]) for r in records] == [("tx", "7f80"), ("rx", "7f80")]
    assert all(isinstance(r["t"], float) for r in records)


def test_trace_from_environment(monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("VENDHW_TRACE", "1")
    t = open_transport("sim://echo")
    t.write(b"\x01")
    t.read(1.0)
    assert "TRACE" in capsys.readouterr().err


def test_read_from_another_thread_wakes_on_write() -> None:
    t = open_transport("sim://echo")
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(t.read(5.0)))
    reader.start()
    t.write(b"wake")
    reader.join(5.0)
    assert got == [b"wake"]


def test_discard_input_returns_stale_bytes() -> None:
    t = open_transport("sim://echo")
    t.write(b"stale")
    assert t.discard_input() == b"stale"
    assert t.read(0.01) == b""


def test_fd_transport_is_selectable() -> None:
    with PtyPair() as pair:
        fd = pair.master.fileno()
        assert isinstance(fd, int) and os.isatty(fd)


def test_capture_then_replay_reproduces_a_session(tmp_path: Path) -> None:
    from vendhw.devices.mdb import MdbCoinChanger, MdbLink
    from vendhw.errors import ProtocolError
    from vendhw.sim.mdb import MdbChangerSimulator

    capture = tmp_path / "session.jsonl"
    live = SimTransport(MdbChangerSimulator(auto_insert="4"), capture=str(capture))
    dev = MdbCoinChanger(MdbLink(live, response_timeout=0.1))
    dev.start()
    dev.enable()
    recorded = dev.poll()
    live.close()

    replay = open_transport(f"replay://{capture}", strict=True)
    again = MdbCoinChanger(MdbLink(replay, response_timeout=0.1))
    again.start()
    again.enable()
    replayed = again.poll()
    assert [(e.kind, e.value) for e in replayed] == [(e.kind, e.value) for e in recorded]
    assert replay.remaining == 0  # type: ignore[attr-defined]

    diverging = open_transport(f"replay://{capture}", strict=True)
    with pytest.raises(ProtocolError, match="the capture has"):
        diverging.write(b"\x01\x02")


def test_replay_of_a_missing_file() -> None:
    with pytest.raises(ConfigurationError, match="no capture file"):
        open_transport("replay:///nonexistent.jsonl")
