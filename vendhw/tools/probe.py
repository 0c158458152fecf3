"""What answers on a port: each protocol's harmless identification at its usual line settings.

An :class:`Attempt` is data: the line settings, the request frames (built by the protocol's
framer, checksum included) and how to read an identity out of the replies. Nothing here moves
a motor or pays out: every request is a status, poll, setup or identification request, and
the board families that are bus masters (FA FB) are only listened to.

:func:`run_attempt` is the thin runner: open, send, read replies through the protocol's
deframer until a valid frame or the deadline, close.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from vendhw.errors import TransportError, VendhwError
from vendhw.framing import Frame, Garbage, get_framer

try:
    import termios

    _OPEN_ERRORS: tuple[type[Exception], ...] = (VendhwError, OSError, termios.error)
except ImportError:  # pragma: no cover - Windows
    _OPEN_ERRORS = (VendhwError, OSError)

REPLY_TIMEOUT = 0.3
"""Seconds a probe waits for the first byte of a reply (every protocol answers within 0.2 s)."""
LISTEN_TIME = 0.6
"""Seconds a probe listens for a bus master's poll (FA FB boards poll every 0.2 s)."""
REPLY_GAP = 0.05
"""Inter-byte gap that ends one reply burst."""


@dataclass(frozen=True)
class LineSettings:
    """Serial line settings, shown as ``9600 8N2``."""

    baudrate: int = 9600
    bytesize: int = 8
    parity: str = "N"
    stopbits: float = 1
    nine_bit: str = ""
    """``"in-band"`` (escaped 9-bit form, pty simulators and in-band adapters) or ``"mdb9"``
    (mark/space parity on a Linux UART), empty for ordinary 8-bit lines."""

    @property
    def label(self) -> str:
        if self.nine_bit:
            return f"{self.baudrate} 9-bit ({self.nine_bit})"
        stop = f"{self.stopbits:g}"
        return f"{self.baudrate} {self.bytesize}{self.parity}{stop}"

    def transport_options(self, port: str = "") -> dict[str, Any]:
        """Options for :func:`~vendhw.transport.open_transport`.

        A pty has no parity (Linux drops PARENB, and pyserial's next open then fails with
        EINVAL), so on a pty the parity is left out: the simulator does not care.
        """
        if self.nine_bit == "mdb9":
            return {"baudrate": self.baudrate}
        parity = "N" if port and is_pty(port) else self.parity
        return {"baudrate": self.baudrate, "bytesize": self.bytesize, "parity": parity,
                "stopbits": self.stopbits}


Identify = Callable[[list[Frame]], dict[str, Any]]


@dataclass(frozen=True)
class Attempt:
    """One protocol's identification at one line setting."""

    protocol: str
    what: str
    """Human words for the requests, e.g. ``SYNC + GET SERIAL NUMBER``."""
    settings: LineSettings
    requests: tuple[bytes, ...] = ()
    """Frames sent one after the other; empty means listen only."""
    reply_direction: str = "device"
    identify: Identify | None = None
    framer_options: dict[str, Any] = field(default_factory=dict)
    after_reply: bytes = b""
    """Sent after each valid reply (MDB's ACK)."""
    board: str = ""
    """The board profile the attempt came from, if any."""


@dataclass
class Result:
    """What one attempt saw."""

    attempt: Attempt
    answered: bool = False
    identity: dict[str, Any] = field(default_factory=dict)
    frames: list[Frame] = field(default_factory=list)
    garbage_bytes: int = 0
    checksum_errors: int = 0
    error: str = ""

    @property
    def note(self) -> str:
        """One line for a human: why it did not answer, when that can be told."""
        if self.error:
            return self.error
        if self.answered:
            return ""
        if self.checksum_errors or self.garbage_bytes:
            return (f"{self.garbage_bytes} bytes that are not {self.attempt.protocol} frames "
                    "(wrong baud rate or parity, or another protocol)")
        return "no reply"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "protocol": self.attempt.protocol, "settings": self.attempt.settings.label,
            "answered": self.answered, "identity": self.identity or None,
            "request": self.attempt.what, "garbage_bytes": self.garbage_bytes,
        }
        if self.attempt.board:
            out["board"] = self.attempt.board
        if self.note and not self.answered:
            out["note"] = self.note
        return out


# -- identities ----------------------------------------------------------------------------


