"""``usb://VID:PID[/INTERFACE]``: a USB device's bulk endpoints as a byte pipe (pyusb).

Reads always pass a finite timeout (a ``timeout=0`` read cannot be aborted), the kernel
driver is detached with a clear error if that fails, and resources are disposed on close.
Install with ``pip install vendhw[usb]``.
"""

from __future__ import annotations

from typing import Any

from vendhw.errors import (
    ConfigurationError,
    DisconnectedError,
    PortBusyError,
    PortNotFoundError,
    TransportError,
)
from vendhw.transport.base import Transport

try:  # optional dependency
    import usb.core
    import usb.util
except ImportError:  # pragma: no cover - depends on the install
    usb = None


def is_usable() -> bool:
    """True when pyusb is installed."""
    return usb is not None


def parse_usb_url(url: str) -> tuple[int, int, int]:
    """``usb://0ce5:0023/0`` -> ``(0x0CE5, 0x0023, 0)``."""
    body = url.split("://", 1)[1]
    ids, _, iface = body.partition("/")
    try:
        vid_text, pid_text = ids.split(":")
        return int(vid_text, 16), int(pid_text, 16), int(iface or 0)
    except ValueError:
        raise ConfigurationError(f"{url}: expected usb://VID:PID[/INTERFACE] in hex") from None


class UsbTransport(Transport):
    """Bulk IN/OUT endpoints of one interface."""

    MAX_PACKET = 512

    def __init__(self, url: str, **options: Any) -> None:
        if usb is None:
            raise ConfigurationError("usb:// needs pyusb: pip install 'vendhw[usb]'")
        super().__init__(url, trace=options.pop("trace", None),
                         capture=options.pop("capture", None))
        vid, pid, iface = parse_usb_url(url)
        dev = usb.core.find(idVendor=vid, idProduct=pid)
        if dev is None:
            raise PortNotFoundError(f"{url}: no USB device {vid:04x}:{pid:04x}")
        self._dev = dev
        self._iface = iface
        try:
            if dev.is_kernel_driver_active(iface):
                dev.detach_kernel_driver(iface)
        except (NotImplementedError, usb.core.USBError) as exc:
            raise PortBusyError(f"{url}: cannot detach the kernel driver ({exc})") from exc
        try:
            dev.set_configuration()
            cfg = dev.get_active_configuration()
            intf = cfg[(iface, 0)]
            self._ep_in = usb.util.find_descriptor(
                intf, custom_match=lambda e: usb.util.endpoint_direction(e.bEndpointAddress)
                == usb.util.ENDPOINT_IN)
            self._ep_out = usb.util.find_descriptor(
                intf, custom_match=lambda e: usb.util.endpoint_direction(e.bEndpointAddress)
                == usb.util.ENDPOINT_OUT)
        except usb.core.USBError as exc:
            raise TransportError(f"{url}: cannot configure ({exc})") from exc
        if self._ep_in is None or self._ep_out is None:
            raise ConfigurationError(f"{url}: interface {iface} has no bulk IN/OUT endpoints")

    def _read_some(self, timeout: float) -> bytes:
        ms = max(1, int(timeout * 1000))
        try:
            return bytes(self._ep_in.read(self.MAX_PACKET, timeout=ms))
        except usb.core.USBTimeoutError:
            return b""
        except usb.core.USBError as exc:
            raise DisconnectedError(f"{self.url}: {exc}") from exc

    def _write(self, data: bytes) -> None:
        try:
            self._ep_out.write(data, timeout=2000)
        except usb.core.USBError as exc:
            raise DisconnectedError(f"{self.url}: write failed ({exc})") from exc

    def _close(self) -> None:
        usb.util.dispose_resources(self._dev)
