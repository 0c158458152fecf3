"""One set of conventions across vendhw's commands, each as a new user would meet it."""

from __future__ import annotations

import signal
import subprocess

from toolbox_helpers import VENDHW, json_lines, run, sim_process

from vendhw.cli import hoist_trace


def test_trace_works_after_the_subcommand() -> None:
    done = run("dispense", "-p", "sim://board101", "-b", "board101", "1", "--trace")
    assert done.returncode == 0, done.stderr
    assert "TRACE" in done.stderr and "TX sim://board101" in done.stderr
    before = run("--trace", "decode", "ssp", "7F 80 01 11 65 82")
    assert before.returncode == 0


def test_hoist_trace_keeps_arguments_after_double_dash() -> None:
    assert hoist_trace(["dispense", "1", "--trace"]) == ["--trace", "dispense", "1"]
    assert hoist_trace(["--trace", "x"]) == ["--trace", "x"]
    assert hoist_trace(["decode", "--", "--trace"]) == ["decode", "--", "--trace"]


def test_p_means_port_in_cash_too() -> None:
    done = run("cash", "status", "-p", "sim://ssp", "--json")
    assert done.returncode == 0, done.stderr
    long_form = run("cash", "status", "--port", "sim://cctalk-coin", "--protocol", "cctalk-coin",
                    "--json")
    assert long_form.returncode == 0, long_form.stderr


