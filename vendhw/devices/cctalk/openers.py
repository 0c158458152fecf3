"""Opening ccTalk lines and devices from URLs (``/dev/ttyUSB0``, ``sim://cctalk-coin``...)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from vendhw.devices.cctalk.acceptors import CcTalkBillValidator, CcTalkCoinAcceptor
from vendhw.devices.cctalk.bus import CcTalkBus
from vendhw.devices.cctalk.device import CcTalkDevice
from vendhw.devices.cctalk.hopper import CcTalkHopper
from vendhw.devices.cctalk.tables import BAUDRATE, REPLY_TIMEOUT, RETRIES
from vendhw.errors import ConfigurationError
from vendhw.options import option_flag
from vendhw.transport import open_transport

# --- opening ----------------------------------------------------------------------------------

_BUS_OPTIONS = ("checksum", "echo", "reply_timeout", "retries")


def open_bus(url: str, *, checksum: str = "simple", echo: bool | str = True,
             reply_timeout: float | str = REPLY_TIMEOUT, retries: int | str = RETRIES,
             **transport_options: Any) -> CcTalkBus:
    """Open a ccTalk line (``/dev/ttyUSB0``, ``sim://cctalk-coin``...) at 9600 baud."""
    if checksum not in ("simple", "crc16"):
        raise ConfigurationError(f"ccTalk checksum must be 'simple' or 'crc16', not {checksum!r}")
    if url.startswith("sim://"):
        transport_options.setdefault("checksum", checksum)  # the simulator must agree
    transport = open_transport(url, baudrate=BAUDRATE, **transport_options)
    return CcTalkBus(transport, checksum=checksum, echo=option_flag(echo),
                     reply_timeout=float(reply_timeout), retries=int(retries))


def _split(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    bus = {k: options.pop(k) for k in _BUS_OPTIONS if k in options}
    return bus, options


def open_coin_acceptor(url: str, *, address: int | str | None = None,
                       resume: dict[str, Any] | None = None,
                       coin_values: dict[int, int] | None = None,
                       channels: Iterable[int] | None = None,
                       **options: Any) -> CcTalkCoinAcceptor:
    """Open a coin acceptor (default address 2). Call ``start()`` next."""
    bus_options, transport_options = _split(options)
    bus = open_bus(url, **bus_options, **transport_options)
    return CcTalkCoinAcceptor(bus, address=None if address is None else int(address),
                              resume=resume, coin_values=coin_values, channels=channels)


def open_bill_validator(url: str, *, address: int | str | None = None,
                        resume: dict[str, Any] | None = None, escrow: bool | str = True,
                        bill_values: dict[int, int] | None = None,
                        channels: Iterable[int] | None = None,
                        **options: Any) -> CcTalkBillValidator:
    """Open a bill validator (default address 40) with escrow. Call ``start()`` next."""
    bus_options, transport_options = _split(options)
    bus = open_bus(url, **bus_options, **transport_options)
    return CcTalkBillValidator(bus, address=None if address is None else int(address),
                               resume=resume, escrow=option_flag(escrow), bill_values=bill_values,
                               channels=channels)


def open_hopper(url: str, *, address: int | str | None = None,
                coin_value: int | str | None = None, security: str = "serial",
                **options: Any) -> CcTalkHopper:
    """Open a payout hopper (default address 3). Call ``start()`` next."""
    bus_options, transport_options = _split(options)
    bus = open_bus(url, **bus_options, **transport_options)
    return CcTalkHopper(bus, address=None if address is None else int(address),
                        coin_value=None if coin_value is None else int(coin_value),
                        security=security)


_OPENERS: dict[str, Callable[..., CcTalkDevice]] = {
    "coin": open_coin_acceptor, "hopper": open_hopper, "bill": open_bill_validator,
}


def open_device(url: str, *, device: str | None = None, **options: Any) -> CcTalkDevice:
    """Open a ccTalk cash device: ``device`` is ``coin``, ``hopper`` or ``bill`` (guessed
    from ``sim://cctalk-<device>`` URLs)."""
    if device is None and url.startswith("sim://cctalk-"):
        device = url[len("sim://cctalk-"):].split("?")[0].split("/")[0]
    if device not in _OPENERS:
        raise ConfigurationError(f"ccTalk device must be one of {', '.join(_OPENERS)}; "
                                 f"got {device!r}")
    return _OPENERS[device](url, **options)
