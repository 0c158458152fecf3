"""``usb-serial://VID:PID?serial=SN``: a USB-serial adapter by what it is, not where it is.

A USB adapter unplugged and plugged back may come back as ``/dev/ttyUSB1`` instead of
``/dev/ttyUSB0`` (another adapter took the number, or the old node was still held open). An
identity URL names the adapter by its USB VID:PID and its serial number (or, for adapters
without one, the USB port it sits in: ``?location=1-1.2``) and is resolved to the current
device path on *every* open, so reopening after an unplug finds the adapter wherever it is.
``vendhw ports`` prints the identity of each USB port (:func:`identity_url`).

Query keys: ``serial`` (the adapter's USB serial number), ``location`` (pyserial's USB
location, ``bus-port.port[:config.interface]``; without the ``:`` part it matches every
interface on that port). Every key given must match; exactly one port may match.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from vendhw.errors import ConfigurationError, PortNotFoundError
from vendhw.transport.base import Transport
from vendhw.transport.serial import SerialTransport

SCHEME = "usb-serial"
KEYS = ("serial", "location")


def comports() -> list[Any]:
    """The serial ports the system lists now (pyserial ``ListPortInfo``); tests fake it."""
    from serial.tools import list_ports

    return list(list_ports.comports())


def parse_identity(url: str) -> tuple[int, int, dict[str, str]]:
    """``usb-serial://0403:6001?serial=A1`` -> ``(0x0403, 0x6001, {"serial": "A1"})``."""
    parts = urlsplit(url)
    if parts.scheme != SCHEME:
        raise ConfigurationError(f"{url}: not a {SCHEME}:// URL")
    try:
        vid_text, pid_text = parts.netloc.split(":")
        vid, pid = int(vid_text, 16), int(pid_text, 16)
    except ValueError:
        raise ConfigurationError(f"{url}: expected {SCHEME}://VID:PID?serial=SN (VID and PID "
                                 "in hex, e.g. 0403:6001)") from None
    if parts.path not in ("", "/"):
        raise ConfigurationError(f"{url}: no path after VID:PID; use ?serial= or ?location=")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - set(KEYS))
    if unknown:
        raise ConfigurationError(f"{url}: unknown key {unknown[0]!r}; known: "
                                 f"{', '.join(KEYS)}")
    wanted: dict[str, str] = {}
    for key, values in query.items():
        if len(values) != 1 or not values[0]:
            raise ConfigurationError(f"{url}: {key} needs one non-empty value")
        wanted[key] = values[0]
    return vid, pid, wanted


def _matches(port: Any, vid: int, pid: int, wanted: dict[str, str]) -> bool:
    if port.vid != vid or port.pid != pid:
        return False
    if "serial" in wanted and (port.serial_number or "") != wanted["serial"]:
        return False
    if "location" in wanted:
        location = port.location or ""
        want = wanted["location"]
        if location != want and not (":" not in want and location.split(":")[0] == want):
            return False
    return True


def resolve(url: str, ports: Iterable[Any] | None = None) -> str:
    """The device path the adapter ``url`` names has right now.

    :raises PortNotFoundError: no listed port matches (unplugged?).
    :raises ConfigurationError: several match (add ``serial=`` or ``location=``).
    """
    vid, pid, wanted = parse_identity(url)
    listed = list(comports() if ports is None else ports)
    found = [p for p in listed if _matches(p, vid, pid, wanted)]
    if not found:
        same = [p.device for p in listed if p.vid == vid and p.pid == pid]
        hint = (f"; {len(same)} other {vid:04X}:{pid:04X} port(s): {', '.join(same)}"
                if same else " (unplugged? see: vendhw ports)")
        raise PortNotFoundError(f"{url}: no USB serial port matches{hint}")
    if len(found) > 1:
        raise ConfigurationError(
            f"{url}: {len(found)} ports match ({', '.join(p.device for p in found)}); "
            "name one with ?serial= or ?location= (see: vendhw ports)")
    return str(found[0].device)


def identity_url(port: Any, ports: Iterable[Any] = ()) -> str | None:
    """The ``usb-serial://`` URL that names ``port`` among ``ports``, None for a non-USB port.

    The serial number where the adapter has one, else its USB location; the location is
    added when another listed port has the same VID:PID and serial (a multi-port chip)."""
    if port.vid is None or port.pid is None:
        return None
    base = f"{SCHEME}://{port.vid:04X}:{port.pid:04X}"
    serial = port.serial_number or ""
    location = port.location or ""
    query = []
    if serial:
        query.append(f"serial={quote(serial, safe='')}")
        twins = [p for p in ports if p is not port and p.device != port.device
                 and p.vid == port.vid and p.pid == port.pid
                 and (p.serial_number or "") == serial]
        if twins and location:
            query.append(f"location={quote(location, safe='')}")
    elif location:
        query.append(f"location={quote(location, safe='')}")
    return base + ("?" + "&".join(query) if query else "")


class UsbSerialTransport(SerialTransport):
    """A serial port opened through its identity: ``url`` is the identity (stable, so names
    derived from it, e.g. a cash device's and its journal checkpoint's, survive a new
    path), ``device`` the path it was found at this time."""

    def __init__(self, url: str, device: str, **options: Any) -> None:
        super().__init__(device, **options)
        self.device = device
        self.url = url
        self.identity = url

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url} at {self.device}>"


def open_usb_serial(url: str, **options: Any) -> Transport:
    """Open the adapter ``url`` names at its current path (a serial port, opened
    exclusively); a reopen resolves it again."""
    return UsbSerialTransport(url, resolve(url), **options)


__all__ = ["UsbSerialTransport", "comports", "identity_url", "open_usb_serial",
           "parse_identity", "resolve"]
