"""Serial ports on this computer, with a guess of the USB-serial adapter behind each.

The guess is a small data table keyed by USB VID:PID (:data:`ADAPTERS`), like pyserial's
``list_ports`` plus the chip names people search for (FTDI, CH340, CP210x, PL2303) and the
MDB interfaces that show up as serial ports.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

ADAPTERS: dict[tuple[int, int], str] = {
    (0x0403, 0x6001): "FTDI FT232R",
    (0x0403, 0x6010): "FTDI FT2232",
    (0x0403, 0x6011): "FTDI FT4232",
    (0x0403, 0x6014): "FTDI FT232H",
    (0x0403, 0x6015): "FTDI FT-X (FT230X/FT231X)",
    (0x1A86, 0x7523): "WCH CH340",
    (0x1A86, 0x5523): "WCH CH341",
    (0x1A86, 0x55D4): "WCH CH9102",
    (0x10C4, 0xEA60): "Silicon Labs CP210x",
    (0x10C4, 0xEA70): "Silicon Labs CP2105",
    (0x067B, 0x2303): "Prolific PL2303",
    (0x067B, 0x23A3): "Prolific PL2303GC",
    (0x0483, 0x5740): "STM32 virtual COM port (e.g. an MDB-USB interface)",
    (0x04D8, 0x000A): "Microchip CDC serial (e.g. an MDB-USB interface)",
}
"""USB VID:PID -> adapter. Vendor-only fallbacks are in :data:`VENDORS`."""

VENDORS: dict[int, str] = {
    0x0403: "FTDI", 0x1A86: "WCH (CH34x)", 0x10C4: "Silicon Labs (CP210x)",
    0x067B: "Prolific (PL2303)", 0x0483: "STMicroelectronics", 0x04D8: "Microchip",
    0x2341: "Arduino",
}


def guess_adapter(vid: int | None, pid: int | None) -> str:
    """The adapter's name from the table, the vendor's, or ``""``."""
    if vid is None:
        return ""
    if pid is not None and (vid, pid) in ADAPTERS:
        return ADAPTERS[(vid, pid)]
    return VENDORS.get(vid, "")


@dataclass
class PortEntry:
    """One serial port, as ``vendhw ports`` shows it."""

    device: str
    vid: int | None = None
    pid: int | None = None
    serial_number: str = ""
    description: str = ""
    manufacturer: str = ""
    location: str = ""
    by_id: str = ""
    """The stable /dev/serial/by-id/ name, when udev made one."""
    identity: str = ""
    """The ``usb-serial://VID:PID?serial=SN`` URL that finds this adapter again after an
    unplug wherever it comes back (USB ports only): paste it into machine.toml."""

    @property
    def usb_id(self) -> str:
        return f"{self.vid:04X}:{self.pid:04X}" if self.vid is not None and self.pid is not None \
            else ""

    @property
    def adapter(self) -> str:
        return guess_adapter(self.vid, self.pid)

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "usb_id": self.usb_id or None,
                "serial_number": self.serial_number or None,
                "description": self.description or None,
                "manufacturer": self.manufacturer or None, "adapter": self.adapter or None,
                "location": self.location or None, "by_id": self.by_id or None,
                "identity": self.identity or None}

    @classmethod
    def from_port_info(cls, info: Any) -> PortEntry:
        """From a pyserial ``ListPortInfo``."""
        description = info.description if info.description not in (None, "n/a") else ""
        return cls(device=info.device, vid=info.vid, pid=info.pid,
                   serial_number=info.serial_number or "", description=description,
                   manufacturer=info.manufacturer or "", location=info.location or "")


def _by_id_names(directory: str = "/dev/serial/by-id") -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        names = os.listdir(directory)
    except OSError:
        return out
    for name in names:
        path = os.path.join(directory, name)
        out[os.path.realpath(path)] = path
    return out


def list_ports(extra: tuple[str, ...] = ()) -> list[PortEntry]:
    """Every serial port pyserial finds, plus the paths in ``extra`` (a pty, a symlink)."""
    from vendhw.transport.identity import comports, identity_url

    by_id = _by_id_names()
    infos = sorted(comports())
    entries = []
    for info in infos:
        entry = PortEntry.from_port_info(info)
        entry.identity = identity_url(info, infos) or ""
        entries.append(entry)
    known = {os.path.realpath(e.device) for e in entries}
    for path in extra:
        real = os.path.realpath(path)
        if real in known:
            continue
        if not os.path.exists(path):
            from vendhw.errors import PortNotFoundError

            raise PortNotFoundError(f"{path}: no such port")
        description = "pseudo-terminal (a simulator or a virtual port)" \
            if real.startswith("/dev/pts/") else "serial device"
        entries.append(PortEntry(device=path, description=description))
        known.add(real)
    for entry in entries:
        entry.by_id = by_id.get(os.path.realpath(entry.device), "")
    return entries
