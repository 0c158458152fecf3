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

``mdb9://`` and ``mdbascii://`` also take an identity instead of a path
(``mdb9://usb-serial://0403:6001?serial=SN``), resolved at every open like a plain one.
:func:`check_url` refuses, without opening anything, a URL that can never open (an unknown
scheme, a malformed identity); a port that is only missing now passes it.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from collections.abc import Callable
from typing import Any

from vendhw.errors import ConfigurationError
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


BUILTIN_SCHEMES = ("replay", "mdb9", "usb")
"""Schemes :func:`open_transport` handles itself (besides :data:`SCHEMES`)."""
WRAPPING_SCHEMES = ("mdb9", "mdbascii")
"""Schemes whose rest is a port of its own: a path or a ``usb-serial://`` identity."""


def _pyserial_scheme(scheme: str) -> bool:
    """Whether pyserial has a URL handler for ``scheme`` (``loop``, ``socket``, ``spy``...)."""
    import serial

    for package in serial.protocol_handler_packages:
        try:
            if importlib.util.find_spec(f"{package}.protocol_{scheme}") is not None:
                return True
        except (ImportError, ValueError):
            continue
    return False


def known_schemes() -> list[str]:
    """Every URL scheme a port may have, for messages."""
    import serial

    pyserial: list[str] = []
    for package in serial.protocol_handler_packages:
        try:
            module = importlib.import_module(package)
        except ImportError:
            continue
        pyserial += [m.name[len("protocol_"):] for m in pkgutil.iter_modules(module.__path__)
                     if m.name.startswith("protocol_")]
    return sorted({*SCHEMES, *BUILTIN_SCHEMES, *pyserial})


def check_url(url: str) -> None:
    """Refuse ``url`` when it can never open, whatever is plugged in: empty, an unknown
    scheme, a malformed ``usb-serial://`` identity, ``mdb9://`` wrapping something that is
    not a port. Opens nothing and does not look for the port: one that is only missing now
    (a USB adapter not enumerated yet) passes.

    Why: a program that waits for a missing port (the machine agent) must still stop at
    once, with one line, on a port that no waiting can fix.

    :raises ConfigurationError: one line naming the URL and what is wrong.
    """
    if not url.strip():
        raise ConfigurationError("empty port: name a serial port, a usb-serial:// identity "
                                 "or another transport URL (see: vendhw ports)")
    if "://" not in url:
        return  # a device path (or COM3): it may appear later
    scheme, rest = url.split("://", 1)
    if scheme in WRAPPING_SCHEMES:
        if not rest:
            raise ConfigurationError(f"{url}: {scheme}:// needs a port, e.g. "
                                     f"{scheme}:///dev/ttyUSB0 or "
                                     f"{scheme}://usb-serial://VID:PID?serial=SN")
        if "://" in rest:
            inner = rest.split("://", 1)[0]
            if scheme == "mdb9" and inner != "usb-serial":
                raise ConfigurationError(f"{url}: mdb9:// takes a device path or a "
                                         f"usb-serial:// identity, not {inner}://")
            check_url(rest)
        return
    if scheme == "usb-serial":
        from vendhw.transport.identity import parse_identity

        parse_identity(url)
        return
    if scheme in SCHEMES or scheme in BUILTIN_SCHEMES or _pyserial_scheme(scheme):
        return
    raise ConfigurationError(f"{url}: unknown port scheme {scheme!r}; known: "
                             f"{', '.join(known_schemes())} (or a device path)")


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
    if scheme and not _pyserial_scheme(scheme):
        check_url(url)  # an unknown scheme is a mistake, not a port missing now
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
    "check_url",
    "known_schemes",
    "open_transport",
    "register_scheme",
    "trace_enabled",
]
