"""vendhw machine check, and machine run failing fast, against a real backend process."""

from __future__ import annotations

import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from toolbox_helpers import json_lines, run

from vendhw.agent.demo import _free_port, _wait_ready

TOKEN = "toolbox-operator-token"


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    tmp = tmp_path_factory.mktemp("backend")
    port, secret = _free_port(), secrets.token_hex(16)
    url = f"http://127.0.0.1:{port}"
    log = tmp / "backend.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vendhw", "backend", "serve", "--db", str(tmp / "b.db"),
         "--host", "127.0.0.1", "--port", str(port), "--operator-token", TOKEN,
         "--log-level", "warning"], stdout=subprocess.DEVNULL, stderr=log.open("w"))
    try:
        _wait_ready(url, proc, log)  # type: ignore[arg-type]
        httpx.post(f"{url}/operator/v1/catalogue", headers={"Authorization": f"Bearer {TOKEN}"},
                   json={"products": [{"id": "tea", "name": "Green tea", "price": 300}],
                         "machines": [
                             {"id": "m1", "secret": secret, "slots": [
                                 {"slot": "1", "product": "tea", "price": 300},
                                 {"slot": "2-3", "product": "tea", "price": 300}]},
                             {"id": "m2", "secret": secret, "slots": [
                                 {"slot": "1", "product": "tea", "price": 300},
                                 {"slot": "99", "product": "tea", "price": 300}]}]},
                   timeout=10).raise_for_status()
        yield url, secret
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _config(tmp_path: Path, url: str, secret: str, *, machine: str = "m1",
            port: str = "sim://board101", screen_port: object = 0) -> str:
    path = tmp_path / f"{machine}.toml"
    path.write_text(f'''
[backend]
url = "{url}"
machine_id = "{machine}"
secret = "{secret}"

[board]
profile = "board101"
port = "{port}"

[agent]
data_dir = "data"
screen_port = {screen_port if not isinstance(screen_port, str) else repr(screen_port)}
''')
    return str(path)


def test_machine_check_all_good(tmp_path: Path, backend: tuple[str, str]) -> None:
    url, secret = backend
    done = run("machine", "check", "--config", _config(tmp_path, url, secret), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = json_lines(done.stdout)
    assert [(r["check"], r["status"]) for r in rows] == [
        ("screen", "ok"), ("backend", "ok"), ("catalogue", "ok"), ("board", "ok")]
    assert "all 2 catalogue slots exist on board101" in rows[2]["detail"]


def test_machine_check_finds_each_problem(tmp_path: Path, backend: tuple[str, str]) -> None:
    url, secret = backend
    wrong = run("machine", "check", "--config", _config(tmp_path, url, "0" * 32), "--json")
    assert wrong.returncode == 1
    by_check = {r["check"]: r for r in json_lines(wrong.stdout)}
    assert by_check["backend"]["status"] == "fail"
    assert "refused machine 'm1'" in by_check["backend"]["detail"]
    slots = run("machine", "check", "--config", _config(tmp_path, url, secret, machine="m2"))
    assert slots.returncode == 1
    assert "catalogue slots 99 are not on board profile 'board101'" in slots.stdout
    silent = run("machine", "check", "--config",
                 _config(tmp_path, url, secret, port="sim://board101?silent=1"), "--json")
    (board,) = [r for r in json_lines(silent.stdout) if r["check"] == "board"]
    assert board["status"] == "fail" and "sim://board101" in board["detail"]
    away = run("machine", "check", "--config",
               _config(tmp_path, f"http://127.0.0.1:{_free_port()}", secret), "--json")
    (reach,) = [r for r in json_lines(away.stdout) if r["check"] == "backend"]
    assert reach["status"] == "warn" and "unreachable" in reach["detail"]


def test_machine_run_fails_fast_on_a_refused_secret(tmp_path: Path,
                                                    backend: tuple[str, str]) -> None:
    url, _ = backend
    done = run("machine", "run", "--config", _config(tmp_path, url, "0" * 32), "--no-screen",
               timeout=30)
    assert done.returncode == 1
    assert done.stderr.startswith("error: backend: ")
    assert "refused machine 'm1'" in done.stderr
    assert "Traceback" not in done.stderr


def test_machine_run_bad_and_busy_screen_port(tmp_path: Path, backend: tuple[str, str]) -> None:
    url, secret = backend
    bad = run("machine", "run", "--config", _config(tmp_path, url, secret, screen_port="abc"))
    assert bad.returncode == 2
    assert "[agent] screen_port must be a TCP port number 0..65535, not 'abc'" in bad.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run("machine", "run", "--config",
                   _config(tmp_path, url, secret, screen_port=port), timeout=30)
    assert done.returncode == 1
    assert f"error: screen: [agent] screen_port: 127.0.0.1:{port} is in use" in done.stderr
    for result in (bad, done):
        assert "Traceback" not in result.stderr


def test_a_port_that_can_never_open_fails_check_and_run_alike_in_one_line(
        tmp_path: Path, backend: tuple[str, str]) -> None:
    url, secret = backend
    config = _config(tmp_path, url, secret, port="usb-seral://0403:6001?serial=A1")
    for command in (("machine", "check"), ("machine", "run", "--no-screen")):
        done = run(*command, "--config", config, timeout=30)
        assert done.returncode == 2, (command, done.stderr)
        assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
        assert "[board] port: usb-seral://0403:6001?serial=A1: unknown port scheme " \
               "'usb-seral'" in done.stderr


def test_a_missing_port_fails_the_check_and_run_starts_with_the_board_offline(
        tmp_path: Path, backend: tuple[str, str]) -> None:
    import os
    import select
    import signal
    import time

    from toolbox_helpers import VENDHW

    url, secret = backend
    missing = "usb-serial://0403:6001?serial=NOT-PLUGGED-IN"  # no such adapter here
    config = _config(tmp_path, url, secret, port=missing)
    checked = run("machine", "check", "--config", config, "--json")
    assert checked.returncode == 1
    (board,) = [r for r in json_lines(checked.stdout) if r["check"] == "board"]
    assert board["status"] == "fail" and "no USB serial port matches" in board["detail"]
    assert "machine run starts all the same, with the board offline" in board["detail"]
    proc = subprocess.Popen([VENDHW, "machine", "run", "--config", config, "--no-screen"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "NO_COLOR": "1"})
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        line = ""
        while "selling" not in line and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], deadline - time.monotonic())
            if not ready:
                break
            line = proc.stdout.readline()
            if not line:
                break
        assert "machine m1 selling" in line, line
        assert proc.poll() is None  # running, not exited
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "board offline, its port could not be opened" in err
    assert "no USB serial port matches" in err and "Traceback" not in err


def test_an_unknown_board_profile_is_one_line_not_a_traceback(
        tmp_path: Path, backend: tuple[str, str]) -> None:
    url, secret = backend
    config = tmp_path / "m1.toml"
    config.write_text(Path(_config(tmp_path, url, secret)).read_text().replace(
        'profile = "board101"', 'profile = "board10"'))
    checked = run("machine", "check", "--config", str(config), "--json")
    assert checked.returncode == 1 and "Traceback" not in checked.stderr, checked.stderr
    (catalogue,) = [r for r in json_lines(checked.stdout) if r["check"] == "catalogue"]
    assert catalogue["status"] == "fail" and "unknown board profile 'board10'" \
        in catalogue["detail"]
    ran = run("machine", "run", "--config", str(config), "--no-screen", timeout=30)
    assert ran.returncode == 1 and "Traceback" not in ran.stderr, ran.stderr
    assert ran.stderr.startswith("error: catalogue: [board] profile: unknown board profile")
