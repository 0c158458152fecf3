"""Build one request frame by command name (``vendhw send``) and tell whether it moves things.

``build_request("ssp", "GET SERIAL NUMBER", [])`` returns the frame bytes with checksum and
stuffing; ARGS are hex bytes (the command's data) or ``key=value`` fields of the protocol's
framer (``sn=5 column=11`` for Easivend). :func:`danger` names what a frame would move
(a motor, a payout, a note): such frames need ``--yes``. No I/O here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from vendhw.errors import ConfigurationError, VendhwError
from vendhw.framing import Frame, Framer, get_framer
from vendhw.tools.probe import LineSettings

SETTINGS: dict[str, LineSettings] = {
    "cctalk": LineSettings(9600),
    "ssp": LineSettings(9600, stopbits=2),
    "id003": LineSettings(9600, parity="E"),
    "mdb": LineSettings(9600, nine_bit="in-band"),
    "board101": LineSettings(9600),
    "easivend": LineSettings(9600),
    "fafb": LineSettings(57600),
}
"""Each protocol's usual line settings (``--baud`` overrides the speed)."""

DEFAULT_ADDRESS: dict[str, int] = {"cctalk": 2, "ssp": 0, "mdb": 0x08}

DANGEROUS: dict[str, dict[int, str]] = {
    "ssp": {0x33: "pays out", 0x3D: "pays out (float)", 0x3F: "empties the payout",
            0x42: "pays out a note", 0x43: "stacks a note", 0x44: "pays out (float)",
            0x46: "pays out", 0x52: "empties the payout", 0x5D: "runs the coin motor"},
    "cctalk": {167: "pays out coins", 134: "pays out coins", 125: "pays out", 121: "empties "
               "the hopper", 239: "runs motors", 146: "runs motors", 240: "fires solenoids",
               163: "runs the hopper motor", 147: "cycles the stacker"},
    "id003": {0x41: "stacks a note", 0x42: "stacks a note"},
    "board101": {0x05: "starts a motor", 0x08: "opens a lock"},
    "easivend": {0x70: "dispenses"},
    "fafb": {0x03: "sells (vends)", 0x06: "drives a motor", 0x25: "pays out change"},
}
"""Protocol -> command code -> what it does; these need ``--yes``."""


@dataclass
class Request:
    """A built request: the framer, the bytes, the command's name."""

    protocol: str
    framer: Framer
    data: bytes
    name: str
    code: int | None


