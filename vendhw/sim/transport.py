"""``sim://NAME``: a simulator in this process behind a memory pipe.

Nothing runs in the background: a write hands the bytes to the simulator at once, and a
read waits on a condition variable until the next reply is due or the deadline passes.
"""

from __future__ import annotations

import threading
import time
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from vendhw.sim.base import Scheduler, Simulator
from vendhw.transport.base import Transport


class SimTransport(Transport):
    """The host's end of an in-process simulator."""

    def __init__(self, simulator: Simulator, url: str | None = None, **options: Any) -> None:
        super().__init__(url or f"sim://{simulator.name}", baudrate=simulator.baudrate,
                         **options)
        self.simulator = simulator
        self._scheduler = Scheduler(simulator)
        self._cond = threading.Condition()

    def _read_some(self, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                now = time.monotonic()
                out = self._scheduler.due(now)
                if out or now >= deadline:
                    return out
                nxt = self._scheduler.next_deadline()
                wake = deadline if nxt is None else min(deadline, nxt)
                self._cond.wait(max(0.0, wake - now))

    def _write(self, data: bytes) -> None:
        with self._cond:
            self._scheduler.on_input(data, time.monotonic())
            self._cond.notify_all()

    def _close(self) -> None:
        with self._cond:
            self._cond.notify_all()


_LINE_FAULTS = {"drop_byte", "flip_bit", "delay", "silent", "garbage"}


def open_sim_url(url: str, **options: Any) -> SimTransport:
    """Open ``sim://NAME?fault=...`` (the ``sim`` scheme of ``open_transport``)."""
    from vendhw import sim as sim_registry

    parts = urlsplit(url)
    simulator = options.pop("simulator", None)
    common = {k: options.pop(k) for k in ("trace", "capture") if k in options}
    for key in ("baudrate", "bytesize", "parity", "stopbits", "low_latency", "exclusive"):
        options.pop(key, None)  # a memory pipe has no line settings
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    if simulator is None:
        raw = url[len("sim://"):].split("?", 1)[0]
        # sim://./x.toml and sim:///abs/x.toml name a board profile file
        name = raw if raw.endswith(".toml") else parts.netloc or parts.path.lstrip("/")
        faults = {k: v for k, v in query.items() if k in _LINE_FAULTS}
        device_options = {k: v for k, v in query.items() if k not in _LINE_FAULTS}
        device_options.update(options)
        simulator = sim_registry.create(name, **device_options)
        for key, value in faults.items():
            simulator.set_fault(key, value)
    return SimTransport(simulator, url=url, **common)
