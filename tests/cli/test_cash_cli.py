"""``vendhw cash status|accept|payout`` through click's CliRunner, against simulators."""

from __future__ import annotations

import json
import sys
import types
from typing import Any

import pytest
from click.testing import CliRunner, Result

from vendhw.cli import cli
from vendhw.cli.cash import MAX_POLL_FAILURES, open_cash_device
from vendhw.errors import ChecksumError, ConfigurationError
from vendhw.sim.cctalk import CcTalkCoinSimulator
from vendhw.transport import SimulatorOnPty


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, ["cash", *args])


def lines(result: Result) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_status_json_reports_identity_and_power_up_state() -> None:
    result = run("status", "--port", "sim://cctalk-coin", "--protocol", "cctalk-coin", "--json")
    assert result.exit_code == 0, result.output
    (info,) = lines(result)
    assert info["category"] == "Coin Acceptor" and info["currency"] == "EUR"
    assert info["values"]["6"] == 200 and info["master_inhibit"] is True


def test_status_human_and_protocol_guessed_from_sim_url() -> None:
    result = run("status", "--port", "sim://cctalk-hopper")
    assert result.exit_code == 0, result.output
    assert "coin_value: 100" in result.stdout and "Payout" in result.stdout


def test_accept_prints_each_coin_as_json() -> None:
    result = run("accept", "--port", "sim://cctalk-coin?auto_insert=1,6&insert_interval=0.05",
                 "--protocol", "cctalk-coin", "--seconds", "1", "--interval", "0.05", "--json")
    assert result.exit_code == 0, result.output
    events = lines(result)
    assert [(e["kind"], e["value"], e["currency"]) for e in events] == [
        ("credit", 5, "EUR"), ("credit", 200, "EUR")]
    assert all(e["event_id"] for e in events)


def test_accept_stacks_escrowed_notes_by_default_and_can_return_them() -> None:
    port = "sim://cctalk-bill?auto_insert=2&insert_interval=0.05"
    stacked = run("accept", "--port", port, "--protocol", "cctalk-bill", "--seconds", "1",
                  "--interval", "0.05", "--json")
    assert stacked.exit_code == 0, stacked.output
    assert [e["kind"] for e in lines(stacked)] == ["escrow", "credit"]
    returned = run("accept", "--port", port, "--protocol", "cctalk-bill", "--seconds", "1",
                   "--interval", "0.05", "--escrow", "return")
    assert returned.exit_code == 0, returned.output
    assert "escrow" in returned.stdout and "returned" in returned.stdout
    assert "credited: nothing" in returned.stderr


def test_payout_done_exit_0_and_incomplete_exit_1() -> None:
    done = run("payout", "300", "--port", "sim://cctalk-hopper?coin_time=0.01",
               "--protocol", "cctalk-hopper", "--interval", "0.02", "--json")
    assert done.exit_code == 0, done.output
    assert [e["kind"] for e in lines(done)][-1] == "payout_done"
    cut = run("payout", "500", "--port",
              "sim://cctalk-hopper?coin_time=0.01&reset_during_payout=2",
              "--protocol", "cctalk-hopper", "--interval", "0.02", "--json")
    assert cut.exit_code == 1
    kinds = [e["kind"] for e in lines(cut)]
    assert kinds[-2:] == ["device_reset", "payout_incomplete"]
    assert lines(cut)[-1]["value"] == 200


