"""USB-serial adapters in front of simulators, for unplug tests: each serves its simulator
on a pty and is listed (faked ``serial.tools.list_ports``) under a fixed VID:PID and serial
number, so a ``usb-serial://`` URL finds it wherever it is. Unplugging closes the pty (the
host's reads and writes fail like a pulled USB adapter's); plugging back serves the same
simulator (the device kept its power and state) on a new pty at a new path."""

from __future__ import annotations

from typing import Any

import pytest
from serial.tools.list_ports_common import ListPortInfo

from vendhw.sim.pty import SimulatorOnPty
from vendhw.transport import identity
from vendhw.transport.pty import PtyPair

VID, PID = 0x0403, 0x6001


class UsbBus:
    """The system's port list, as ``vendhw.transport.identity.comports`` sees it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.adapters: list[Adapter] = []
        monkeypatch.setattr(identity, "comports", self.comports)

    def comports(self) -> list[ListPortInfo]:
        return [a.info for a in self.adapters if a.info is not None]

    def adapter(self, simulator: Any, serial: str) -> Adapter:
        adapter = Adapter(self, simulator, serial)
        self.adapters.append(adapter)
        return adapter

    def close(self) -> None:
        for adapter in self.adapters:
            adapter.close()


class Adapter:
    """One adapter; ``url`` is its identity, ``paths`` every path it had."""

    def __init__(self, bus: UsbBus, simulator: Any, serial: str) -> None:
        self.bus = bus
        self.simulator = simulator
        self.serial = serial
        self.url = f"usb-serial://{VID:04X}:{PID:04X}?serial={serial}"
        self.info: ListPortInfo | None = None
        self.pty: SimulatorOnPty | None = None
        self.paths: list[str] = []
        self.squatters: list[PtyPair] = []
        """Ptys holding numbers an unplug freed, as another adapter would: the device comes
        back at a new path."""
        self.plug()

    def plug(self) -> None:
        used = {p for a in self.bus.adapters for p in a.paths} | set(self.paths)
        while True:
            pty = SimulatorOnPty(self.simulator)
            if pty.port not in used:
                break
            pty.close()
            self.squatters.append(PtyPair())  # takes the old number
        self.pty = pty
        self.paths.append(pty.port)
        info = ListPortInfo(pty.port, skip_link_detection=True)
        info.vid, info.pid, info.serial_number = VID, PID, self.serial
        self.info = info

    def unplug(self) -> None:
        self.info = None
        if self.pty is not None:
            self.pty.close()
            self.pty = None

    def close(self) -> None:
        self.unplug()
        for pair in self.squatters:
            pair.close()
        self.squatters.clear()