def _ascii(value: Any) -> str:
    return bytes(value).decode("ascii", "replace").strip("\x00 ") if value else ""


def _data(frame: Frame) -> bytes:
    return bytes(frame.get("data", b"") or b"")


def _ssp_identity(frames: list[Frame]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if len(frames) > 1:
        data = _data(frames[1])
        if len(data) >= 4:
            out["serial_number"] = int.from_bytes(data[:4], "big")
    if len(frames) > 2:
        data = _data(frames[2])
        if len(data) >= 5:
            unit = {0: "validator", 3: "smart hopper", 6: "smart payout", 7: "note float"}
            out["unit_type"] = unit.get(data[0], f"0x{data[0]:02X}")
            out["firmware"] = _ascii(data[1:5])
        if len(data) >= 8:
            out["country"] = _ascii(data[5:8])
    return out


def _cctalk_identity(names: tuple[str, ...]) -> Identify:
    def identify(frames: list[Frame]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, frame in zip(names, frames[1:], strict=False):
            data = _data(frame)
            out[name] = int.from_bytes(data, "little") if name == "serial_number" else _ascii(data)
        if frames:
            out["address"] = frames[0].get("src", frames[0].get("third"))
        return out
    return identify


def _id003_identity(frames: list[Frame]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if frames:
        out["status"] = frames[0].get("command") or f"0x{frames[0].get('code', 0):02X}"
    if len(frames) > 1:
        out["version"] = _ascii(_data(frames[1]))
    return out


def _mdb_identity(device: str) -> Identify:
    def identify(frames: list[Frame]) -> dict[str, Any]:
        out: dict[str, Any] = {"device": device}
        data = _data(frames[0]) if frames else b""
        if data:
            out["level"] = data[0]
        if len(data) >= 3:
            out["country_code"] = f"{data[1]:02X}{data[2]:02X}"
        return out
    return identify


def _board101_identity(frames: list[Frame]) -> dict[str, Any]:
    return {"version": str(frames[0].get("version", ""))} if frames else {}


def _easivend_identity(frames: list[Frame]) -> dict[str, Any]:
    return {"status": frames[0].get("status")} if frames else {}


def _fafb_identity(frames: list[Frame]) -> dict[str, Any]:
    return {"polling": True, "polls_seen": sum(1 for f in frames if f.get("command") == "POLL")}


# -- the attempts --------------------------------------------------------------------------

CCTALK_ADDRESSES: dict[int, str] = {2: "coin acceptor", 40: "bill validator", 3: "hopper"}
"""Usual ccTalk addresses: what a probe asks for."""


def is_pty(port: str) -> bool:
    """A pseudo-terminal (a simulator's port): 9-bit lines use the in-band form there."""
    return os.path.realpath(port).startswith("/dev/pts/")


def cash_attempts(port: str = "") -> list[Attempt]:
    """Identification attempts for every cash protocol."""
    attempts: list[Attempt] = []
    cctalk = get_framer("cctalk")
    names = ("manufacturer", "category", "product", "serial_number")
    for address, what in CCTALK_ADDRESSES.items():
        requests = tuple(cctalk.build(dest=address, header=h) for h in (254, 246, 245, 244, 242))
        attempts.append(Attempt(
            "cctalk", f"SIMPLE POLL + identification at address {address} ({what})",
            LineSettings(9600), requests, identify=_cctalk_identity(names)))
    ssp = get_framer("ssp")
    attempts.append(Attempt(
        "ssp", "SYNC + GET SERIAL NUMBER + SETUP REQUEST", LineSettings(9600, stopbits=2),
        (ssp.build(data=b"\x11", seq=1), ssp.build(data=b"\x0c", seq=0),
         ssp.build(data=b"\x05", seq=1)), identify=_ssp_identity))
    id003 = get_framer("id003")
    attempts.append(Attempt(
        "id003", "STATUS REQUEST + VERSION REQUEST", LineSettings(9600, parity="E"),
        (id003.build(code=0x11), id003.build(code=0x88)), identify=_id003_identity))
    forms = ["in-band"] if not port or is_pty(port) else ["mdb9", "in-band"]
    for form in forms:
        mdb = get_framer("mdb", wire="9bit")
        ack = mdb.build(direction="host", control="ACK")
        for address, device in ((0x08, "coin changer"), (0x30, "bill validator")):
            attempts.append(Attempt(
                "mdb", f"SETUP to {device} (0x{address:02X})", LineSettings(9600, nine_bit=form),
                (mdb.build(direction="host", address=address, command=1),),
                identify=_mdb_identity(device), framer_options={"wire": "9bit"},
                after_reply=ack))
    return attempts


def board_attempts() -> list[Attempt]:
    """Each board family's status request at the line settings of its profiles."""
    from vendhw.devices.boards.profile import load_all

    attempts: list[Attempt] = []
    groups: dict[tuple[str, LineSettings], list[Any]] = {}
    for profile in load_all():
        serial = profile.serial_options()
        settings = LineSettings(int(serial.get("baudrate", 9600)), int(serial.get("bytesize", 8)),
                                str(serial.get("parity", "N")), float(serial.get("stopbits", 1)))
        groups.setdefault((profile.family, settings), []).append(profile)
    for (family, settings), profiles in groups.items():
        profile = profiles[0]
        name = ", ".join(p.name for p in profiles)
        framer = get_framer(family)
        if family == "board101":
            attempts.append(Attempt(family, "READ VERSION", settings,
                                    (framer.build(command="READ VERSION"),),
                                    identify=_board101_identity, board=name))
        elif family == "easivend":
            column = profile.slots()[0]
            attempts.append(Attempt(family, f"CHECK column {column}", settings,
                                    (framer.build(command="CHECK", sn=0xA5, column=column),),
                                    identify=_easivend_identity, board=name))
        elif family == "fafb":
            attempts.append(Attempt(family, "listen for the VMC's POLL", settings, (),
                                    reply_direction="device", identify=_fafb_identity,
                                    board=name))
    return attempts


def all_attempts(port: str = "", protocols: set[str] | None = None) -> list[Attempt]:
    """Every attempt, cash protocols first, optionally only some protocols."""
    attempts = cash_attempts(port) + board_attempts()
    if protocols:
        attempts = [a for a in attempts if a.protocol in protocols]
    return attempts


# -- the runner ----------------------------------------------------------------------------


def _open(port: str, attempt: Attempt) -> Any:
    from vendhw.transport import open_transport

    options = attempt.settings.transport_options(port)
    url = f"mdb9://{port}" if attempt.settings.nine_bit == "mdb9" else port
    return open_transport(url, **options)


def _replies(transport: Any, deframer: Any, timeout: float, want: int) -> Iterator[Frame]:
    """Valid frames arriving before ``timeout`` s (stops after ``want`` frames if want > 0)."""
    deadline = time.monotonic() + timeout
    got = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        data = transport.read(left, gap=REPLY_GAP)
        if not data:
            continue
        for item in deframer.feed(data, time.monotonic()):
            if isinstance(item, Frame):
                yield item
                got += 1
                if want and got >= want:
                    return


def run_attempt(port: str, attempt: Attempt, *, timeout: float = REPLY_TIMEOUT,
                listen: float = LISTEN_TIME) -> Result:
    """Try one attempt on ``port``; never raises for a silent or garbled line."""
    result = Result(attempt)
    try:
        transport = _open(port, attempt)
    except _OPEN_ERRORS as exc:
        result.error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return result
    framer = get_framer(attempt.protocol, **attempt.framer_options)
    deframer = framer.deframer(direction=attempt.reply_direction)  # type: ignore[arg-type]
    try:
        transport.discard_input()
        if not attempt.requests:
            result.frames = list(_replies(transport, deframer, listen, 3))
        for request in attempt.requests:
            transport.write(request)
            reply = next(_replies(transport, deframer, timeout, 1), None)
            if reply is None:
                break
            result.frames.append(reply)
            if attempt.after_reply:
                transport.write(attempt.after_reply)
        for item in deframer.flush():
            if isinstance(item, Garbage):
                pass
    except (TransportError, OSError) as exc:
        result.error = str(exc).splitlines()[0]
    finally:
        transport.close()
    result.garbage_bytes = deframer.stats.garbage_bytes + deframer.pending
    result.checksum_errors = deframer.stats.checksum_errors
    result.answered = bool(result.frames)
    if result.answered and attempt.identify is not None:
        try:
            result.identity = attempt.identify(result.frames)
        except (KeyError, ValueError, TypeError, IndexError):
            result.identity = {}
    return result
