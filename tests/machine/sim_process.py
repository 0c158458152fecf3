"""Serve one board simulator on a pty in its own process (kill-and-restart tests).

Usage: ``python sim_process.py PROFILE '{"inventory": 3}'``. Prints ``{"port": ...}`` as its
first line; on SIGTERM it stops and prints the simulator's own record as one JSON line:
``{"vends": [...], "inventory": {...}}``, the ground truth of what the motors really did.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
from typing import Any

from vendhw import sim as sim_registry
from vendhw.transport.pty import PtyPair, serve_forever


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "_asdict"):
        return _plain(value._asdict())
    return repr(value)


def main() -> None:
    profile = sys.argv[1]
    options = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    simulator = sim_registry.create(profile, **options)
    wake_r, wake_w = os.pipe()
    signal.signal(signal.SIGTERM, lambda signum, frame: os.write(wake_w, b"x"))
    with PtyPair() as pair:
        print(json.dumps({"port": pair.port, "baudrate": simulator.baudrate}), flush=True)
        serve_forever(simulator, pair, wake_r)
    print(json.dumps({"vends": _plain(getattr(simulator, "vends", None)),
                      "inventory": _plain(getattr(simulator, "inventory", None))}), flush=True)


if __name__ == "__main__":
    main()
