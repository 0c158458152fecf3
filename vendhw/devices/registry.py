"""Cash devices by protocol name: the table and :func:`open_cash_device`.

Used by ``vendhw cash`` and by the machine agent (``[[cash]]`` entries). Protocol modules
load lazily, so a missing optional package costs only its own protocols, said in one line.
"""

from __future__ import annotations

import importlib
from typing import Any

from vendhw import registry
from vendhw.devices.cash import CashDevice
from vendhw.errors import ConfigurationError

PROTOCOLS: dict[str, str] = registry.cash_devices()
"""Protocol name -> ``module:opener``; every opener is ``open(url, **options) -> CashDevice``.
A view of :mod:`vendhw.registry`; plugins' cash devices are found by :func:`open_cash_device`."""


def open_cash_device(protocol: str, port: str, **options: Any) -> CashDevice:
    """Open the cash device ``protocol`` names on ``port`` (not started yet)."""
    known = {**registry.cash_devices(registry.plugins()), **PROTOCOLS}
    target = known.get(protocol.lower())
    if target is None:
        names = [*PROTOCOLS, *(k for k in known if k not in PROTOCOLS)]
        raise ConfigurationError(f"unknown cash protocol {protocol!r}; known: "
                                 f"{', '.join(names)}")
    module_name, attr = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        if missing == module_name:
            raise ConfigurationError(f"protocol {protocol!r} is not available in this "
                                     f"installation ({module_name} is missing)") from None
        raise ConfigurationError(f"protocol {protocol!r} needs the package {missing!r}, "
                                 f"which is not installed") from None
    opener = getattr(module, attr, None)
    if opener is None:
        raise ConfigurationError(f"protocol {protocol!r}: {module_name} has no {attr}()")
    check_options(protocol, opener, module, options)
    device = opener(port, **options)
    if not isinstance(device, CashDevice):
        raise ConfigurationError(f"{module_name}.{attr} did not return a cash device")
    return device


TRANSPORT_OPTIONS = ("baudrate", "parity", "stopbits", "bytesize", "low_latency", "capture",
                     "rtscts", "xonxoff", "dsrdtr")
"""``-o`` keys every protocol accepts: they go to the serial port."""

_KINDS = (("bool", "true or false"), ("float", "a number of seconds"),
          ("int", "a whole number (12 or 0x0C)"))


def check_options(protocol: str, opener: Any, module: Any, options: dict[str, Any]) -> None:
    """Refuse an unknown ``-o`` key, or a value of the wrong kind, naming what is accepted.

    An opener that only takes ``**options`` (a plugin's) gets its options unchecked.
    """
    import inspect

    from vendhw.options import option_flag

    params = {name: p for name, p in inspect.signature(opener).parameters.items()
              if p.kind is inspect.Parameter.KEYWORD_ONLY}
    if not params:
        return
    names: dict[str, str] = {n: str(p.annotation) for n, p in params.items()}
    bus = getattr(module, "open_bus", None)  # ccTalk: line options go to the bus
    bus_params = inspect.signature(bus).parameters if callable(bus) else {}
    for name in getattr(module, "_BUS_OPTIONS", ()):
        param = bus_params.get(name)
        names.setdefault(name, str(param.annotation) if param is not None else "")
    known = sorted(set(names) | set(TRANSPORT_OPTIONS))
    for key, value in options.items():
        if key not in known:
            raise ConfigurationError(f"-o {key}: not an option of {protocol}; known: "
                                     f"{', '.join(k for k in known if k != 'resume')}")
        annotation = names.get(key, "int" if key in ("baudrate", "bytesize") else "")
        first = annotation.split("|")[0].strip()
        for kind, words in _KINDS:
            if first != kind:
                continue
            try:
                if kind == "bool":
                    option_flag(value)
                elif kind == "float":
                    float(value)
                else:
                    int(str(value), 0)
            except (TypeError, ValueError):
                raise ConfigurationError(f"-o {key}={value}: {key} takes {words}") from None
            break


__all__ = ["PROTOCOLS", "TRANSPORT_OPTIONS", "check_options", "open_cash_device"]