def _number(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise ConfigurationError(f"not a number: {text!r} (give 12, 0x0C or a name)") from None


def _args(args: tuple[str, ...]) -> tuple[bytes, dict[str, Any]]:
    data = bytearray()
    fields: dict[str, Any] = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep:
            if key == "data":
                data += _hex(value)
            else:
                fields[key] = _number(value)
        else:
            data += _hex(arg)
    return bytes(data), fields


def _hex(text: str) -> bytes:
    from vendhw.framing.hextext import parse_hex

    try:
        return parse_hex(text)
    except ValueError as exc:
        raise ConfigurationError(f"ARGS: {exc} (give hex bytes or key=value)") from None


def _lookup(table: dict[int, str], command: str, protocol: str) -> int:
    wanted = re.sub(r"[\s_-]+", " ", command.strip()).upper()
    for code, name in table.items():
        if name.upper() == wanted:
            return code
    if re.fullmatch(r"(0x)?[0-9a-fA-F]+|\d+", command.strip()):
        return _number(command.strip())
    close = [n for n in table.values() if wanted in n.upper()][:5]
    hint = f"; did you mean: {', '.join(close)}" if close else ""
    raise ConfigurationError(f"unknown {protocol} command {command!r}{hint} "
                             f"(list them with: vendhw send {protocol} --list)")


def command_table(protocol: str, address: int | None = None) -> dict[int, str]:
    """Command code -> name for ``protocol`` (MDB: the commands of the device at address)."""
    if protocol == "ssp":
        from vendhw.framing.ssp import COMMANDS as SSP

        return SSP
    if protocol == "cctalk":
        from vendhw.framing.cctalk import HEADERS

        return {k: v for k, v in HEADERS.items() if k > 6}
    if protocol == "id003":
        from vendhw.framing.id003 import COMMANDS as ID003

        return ID003
    if protocol == "mdb":
        from vendhw.framing.mdb import COMMANDS as MDB

        names = MDB.get(address if address is not None else 0x08, MDB[0x08])
        return dict(enumerate(names))
    if protocol == "board101":
        from vendhw.framing.board101 import COMMANDS as B101

        return B101
    if protocol == "easivend":
        from vendhw.framing.easivend import MESSAGE_TYPES

        return MESSAGE_TYPES
    if protocol == "fafb":
        from vendhw.framing.fafb import COMMANDS as FAFB
        from vendhw.framing.fafb import DEVICE_ONLY

        return {k: v for k, v in FAFB.items() if k not in DEVICE_ONLY}
    raise ConfigurationError(f"unknown protocol {protocol!r}; known: {', '.join(SETTINGS)}")


def framer_for(protocol: str) -> Framer:
    return get_framer(protocol, **({"wire": "9bit"} if protocol == "mdb" else {}))


def build_request(protocol: str, command: str, args: tuple[str, ...],
                  address: int | None = None) -> Request:
    """The frame for ``command`` (a name or a code) with ``args``."""
    table = command_table(protocol, address)
    code = _lookup(table, command, protocol)
    data, fields = _args(args)
    framer = framer_for(protocol)
    name = table.get(code, f"0x{code:02X}")
    try:
        if protocol == "ssp":
            frame = framer.build(data=bytes((code,)) + data, seq=1 if code == 0x11 else 0,
                                 address=address if address is not None else 0, **fields)
        elif protocol == "cctalk":
            frame = framer.build(dest=address if address is not None else 2, header=code,
                                 data=data, **fields)
        elif protocol == "id003":
            frame = framer.build(code=code, data=data, **fields)
        elif protocol == "mdb":
            frame = framer.build(direction="host", address=address if address is not None
                                 else 0x08, command=code, data=data, **fields)
        elif protocol == "board101":
            extra: dict[str, Any] = {"data": data} if data else {}
            frame = framer.build(code=code, **extra, **fields)
        elif protocol == "easivend":
            frame = framer.build(mt=code, **fields)
        else:
            extra = {"text": data} if data else {}
            if "pack_no" not in fields and code not in (0x41, 0x42):
                extra["pack_no"] = 1
            frame = framer.build(code=code, **extra, **fields)
    except VendhwError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigurationError(f"cannot build {protocol} {name}: {exc}") from None
    return Request(protocol, framer, frame, name, code)


def parse_raw(protocol: str, raw: bytes) -> Request:
    """A ``--raw`` frame as a request; its code is ``None`` when it does not parse."""
    framer = framer_for(protocol)
    try:
        frame = framer.parse(raw, "host")
    except VendhwError:
        return Request(protocol, framer, raw, "raw bytes (not a valid frame)", None)
    return Request(protocol, framer, raw, str(frame.get("command", "raw frame")),
                   _code_of(protocol, frame))


def _code_of(protocol: str, frame: Frame) -> int | None:
    if protocol == "cctalk":
        return int(frame.get("header", -1))
    if protocol == "easivend":
        return int(frame.get("mt", -1))
    code = frame.get("code")
    return None if code is None else int(code)


def danger(request: Request, address: int | None = None) -> str:
    """What the request would move, or ``""`` when it is harmless."""
    if request.code is None:
        return "it is not a valid frame, so what it does cannot be told"
    if request.protocol == "mdb":
        try:
            frame = request.framer.parse(request.data, "host")
        except VendhwError:
            return "it is not a valid frame, so what it does cannot be told"
        name = str(frame.get("command", "")).split(" / ")[0]
        sub = str(frame.get("subcommand", ""))
        if name == "DISPENSE" or sub == "PAYOUT":
            return "pays out coins"
        if name == "ESCROW":
            return "stacks or returns a bill"
        if name == "VEND" and "CASHLESS" in str(frame.get("device", "")):
            return "starts a cashless vend"
        return ""
    if request.protocol == "id003" and request.data[2:4] == b"\xf0\x20":
        return "drives the recycler"
    return DANGEROUS.get(request.protocol, {}).get(request.code, "")