def test_payout_rides_out_noisy_polls_and_gives_up_on_a_dead_line(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A corrupt poll reply must not end a payout the hopper carries on with."""
    bad_polls = {"left": 0}
    fake = types.ModuleType("vendhw.devices.ssp")

    def open_device(url: str, **options: Any) -> Any:
        from vendhw.devices.cctalk import open_hopper
        hopper = open_hopper("sim://cctalk-hopper?coin_time=0.01")
        real_poll = hopper.poll

        def noisy_poll(sink: Any = None) -> Any:
            if bad_polls["left"] > 0:
                bad_polls["left"] -= 1
                raise ChecksumError(protocol="cctalk", algorithm="simple", expected=0x12,
                                    received=0x13, width=1)
            return real_poll(sink)

        hopper.poll = noisy_poll  # type: ignore[method-assign]
        return hopper

    fake.open_device = open_device  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vendhw.devices.ssp", fake)
    args = ("payout", "300", "--port", "/dev/ttyACM0", "--protocol", "ssp", "--interval", "0.02",
            "--json")
    bad_polls["left"] = MAX_POLL_FAILURES - 1
    noisy = run(*args)
    assert noisy.exit_code == 0, noisy.output
    assert [e["kind"] for e in lines(noisy)][-1] == "payout_done"
    assert noisy.stderr.count("warning: poll failed") == MAX_POLL_FAILURES - 1
    bad_polls["left"] = MAX_POLL_FAILURES
    dead = run(*args)
    assert dead.exit_code == 1 and "checksum" in dead.stderr.lower()


def test_payout_on_a_coin_acceptor_is_a_clear_error() -> None:
    result = run("payout", "100", "--port", "sim://cctalk-coin", "--protocol", "cctalk-coin")
    assert result.exit_code == 2  # NotSupportedError: the wrong device for the command
    assert "cannot pay out" in result.stderr and "Traceback" not in result.output


def test_driver_options_pass_through() -> None:
    result = run("status", "--port", "sim://cctalk-coin", "--protocol", "cctalk-coin",
                 "-o", "checksum=crc16", "--json")
    assert result.exit_code == 0, result.output
    bad = run("status", "--port", "sim://cctalk-coin", "--protocol", "cctalk-coin", "-o",
              "checksum=crc8")
    assert bad.exit_code == 2 and "crc8" in bad.stderr


def test_missing_protocol_module_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vendhw.devices.id003", None)  # as if not installed
    result = run("status", "--port", "/dev/ttyUSB0", "--protocol", "id003")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[0] == (
        "error: protocol 'id003' is not available in this installation "
        "(vendhw.devices.id003 is missing)")


def test_other_protocols_open_through_their_module(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []
    fake = types.ModuleType("vendhw.devices.ssp")

    def open_device(url: str, **options: Any) -> Any:
        calls.append((url, options))
        from vendhw.devices.cctalk import open_coin_acceptor
        return open_coin_acceptor("sim://cctalk-coin")

    fake.open_device = open_device  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vendhw.devices.ssp", fake)
    result = run("status", "--port", "/dev/ttyACM0", "--protocol", "ssp", "-o", "key=1", "--json")
    assert result.exit_code == 0, result.output
    assert calls == [("/dev/ttyACM0", {"key": "1"})]
    with pytest.raises(ConfigurationError, match="unknown cash protocol"):
        open_cash_device("ccnet", "/dev/ttyUSB0")


def test_usage_errors_exit_2() -> None:
    no_protocol = run("status", "--port", "/dev/ttyUSB0")
    assert no_protocol.exit_code == 2 and "--protocol" in no_protocol.output
    bad_amount = run("payout", "0", "--port", "sim://cctalk-hopper")
    assert bad_amount.exit_code == 2


def test_silent_device_exit_1_names_port() -> None:
    result = run("status", "--port", "sim://cctalk-coin?silent=1", "--protocol", "cctalk-coin",
                 "-o", "reply_timeout=0.02")
    assert result.exit_code == 1
    assert "did not answer SIMPLE POLL" in result.stderr and "sim://cctalk-coin" in result.stderr
    assert "hint:" in result.stderr


def test_accept_over_a_pty() -> None:
    with SimulatorOnPty(CcTalkCoinSimulator(auto_insert="5", insert_interval=0.05)) as served:
        result = run("accept", "--port", served.port, "--protocol", "cctalk-coin", "--seconds", "1",
                     "--interval", "0.05", "--json")
    assert result.exit_code == 0, result.output
    assert [(e["kind"], e["value"]) for e in lines(result)] == [("credit", 100)]
