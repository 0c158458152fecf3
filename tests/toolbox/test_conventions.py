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
