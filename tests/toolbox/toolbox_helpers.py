"""Shared helpers of the toolbox tests: simulators on ptys in their own process."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vendhw.transport import PtyPair

VENDHW = str(Path(sys.executable).with_name("vendhw"))


def run(*args: str, timeout: float = 30, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run the vendhw console script; NO_COLOR keeps the output plain."""
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    env.pop("VENDHW_TRACE", None)
    return subprocess.run([VENDHW, *args], capture_output=True, text=True, timeout=timeout,
                          env=env, **kwargs)


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line is one JSON object (the toolbox's --json contract)."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@contextmanager
def sim_process(name: str, *args: str) -> Iterator[str]:
    """``vendhw sim NAME --json`` in its own process; yields its port."""
    proc = subprocess.Popen([VENDHW, "sim", name, "--json", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, proc.stderr.read() if proc.stderr else "simulator did not start"
        yield json.loads(line)["port"]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=10)


class Garbler:
    """A device at the wrong baud rate: every request is answered with mangled bytes.

    A UART reading a line twice too fast or too slow sees other byte values and framing
    errors, never a valid frame; this answers each burst with the bytes shifted and ORed
    with high bits, which no protocol's checksum accepts.
    """

    def __init__(self) -> None:
        self.pair = PtyPair()
        self.port = self.pair.port
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        fd = self.pair.master.fileno()
        assert fd is not None
        while True:
            ready, _, _ = select.select([fd, self._stop_r], [], [])
            if self._stop_r in ready:
                return
            try:
                data = os.read(fd, 4096)
            except OSError:
                continue
            os.write(fd, bytes(((b << 1) & 0xFF) | 0x81 for b in data) * 2)

    def close(self) -> None:
        os.write(self._stop_w, b"x")
        self._thread.join(5)
        self.pair.close()

    def __enter__(self) -> Garbler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SoftTap:
    """A tap cable in software between a host program and a device on a pty.

    The host opens ``port``; every byte it writes goes to the device on ``device_port`` and
    is copied to ``host_tap``; every byte the device answers goes back to the host and is
    copied to ``device_tap``. A monitor opens ``host_tap.port`` and ``device_tap.port``.
    """

    def __init__(self, device_port: str) -> None:
        from vendhw.transport import SerialTransport

        self.host_side = PtyPair()
        self.port = self.host_side.port
        self.host_tap = PtyPair()
        self.device_tap = PtyPair()
        self.device = SerialTransport(device_port)
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        host_fd = self.host_side.master.fileno()
        device_fd = self.device.fileno()
        assert host_fd is not None and device_fd is not None
        while True:
            ready, _, _ = select.select([host_fd, device_fd, self._stop_r], [], [])
            if self._stop_r in ready:
                return
            if host_fd in ready:
                try:
                    data = os.read(host_fd, 4096)
                except OSError:  # the host closed its end; it may open it again
                    data = b""
                if data:
                    self._copy(self.host_tap, data)
                    self.device.write(data)
            if device_fd in ready:
                data = self.device.read(0)
                if data:
                    self._copy(self.device_tap, data)
                    self.host_side.master.write(data)

    @staticmethod
    def _copy(tap: PtyPair, data: bytes) -> None:
        """A tap never holds the line up: bytes nobody reads are dropped."""
        fd = tap.master.fileno()
        assert fd is not None
        try:
            os.write(fd, data)
        except OSError:
            pass

    def close(self) -> None:
        os.write(self._stop_w, b"x")
        self._thread.join(5)
        self.device.close()
        for pair in (self.host_side, self.host_tap, self.device_tap):
            pair.close()

    def __enter__(self) -> SoftTap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
