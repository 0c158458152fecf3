"""Byte pipes to devices, opened by URL with :func:`open_transport`.

==================================  =============================================================
URL                                 transport
==================================  =============================================================
``/dev/ttyUSB0``, ``COM3``          a serial port (opened exclusively)
``usb-serial://VID:PID?serial=SN``  a USB-serial adapter by identity, found again at every open
``loop://``, ``socket://h:p``       any pyserial URL handler (``rfc2217://``, ``spy://``...)
``sim://NAME?fault=...``            a simulator in this process (``vendhw sim --list``)
``usb://VID:PID[/IFACE]``           bulk endpoints of a USB device (extra ``usb``)
``mdb9:///dev/ttyS0``               a 9-bit MDB line on a Linux UART (sticky parity)
``mdbascii:///dev/ttyACM0``         an ASCII MDB master adapter (Qibixx MDB-USB style)
``replay://capture.jsonl``          a recorded session played back (``capture=PATH`` records one)
==================================  =============================================================
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from vendhw.transport.base import CaptureWriter, Tracer, Transport, trace_enabled
from vendhw.transport.pty import FdTransport, PtyPair
from vendhw.transport.serial import SerialTransport

SCHEMES: dict[str, str | Callable[..., Transport]] = {
    "sim": "vendhw.sim.transport:open_sim_url",
    "mdbascii": "vendhw.transport.mdbascii:open_mdbascii",
    "usb-serial": "vendhw.transport.identity:open_usb_serial",
}
"""URL scheme -> opener (``open(url, **options) -> Transport``), or ``"module:attr"`` loaded
on first use. Higher layers add theirs with :func:`register_scheme` (the simulators own
``sim://``, so this layer knows no simulator)."""

_MOVED = {
    "SimTransport": "vendhw.sim.transport:SimTransport",
    "SimulatorOnPty": "vendhw.sim.pty:SimulatorOnPty",
}
"""Old names of this package that now live in :mod:`vendhw.sim` (loaded on first use)."""


def register_scheme(scheme: str, opener: str | Callable[..., Transport]) -> None:
    """Let :func:`open_transport` open ``scheme://...`` URLs with ``opener``."""
    SCHEMES[scheme] = opener


def _load(target: str) -> Any:
    module_name, attr = target.split(":")
    return getattr(importlib.import_module(module_name), attr)


def _scheme_opener(scheme: str) -> Callable[..., Transport] | None:
    opener = SCHEMES.get(scheme)
    if isinstance(opener, str):
        opener = SCHEMES[scheme] = _load(opener)
    return opener


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        return _load(_MOVED[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    scheme = url.split("://", 1)[0] if "://" in url else ""
    opener = _scheme_opener(scheme)
    if opener is not None:
        return opener(url, **options)
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



__all__ = [
    "SCHEMES",
    "CaptureWriter",
    "FdTransport",
    "PtyPair",
    "SerialTransport",
    "SimTransport",
    "SimulatorOnPty",
    "Tracer",
    "Transport",
    "open_transport",
    "register_scheme",
    "trace_enabled",
]
