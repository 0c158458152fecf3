"""`vendhw decode` keeps its contract: one JSON object per frame, exit codes 0/1/2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from vendhw.cli import cli
from vendhw.cli.decode import parse_hex


def run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["decode", *args], input=stdin)
    return result.exit_code, result.stdout, result.stderr


def test_json_one_object_per_frame() -> None:
    code, out, _ = run("mdb", "--direction", "host", "--json", "10 10", "0B0B")
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert [x["command"] for x in lines] == ["RESET", "POLL"]
    assert all(x["valid"] is True and x["error"] is None and x["hex"] for x in lines)
    assert lines[0]["device"] == "CASHLESS #1"


def test_invalid_frame_exit_1_and_error_message() -> None:
    code, out, _ = run("mdb", "--direction", "host", "--json", "10 10", "10 11")
    assert code == 1
    good, bad = (json.loads(line) for line in out.splitlines())
    assert good["valid"] and not bad["valid"]
    assert "expected 0x10" in bad["error"] and "received 0x11" in bad["error"]


def test_stdin_lines() -> None:
    code, out, _ = run("mdb", "--direction", "host", "--json", "-",
                       stdin="10 10\n\n# a comment\n0B 0B\n")
    assert code == 0 and len(out.splitlines()) == 2


def test_stream_reports_frames_and_garbage() -> None:
    from vendhw.framing import get_framer

    framer = get_framer("mdb")
    stream = "01 02 " + framer.build(direction="host", address=0x08, command=3).hex(" ")
    code, out, _ = run("mdb", "--direction", "host", "--stream", "--json", stream)
    items = [json.loads(line) for line in out.splitlines()]
    assert [i["valid"] for i in items] == [False, True]
    assert items[1]["command"] == "POLL"
    assert code == 1  # a garbage span is not a valid frame


@pytest.mark.parametrize("args", [("nosuch", "00"), ("mdb", "zz"), ("mdb", "123")])
def test_usage_errors_exit_2_with_one_line(args: tuple[str, ...]) -> None:
    code, out, err = run(*args)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error:")
    assert "Traceback" not in out + err


def test_human_output() -> None:
    code, out, _ = run("mdb", "--direction", "host", "10 10")
    assert code == 0 and out.startswith("ok") and "RESET" in out


def test_console_script_entry_point() -> None:
    result = subprocess.run([sys.executable, "-m", "vendhw", "decode", "mdb", "--direction",
                             "device", "--json", "00"], capture_output=True, text=True)
    assert result.returncode == 0
    assert json.loads(result.stdout)["command"] == "ACK"


@pytest.mark.parametrize(("text", "expected"), [
    ("7F 80 01 11 65 82", "7f8001116582"), ("7f8001116582", "7f8001116582"),
    ("0x7F,0x80", "7f80"), ("7F:80:1", "7f8001"),
])
def test_parse_hex_forms(text: str, expected: str) -> None:
    assert parse_hex(text).hex() == expected
