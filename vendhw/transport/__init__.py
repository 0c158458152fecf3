"""Byte pipes to devices, opened by URL with :func:`open_transport`.

=============================  =========================================================
URL                            transport
=============================  =========================================================
``/dev/ttyUSB0``, ``COM3``     a serial port (opened exclusively)
``loop://``, ``socket://h:p``  any pyserial URL handler (``rfc2217://``, ``spy://``...)
``sim://NAME?fault=...``       a simulator in this process (``vendhw sim --list``)
``usb://VID:PID[/IFACE]``      bulk endpoints of a USB device (extra ``usb``)
``mdb9:///dev/ttyS0``          a 9-bit MDB line on a Linux UART (sticky parity)
``replay://capture.jsonl``     a recorded session played back (``capture=PATH`` records one)
=============================  =========================================================
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

from vendhw.transport.base import CaptureWriter, Tracer, Transport, trace_enabled
from vendhw.transport.pty import FdTransport, PtyPair, SimulatorOnPty
from vendhw.transport.serial import SerialTransport
from vendhw.transport.sim import SimTransport

_SERIAL_OPTIONS = {"baudrate", "bytesize", "parity", "stopbits", "low_latency", "exclusive",
                   "trace", "capture", "rtscts", "xonxoff", "dsrdtr"}


def open_transport(url: str, **options: Any) -> Transport:
    """Open the transport ``url`` names.

    Serial options (``baudrate``, ``parity``, ``stopbits``, ``low_latency``...) apply to
    serial ports and pyserial URLs. For ``sim://NAME`` the query string and any other
    keyword options configure the simulator (faults and device options), and
    ``simulator=`` passes a ready-made :class:`~vendhw.sim.Simulator` instead.
    ``trace=True`` prints hexdumps; ``capture=PATH`` records JSON Lines.
    """
    if url.startswith("sim://"):
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
    if url.startswith("replay://"):
        from vendhw.transport.replay import ReplayTransport

        return ReplayTransport(url, **options)
    if url.startswith("mdb9://"):
        from vendhw.transport.mdb9 import Mdb9BitTransport

        return Mdb9BitTransport(url, **options)
    if url.startswith("usb://"):
        from vendhw.transport.usb import UsbTransport

        return UsbTransport(url, **options)
    return SerialTransport(url, **options)


_LINE_FAULTS = {"drop_byte", "flip_bit", "delay", "silent", "garbage"}

__all__ = [
    "CaptureWriter",
    "FdTransport",
    "PtyPair",
    "SerialTransport",
    "SimTransport",
    "SimulatorOnPty",
    "Tracer",
    "Transport",
    "open_transport",
    "trace_enabled",
]
