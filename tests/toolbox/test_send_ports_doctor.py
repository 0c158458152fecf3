"""vendhw send (over ptys), vendhw ports and vendhw doctor."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from serial.tools.list_ports_common import ListPortInfo
from toolbox_helpers import json_lines, run, sim_process

from vendhw.tools.doctor import check_busy, check_latency, holders
from vendhw.tools.ports import PortEntry, guess_adapter
from vendhw.tools.send import build_request, danger, parse_raw
from vendhw.transport import PtyPair, SerialTransport

# -- send ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("sim", "args", "command", "reply"), [
    ("ssp", ["ssp", "GET SERIAL NUMBER"], "GET SERIAL NUMBER", "OK"),
    ("cctalk-coin", ["cctalk", "request manufacturer id"], "REQUEST MANUFACTURER ID", "REPLY"),
    ("mdb-changer", ["mdb", "SETUP"], "SETUP", "DATA"),
    ("board101", ["board101", "READ VERSION"], "READ VERSION", "VERSION"),
    ("easivend-column", ["easivend", "CHECK", "sn=7", "column=11"], "CHECK", "SUCCESS"),
    ("id003", ["id003", "--raw", "FC 05 11 27 56"], "STATUS REQUEST", "POWER UP"),
])
def test_send_builds_sends_and_decodes_the_reply(sim: str, args: list[str], command: str,
                                                 reply: str) -> None:
    with sim_process(sim) as port:
        done = run("send", *args, "-p", port, "--json")
    assert done.returncode == 0, done.stderr
    (row,) = json_lines(done.stdout)
    assert row["answered"] is True
    assert row["sent"]["command"] == command
    assert row["reply"]["command"] == reply
    assert row["reply"]["valid"] is True


def test_send_refuses_payout_and_motor_without_yes() -> None:
    with sim_process("cctalk-hopper") as port:
        refused = run("send", "cctalk", "-p", port, "--address", "3", "DISPENSE HOPPER COINS",
                      "01")
        status = run("send", "cctalk", "-p", port, "--address", "3",
                     "REQUEST HOPPER DISPENSE COUNT", "--json")
    assert refused.returncode == 2
    assert "pays out coins; add --yes" in refused.stderr
    # nothing was sent: the hopper's dispense counter is still 0
    assert json_lines(status.stdout)[0]["reply"]["data"] == "00 00 00"
    for args in (["board101", "START MOTOR"], ["ssp", "PAYOUT AMOUNT", "e8030000", "455552"],
                 ["easivend", "DISPENSE", "sn=1", "column=11"], ["mdb", "DISPENSE", "12"],
                 ["ssp", "--raw", "7F 80 08 33 E8 03 00 00 45 55 52 E6 99"],
                 ["ssp", "--raw", "01 02 03"]):
        done = run("send", *args, "-p", "/dev/null")
        assert done.returncode == 2, args
        assert "add --yes" in done.stderr, done.stderr


def test_send_danger_table() -> None:
    assert danger(build_request("ssp", "PAYOUT AMOUNT", ("e8030000", "455552"))) == "pays out"
    assert danger(build_request("ssp", "GET SERIAL NUMBER", ())) == ""
    assert danger(build_request("mdb", "EXPANSION", ("02", "05"))) == "pays out coins"
    assert danger(build_request("mdb", "SETUP", (), 0x30)) == ""
    assert danger(build_request("mdb", "ESCROW", ("01",), 0x30)) == "stacks or returns a bill"
    raw = build_request("cctalk", "DISPENSE HOPPER COINS", ("01",), 3).data
    assert danger(parse_raw("cctalk", raw)) == "pays out coins"


def test_send_silent_device_and_bad_input() -> None:
    with sim_process("ssp", "--fault", "silent") as port:
        silent = run("send", "ssp", "-p", port, "GET SERIAL NUMBER", "--timeout", "0.2")
    assert silent.returncode == 1
    assert "no reply to SSP SYNC within 0.2 s" in silent.stderr
    unknown = run("send", "ssp", "-p", "/dev/null", "GET SERIAL")
    assert unknown.returncode == 2
    assert "did you mean: GET SERIAL NUMBER" in unknown.stderr
    bad_hex = run("send", "ssp", "-p", "/dev/null", "--raw", "7G")
    assert bad_hex.returncode == 2 and "not hex" in bad_hex.stderr
    for done in (silent, unknown, bad_hex):
        assert "Traceback" not in done.stderr


def test_send_list() -> None:
    done = run("send", "ssp", "--list")
    assert "0x0C  GET SERIAL NUMBER" in done.stdout


# -- ports -----------------------------------------------------------------------------------


def test_adapter_table() -> None:
    assert guess_adapter(0x0403, 0x6001) == "FTDI FT232R"
    assert guess_adapter(0x1A86, 0x7523) == "WCH CH340"
    assert guess_adapter(0x10C4, 0xEA60) == "Silicon Labs CP210x"
    assert guess_adapter(0x067B, 0x2303) == "Prolific PL2303"
    assert guess_adapter(0x0403, 0x1234) == "FTDI"
    assert guess_adapter(None, None) == ""
    info = ListPortInfo("/dev/ttyUSB0")
    info.vid, info.pid, info.serial_number = 0x1A86, 0x7523, "A1B2"
    info.description = "USB Serial"
    entry = PortEntry.from_port_info(info).to_dict()
    assert entry["usb_id"] == "1A86:7523"
    assert entry["adapter"] == "WCH CH340"
    assert entry["serial_number"] == "A1B2"


def test_ports_cli_json_lists_a_pty() -> None:
    with PtyPair() as pair:
        done = run("ports", pair.port, "--json")
    assert done.returncode == 0, done.stderr
    rows = json_lines(done.stdout)
    (row,) = [r for r in rows if r["device"] == pair.port]
    assert row["description"].startswith("pseudo-terminal")
    assert set(row) == {"device", "usb_id", "serial_number", "description", "manufacturer",
                        "adapter", "location", "by_id", "identity"}
    missing = run("ports", "/dev/ttyNOSUCH9")
    assert missing.returncode == 1 and "no such port" in missing.stderr


# -- doctor ----------------------------------------------------------------------------------


def test_doctor_finds_a_busy_port() -> None:
    with sim_process("echo") as port:
        holder = SerialTransport(port)  # vendhw opens ports exclusively (a lock)
        try:
            done = run("doctor", "--port", port, "--json")
        finally:
            holder.close()
    assert done.returncode == 1
    rows = json_lines(done.stdout)
    (busy,) = [r for r in rows if r["check"] == "busy"]
    assert busy["status"] == "fail"
    assert "vendhw" in busy["detail"]  # the simulator's process holds it too
    assert "holds its lock" in busy["detail"]
    assert busy["port"] == port and busy["fix"]


def test_doctor_busy_check_names_the_holder_pid() -> None:
    import os
    import subprocess
    import sys

    with PtyPair() as pair:
        child = subprocess.Popen([sys.executable, "-c",
                                  f"import sys; f = open({pair.port!r}, 'rb'); sys.stdin.read()"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            assert child.stdout is not None
            for _ in range(200):  # wait for the child to have opened the port (no timing)
                if any(pid == child.pid for pid, _ in holders(pair.port)):
                    break
                os.sched_yield()
                child.poll()
            check = check_busy(pair.port)
        finally:
            child.communicate(b"", timeout=10)
    assert check.status == "fail"
    assert f"pid {child.pid}" in check.detail


def test_doctor_latency_timer(tmp_path: Path) -> None:
    devices = tmp_path / "bus" / "usb-serial" / "devices"
    (devices / "ttyUSB0").mkdir(parents=True)
    (devices / "ttyUSB0" / "latency_timer").write_text("16\n")
    (devices / "ttyUSB1").mkdir()
    (devices / "ttyUSB1" / "latency_timer").write_text("1\n")
    checks = check_latency(["/dev/ttyUSB0", "/dev/ttyUSB1"], sys_root=str(tmp_path))
    assert [c.status for c in checks] == ["warn", "ok"]
    assert "16 ms (the driver default)" in checks[0].detail
    assert "latency_timer" in checks[0].fix


def test_doctor_human_output_ends_with_a_verdict() -> None:
    done = run("doctor")
    assert done.stdout.rstrip().splitlines()[-1] in ("nothing wrong found",) or \
        done.stdout.rstrip().endswith("problem(s) found")
    assert "Traceback" not in done.stderr


def test_send_tells_unreadable_reply_from_no_reply() -> None:
    """A device at the wrong baud rate answers with bytes that are no frame: say so, with them."""
    noise = bytes.fromhex("F0 0F 80 FF 00 E0")
    with PtyPair() as pair:
        stop = threading.Event()

        def answer_with_noise() -> None:
            while not stop.is_set():
                if pair.master.read(0.1, gap=0.02):
                    pair.master.write(noise)

        thread = threading.Thread(target=answer_with_noise, daemon=True)
        thread.start()
        try:
            text = run("send", "cctalk", "-p", pair.port, "SIMPLE POLL", "--timeout", "0.5")
            as_json = run("send", "cctalk", "-p", pair.port, "SIMPLE POLL", "--timeout", "0.5",
                          "--json")
        finally:
            stop.set()
            thread.join(2)
    assert text.returncode == 1, text.stderr
    assert "6 bytes came back that are not cctalk frames: F0 0F 80 FF 00 E0" in text.stdout
    assert "wrong baud rate 9600" in text.stdout
    assert "no reply within" not in text.stdout
    record = json.loads(as_json.stdout.strip().splitlines()[-1])
    assert record["answered"] is False and record["unreadable_hex"] == "F0 0F 80 FF 00 E0"
