"""vendhw monitor (tap and one-wire, mixed streams), replay and decode --capture."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from toolbox_helpers import VENDHW, json_lines, run

from vendhw.tools.stream import read_capture
from vendhw.transport import PtyPair


@pytest.fixture(scope="module")
def ssp_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real session: the SSP driver starting and polling the simulator, captured."""
    from vendhw.devices.ssp import open_device

    path = tmp_path_factory.mktemp("cap") / "ssp.jsonl"
    device = open_device("sim://ssp", capture=str(path))
    device.start()
    device.poll()
    device.close()
    return path


@pytest.fixture(scope="module")
def cctalk_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vendhw.devices import cctalk

    path = tmp_path_factory.mktemp("cap") / "cctalk.jsonl"
    device = cctalk.open_device("sim://cctalk-coin?auto_insert=1", capture=str(path))
    device.start()
    device.enable()
    device.poll()
    device.close()
    return path


def _by_direction(rows: list[dict[str, object]]) -> dict[str, str]:
    out = {"tx": "", "rx": ""}
    for row in rows:
        if "hex" in row:
            out[str(row["dir"])] += str(row["hex"]).replace(" ", "").lower()
    return out


def test_replay_reproduces_the_capture(ssp_capture: Path) -> None:
    done = run("replay", str(ssp_capture), "--json")
    assert done.returncode == 0, done.stderr
    rows = json_lines(done.stdout)
    summary = rows.pop()["summary"]
    assert summary["garbage_bytes"] == 0 and summary["checksum_errors"] == 0
    assert all(r["valid"] and r["protocol"] == "ssp" for r in rows)
    records = read_capture(ssp_capture)
    assert _by_direction(rows) == {d: "".join(r.data.hex() for r in records if r.dir == d)
                                   for d in ("tx", "rx")}
    assert rows[0]["command"] == "SYNC" and rows[0]["direction"] == "host"
    assert rows[1]["command"] == "OK" and rows[1]["direction"] == "device"
    assert rows[1]["gap_ms"] >= 0


def test_replay_human_output_guesses_the_protocol(cctalk_capture: Path) -> None:
    done = run("replay", str(cctalk_capture))
    assert done.returncode == 0, done.stderr
    assert "SIMPLE POLL" in done.stdout and "host" in done.stdout and "device" in done.stdout
    assert "protocol: cctalk" in done.stderr


def test_decode_reads_a_capture(ssp_capture: Path) -> None:
    done = run("decode", "ssp", "--capture", str(ssp_capture), "--json")
    assert done.returncode == 0, done.stderr
    rows = json_lines(done.stdout)
    assert len(rows) == len(read_capture(ssp_capture))
    assert rows[0]["command"] == "SYNC"


def test_bad_capture_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"t": 0, "dir": "up", "hex": "00"}\n')
    for args in (["replay", str(bad)], ["decode", "ssp", "--capture", str(bad)],
                 ["replay", str(tmp_path / "missing.jsonl")]):
        done = run(*args)
        assert done.returncode in (1, 2)
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr


def _start_monitor(*args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([VENDHW, "monitor", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={"NO_COLOR": "1",
                                                                   "PATH": "/usr/bin:/bin"})
    assert proc.stderr is not None
    ready = proc.stderr.readline()
    assert ready.startswith("# listening on"), ready + proc.stderr.read()
    return proc


def test_monitor_tap_decodes_both_directions_and_captures(ssp_capture: Path,
                                                          tmp_path: Path) -> None:
    records = read_capture(ssp_capture)
    out = tmp_path / "monitor.jsonl"
    with PtyPair() as host_side, PtyPair() as device_side:
        proc = _start_monitor(host_side.port, "--tap", device_side.port, "--protocol", "ssp",
                              "--json", "--count", str(len(records)), "--capture", str(out))
        for record in records:  # the tap: host bytes on one port, device bytes on the other
            (host_side if record.dir == "tx" else device_side).master.write(record.data)
        stdout, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 0, stderr
    rows = json_lines(stdout)
    summary = rows.pop()["summary"]
    assert summary == {"frames": len(records), "garbage_bytes": 0, "checksum_errors": 0}
    assert {r["direction"] for r in rows if r["dir"] == "tx"} == {"host"}
    assert {r["direction"] for r in rows if r["dir"] == "rx"} == {"device"}
    assert _by_direction(rows) == _by_direction(
        [{"dir": r.dir, "hex": r.data.hex()} for r in records])
    # the monitor's own capture replays to the same frames
    replayed = json_lines(run("replay", str(out), "--json", "--protocol", "ssp").stdout)
    assert [r["hex"] for r in replayed[:-1]] == [r["hex"] for r in rows]


def test_monitor_one_wire_mixed_stream_counts_garbage_and_checksums(
        cctalk_capture: Path) -> None:
    records = read_capture(cctalk_capture)
    stream = bytearray()
    for record in records:
        stream += record.data
    frames_sent = len(records)
    bad = bytearray(records[0].data)
    bad[-1] ^= 0xFF  # a checksum error
    noise = b"\xaa\x55\x13"
    with PtyPair() as line:
        proc = _start_monitor(line.port, "--protocol", "cctalk", "--json",
                              "--count", str(frames_sent))
        line.master.write(noise + bytes(bad) + bytes(stream))
        stdout, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 1, stderr  # garbage was seen
    rows = json_lines(stdout)
    summary = rows.pop()["summary"]
    assert summary["frames"] == frames_sent
    assert summary["checksum_errors"] >= 1
    assert summary["garbage_bytes"] >= len(noise) + len(bad)
    frames = [r for r in rows if r["valid"]]
    assert {f["direction"] for f in frames} == {"host", "device"}
    assert any(not r["valid"] for r in rows)


def test_monitor_sigint_exits_130_with_counters() -> None:
    with PtyPair() as line:
        proc = _start_monitor(line.port, "--protocol", "ssp")
        line.master.write(bytes.fromhex("7f8001116582"))
        assert proc.stdout is not None
        first = proc.stdout.readline()
        proc.send_signal(2)
        _, stderr = proc.communicate(timeout=10)
    assert "SYNC" in first
    assert proc.returncode == 130
    assert "# 1 frames, 0 garbage bytes, 0 checksum errors" in stderr
    assert "Aborted" not in stderr and "Traceback" not in stderr


def test_monitor_needs_a_protocol() -> None:
    done = run("monitor", "/dev/null")
    assert done.returncode == 2 and "--protocol" in done.stderr
    assert json.dumps  # keep the import used


def test_monitor_live_between_a_host_and_a_simulator(tmp_path: Path) -> None:
    """A real host (vendhw cash status) talks to the SSP simulator through a tap cable."""
    from toolbox_helpers import SoftTap, sim_process

    capture = tmp_path / "live.jsonl"
    with sim_process("ssp") as device_port, SoftTap(device_port) as tap:
        proc = _start_monitor(tap.host_tap.port, "--tap", tap.device_tap.port, "--protocol",
                              "ssp", "--json", "--capture", str(capture), "--count", "6")
        host = run("cash", "status", "-p", tap.port, "--protocol", "ssp", "--json")
        assert host.returncode == 0, host.stderr
        stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    rows = json_lines(stdout)[:-1]
    assert [r["command"] for r in rows[:2]] == ["SYNC", "OK"]
    assert [r["direction"] for r in rows[:2]] == ["host", "device"]
    assert all(r["valid"] for r in rows)
    assert len(read_capture(capture)) >= 6
