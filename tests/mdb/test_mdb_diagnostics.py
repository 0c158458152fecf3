"""Changer level 3: EXPANSION SEND DIAGNOSTIC STATUS (0F 05) and its status codes."""

from __future__ import annotations

import json

from click.testing import CliRunner

from vendhw.cli import cli
from vendhw.devices.mdb import open_changer, parse_diagnostic_status


def test_codes_are_named_with_the_main_code_as_fallback() -> None:
    assert parse_diagnostic_status(bytes.fromhex("0300")) == [
        {"code": "0300", "status": "OK", "known": True}]
    found = parse_diagnostic_status(bytes.fromhex("1130" "0510" "1199" "7700" "15"))
    assert [(d["code"], d["status"], d["known"]) for d in found] == [
        ("1130", "coin jam in sensor", True),
        ("0510", "manual fill / payout active", True),
        ("1199", "discriminator module error (sub code 0x99)", False),
        ("7700", "unknown status 0x7700", False)]  # the odd last byte is ignored


def test_a_level_3_changer_reports_inhibited_then_ok() -> None:
    changer = open_changer("sim://mdb-changer")
    try:
        changer.start()  # leaves it disabled
        assert [d["status"] for d in changer.diagnostic_status() or []] == ["inhibited by VMC"]
        changer.enable()
        assert [d["code"] for d in changer.diagnostic_status() or []] == ["0300"]
        commands = changer.link.transport.simulator  # type: ignore[attr-defined]
        assert commands.diagnostic_codes() == b"\x03\x00"
    finally:
        changer.close()


def test_cash_status_shows_the_diagnostics() -> None:
    result = CliRunner().invoke(cli, ["cash", "status", "--port",
                                      "sim://mdb-changer?diagnostic=1130,1502", "--json"])
    assert result.exit_code == 0, result.output
    status = json.loads(result.output.splitlines()[0])
    assert [d["status"] for d in status["diagnostics"]] == ["coin jam in sensor",
                                                           "cassette removed"]