def test_ctrl_c_in_motor_scan_prints_the_partial_table_and_exits_130() -> None:
    with sim_process("board101", "-o", "motor_time=0.2") as port:
        proc = subprocess.Popen([VENDHW, "--trace", "motor", "scan", "-p", port, "-b",
                                 "board101", "--json"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        seen = 0
        for line in proc.stderr:  # wait until two vends went out, then press Ctrl-C
            seen += "TX" in line and " 01 05 " in line
            if seen >= 2:
                break
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    report = json_lines(stdout)[-1]
    assert report["interrupted"] is True
    assert 1 <= report["scanned"] < 60
    assert len(report["results"]) == report["scanned"]
    assert "interrupted (Ctrl-C) after" in stderr
    assert "Aborted" not in stderr and "Traceback" not in stderr


def test_ctrl_c_anywhere_else_is_130_not_aborted() -> None:
    with sim_process("ssp", "--fault", "silent") as port:
        proc = subprocess.Popen([VENDHW, "send", "ssp", "-p", port, "SYNC", "--timeout", "20",
                                 "--trace"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        assert proc.stderr is not None
        first = proc.stderr.readline()  # the request went out: now it waits for a reply
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=10)
    assert "TRACE" in first and "TX" in first
    assert proc.returncode == 130
    assert "interrupted (Ctrl-C)" in stderr
    assert "Aborted" not in stderr and "Traceback" not in stderr


# -- no traceback, unknown options and values refused -------------------------------------------


def _one_line_error(done: subprocess.CompletedProcess[str], *words: str) -> None:
    stderr = done.stderr
    assert done.returncode == 2, stderr
    assert "Traceback" not in stderr
    for word in words:
        assert word in stderr, stderr


def test_cash_unknown_option_and_bad_values_are_refused() -> None:
    _one_line_error(run("cash", "status", "-p", "sim://ssp", "-o", "nosuch=1"),
                    "-o nosuch: not an option of ssp; known:", "reply_timeout")
    _one_line_error(run("cash", "status", "-p", "sim://ssp", "-o", "address=x"),
                    "-o address=x: address takes a whole number")
    _one_line_error(run("cash", "status", "-p", "sim://cctalk-coin", "-o", "reply_timeout=z"),
                    "reply_timeout takes a number of seconds")
    _one_line_error(run("cash", "accept", "-p", "sim://ssp", "--seconds", "-1"), "--seconds")


def test_sim_unknown_fault_values_and_options_are_refused() -> None:
    _one_line_error(run("sim", "ssp", "--fault", "jam=xyz"),
                    "--fault jam=xyz: 'xyz' is neither on nor off")
    _one_line_error(run("sim", "ssp", "-o", "nosuch=1"), "ssp: unknown option 'nosuch'",
                    "auto_insert")
    _one_line_error(run("sim", "ssp", "--fault", "nosuch"), "unknown fault 'nosuch'")
    _one_line_error(run("sim", "ssp", "-o", "speed=x"), "option speed='x': speed takes a number")
    _one_line_error(run("sim", "board101", "-o", "inventory=lots"),
                    "inventory takes a whole number")
    _one_line_error(run("cash", "status", "-p", "sim://ssp?speed=x"), "speed takes a number")


def test_demo_refuses_pickup_with_auto_pay() -> None:
    _one_line_error(run("demo", "--pickup", "--auto-pay"), "exclude each other")


def test_backend_serve_bad_and_busy_port_and_db_typo(tmp_path: object) -> None:
    import socket

    _one_line_error(run("backend", "serve", "--port", "99999"), "--port", "0<=x<=65535")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run("backend", "serve", "--port", str(port), "--db", f"{tmp_path}/new.db")
    _one_line_error(done, f"127.0.0.1:{port} is in use")
    _one_line_error(run("backend", "orders", "list", "--db", f"{tmp_path}/typo.db"),
                    "no database file", "typo.db")
    _one_line_error(run("backend", "machines", "add", "m1", "--slot", "A1=cola:350", "--db",
                        f"{tmp_path}/nodir/x.db"), "does not exist")
    import os

    assert not os.path.exists(f"{tmp_path}/typo.db")


# -- one JSON shape, money one way, ids whole ---------------------------------------------------


def test_backend_json_is_one_object_per_line_and_ids_are_not_cut(tmp_path: object) -> None:
    db = f"{tmp_path}/b.db"
    added = run("backend", "machines", "add", "machine-with-a-rather-long-identifier-0001",
                "--slot", "A1=cola:350", "--db", db, "--json")
    assert added.returncode == 0, added.stderr
    listed = run("backend", "machines", "list", "--db", db, "--json")
    (row,) = json_lines(listed.stdout)
    assert row["id"] == "machine-with-a-rather-long-identifier-0001"
    table = run("backend", "machines", "list", "--db", db)  # COLUMNS=200 in run(); try 80
    import os
    import subprocess

    narrow = subprocess.run([VENDHW, "backend", "machines", "list", "--db", db],
                            capture_output=True, text=True,
                            env={**os.environ, "COLUMNS": "80", "NO_COLOR": "1"})
    assert "machine-with-a-rather-long-identifier-0001" in table.stdout
    assert "machine-with-a-rather-long-identifier-0001" in narrow.stdout


def test_board_profiles_names_are_not_cut() -> None:
    import os
    import subprocess

    narrow = subprocess.run([VENDHW, "board", "profiles"], capture_output=True, text=True,
                            env={**os.environ, "COLUMNS": "50", "NO_COLOR": "1"})
    for name in ("board101", "easivend-column", "fafb-lift", "fafb-xy"):
        assert name in narrow.stdout


def test_money_is_shown_with_its_decimals() -> None:
    from vendhw.money import format_money

    assert format_money(350, "CNY") == "3.50 CNY"
    assert format_money(5, "EUR") == "0.05 EUR"
    assert format_money(-120, "EUR") == "-1.20 EUR"
    assert format_money(500, "JPY") == "500 JPY"
    assert format_money(None, "EUR") == "-"


# -- simulators: documented, profiles by path, a payout float -----------------------------------


def test_every_simulator_documents_its_options_and_faults() -> None:
    from vendhw import sim as sim_registry
    from vendhw.cli.sim import simulator_help

    for name in sorted(sim_registry.available()):  # in process: one subprocess each is slow
        text = simulator_help(name)
        assert text.startswith(f"vendhw sim {name}: ")
        assert "Options (-o KEY=VALUE" in text
        assert "line faults: drop_byte, flip_bit, delay, silent, garbage" in text
        assert "Abstract Base Classes" not in text  # board simulators once printed abc's doc
    ssp = run("sim", "ssp", "--help").stdout
    assert "device faults: jam, fraud" in ssp and "levels (default '500:10" in ssp
    assert "Usage: vendhw sim [OPTIONS] [NAME]" in run("sim", "--help").stdout
    _one_line_error(run("sim", "nosuch", "--help"), "unknown simulator 'nosuch'")


def test_a_profile_file_works_where_a_profile_name_does(tmp_path: object) -> None:
    import os
    from pathlib import Path

    source = Path(__file__).resolve().parents[2] / "boards" / "board101.toml"
    own = Path(str(tmp_path)) / "my-board.toml"
    own.write_text(source.read_text())
    cwd = str(tmp_path)
    env = {**os.environ, "NO_COLOR": "1"}
    vend = subprocess.run([VENDHW, "dispense", "-p", "sim://./my-board.toml", "-b",
                           "./my-board.toml", "1", "--json"], capture_output=True, text=True,
                          cwd=cwd, env=env)
    assert vend.returncode == 0, vend.stderr
    assert json_lines(vend.stdout)[-1]["outcome"] == "delivered"
    served = subprocess.Popen([VENDHW, "sim", "./my-board.toml", "--json"], cwd=cwd,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert served.stdout is not None
        info = json_lines(served.stdout.readline())[0]
        assert info["name"] == "./my-board.toml" and info["protocol"] == "board101"
        probed = run("probe", info["port"], "--protocol", "board101", "--json")
        assert json_lines(probed.stdout)[0]["answered"] is True
    finally:
        served.send_signal(signal.SIGINT)
        served.communicate(timeout=10)


def test_payout_works_out_of_the_box_on_the_ssp_simulator() -> None:
    done = run("cash", "payout", "1000", "--port", "sim://ssp", "--interval", "0.02", "--json")
    assert done.returncode == 0, done.stderr
    events = json_lines(done.stdout)
    assert events[-1]["kind"] == "payout_done" and events[-1]["value"] == 1000


def test_dispense_takes_plain_slot_numbers_on_every_profile() -> None:
    first = run("dispense", "-p", "sim://fafb-lift", "-b", "fafb-lift", "1", "--json")
    assert first.returncode == 0, first.stderr
    vend = json_lines(first.stdout)[-1]
    assert (vend["slot_label"], vend["motor"]) == ("L1-01", 11)
    label = run("dispense", "-p", "sim://fafb-lift", "-b", "fafb-lift", "L2-03", "--json")
    assert json_lines(label.stdout)[-1]["motor"] == 23
    # 11 is position 11 (L2-03) and board number 11 (L1-01): refused, never guessed
    _one_line_error(run("dispense", "-p", "sim://fafb-lift", "-b", "fafb-lift", "11"),
                    "slot 11 is ambiguous on fafb-lift", "give the label")
    plain = run("dispense", "-p", "sim://board101", "-b", "board101", "7", "--json")
    assert json_lines(plain.stdout)[-1]["motor"] == 7


def test_json_output_is_one_object_per_line_everywhere(tmp_path: object) -> None:
    """Every --json line is one JSON object (no arrays, no pretty-printing)."""
    db = f"{tmp_path}/j.db"
    assert run("backend", "machines", "add", "m1", "--slot", "1=tea:300", "--db", db,
               "--json").returncode == 0
    commands = [
        ("board", "slots", "--board", "fafb-xy", "--json"),
        ("board", "profiles", "--json"),
        ("sim", "--list", "--json"),
        ("backend", "machines", "list", "--db", db, "--json"),
        ("backend", "orders", "list", "--db", db, "--json"),
        ("cash", "status", "-p", "sim://ssp", "--json"),
        ("ports", "--json"),
        ("doctor", "--json"),
        ("send", "ssp", "-p", "sim://ssp", "SYNC", "--json"),
        ("dispense", "-p", "sim://board101", "-b", "board101", "1", "--json"),
    ]
    import json

    for args in commands:
        done = run(*args)
        for line in done.stdout.splitlines():
            assert line.startswith("{") and line.endswith("}"), (args, line)
            assert isinstance(json.loads(line), dict)


def test_python_dash_m_keeps_exit_statuses() -> None:
    """Regression: without click's standalone mode, ctx.exit(2) must still exit 2."""
    import sys

    def status(*args: str) -> int:
        return subprocess.run([sys.executable, "-m", "vendhw", *args], capture_output=True,
                              text=True, timeout=30).returncode

    assert status("sim", "nosuch", "--help") == 2
    assert status("nosuchcommand") == 2
    assert status("--version") == 0


def test_an_even_parity_device_on_a_pty_opens_twice() -> None:
    """Regression: the second open of an ID-003 (8E1) simulator's pty was a termios
    traceback (Linux drops PARENB on a pty and pyserial's next tcsetattr fails)."""
    with sim_process("id003") as port:
        for _ in range(2):
            done = run("cash", "status", "-p", port, "--protocol", "id003", "--json")
            assert done.returncode == 0, done.stderr
            assert json_lines(done.stdout)[0]["status"] == "DISABLE/INHIBIT"
