"""Motor boards: profiles, drivers and the vend contract the Machine layer builds on.

>>> from vendhw.devices.boards import open_board
>>> with open_board("fafb-xy", "sim://fafb-xy") as board:   # doctest: +SKIP
...     report = board.vend(board.profile.slot_to_motor("1-3"), seq=1)
...     report.outcome
<Outcome.DELIVERED: 'delivered'>

A board model is a TOML profile (``boards/``); a protocol family is a driver class
(:data:`~vendhw.devices.boards.profile.FAMILIES`). Every driver returns board outcomes as a
:class:`VendReport` instead of raising, reuses the caller's sequence number on every retry
(so a retry never vends twice), and answers :data:`Outcome.UNKNOWN` when the link died after
the vend command may have reached the board.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

from vendhw.devices.boards.outcomes import Outcome, VendReport
from vendhw.devices.boards.profile import (
    FAMILIES,  # noqa: F401 (its old import path)
    BoardProfile,
    Timing,
    families,
    load_profile,
    profile_names,
)
from vendhw.errors import NoResponseError, TransportError
from vendhw.transport.base import Transport

Callback = Callable[[], None]


class Board(ABC):
    """A driver for one board on one transport (one thread at a time).

    :param profile: the board model.
    :param transport: an open transport (see :func:`open_board`).
    """

    family: ClassVar[str]
    sequence_range: tuple[int, int] | None = None
    """Valid vend sequence numbers (FA FB PackNO, Easivend SN), or None (101: none)."""

    def __init__(self, profile: BoardProfile, transport: Transport) -> None:
        self.profile = profile
        self.transport = transport

    # -- the contract ---------------------------------------------------------------------

    @abstractmethod
    def vend(self, motor: int, seq: int | None, *, drop_sensor: bool = True,
             on_sent: Callback | None = None, on_ack: Callback | None = None) -> VendReport:
        """Turn board slot ``motor`` once and report what happened.

        ``on_sent`` runs (in the caller's thread) right after the vend command was first
        written; ``on_ack`` when the board acknowledged it. Retries reuse ``seq``. Board
        outcomes are returned; :data:`Outcome.UNKNOWN` when the link died after the command
        may have reached the board.

        :raises ~vendhw.errors.NoResponseError: nothing of the vend was ever written.
        :raises ~vendhw.errors.ConfigurationError: ``motor`` or ``seq`` out of range.
        """

    @abstractmethod
    def query_vend(self, motor: int, seq: int) -> VendReport | None:
        """What became of the vend sent with ``seq``; None when the protocol cannot tell.

        Never starts a vend.
        """

    @abstractmethod
    def status(self) -> dict[str, Any]:
        """JSON-able board status: at least ``{"ok": bool}``."""

    @abstractmethod
    def selftest(self) -> dict[str, Any]:
        """JSON-able self test result: at least ``{"ok": bool}``."""

    @abstractmethod
    def probe(self) -> None:
        """Check that the board answers; NoResponseError (with a hint) when it does not."""

    def close(self) -> None:
        """Release the port; safe to call twice."""
        self.transport.close()

    def check_port(self) -> None:
        """Look at the port without sending anything (between commands only).

        Why: a USB adapter pulled out while the board is idle is noticed now, not by the
        next sale's first command; the transport records the loss (``transport.lost``). A
        host-master board's stale input is dropped before every request anyway, so reading
        it here changes nothing. Drivers with their own reader thread override this."""
        try:
            self.transport.discard_input()
        except TransportError:
            pass  # recorded on the transport; the Machine reads it from there

    # -- shared helpers -------------------------------------------------------------------

    @property
    def timing(self) -> Timing:
        return self.profile.timing

    def check_motor(self, motor: int) -> int:
        """Refuse a board slot the profile does not have, before anything is written."""
        from vendhw.errors import ConfigurationError

        if isinstance(motor, bool) or not isinstance(motor, int) or \
                motor not in set(self.profile.slots()):
            raise ConfigurationError(
                f"board slot {motor!r} is not on profile {self.profile.name!r} "
                f"(use profile.slot_to_motor() to map an operator slot)")
        return motor

    def check_seq(self, seq: int | None) -> int:
        """A vend sequence number inside :attr:`sequence_range`."""
        from vendhw.errors import ConfigurationError

        lo, hi = self.sequence_range or (0, 0)
        if isinstance(seq, bool) or not isinstance(seq, int) or not lo <= seq <= hi:
            raise ConfigurationError(
                f"{self.profile.family} vend sequence must be an int in {lo}..{hi}, got {seq!r}")
        return seq

    def next_seq(self, last: int | None) -> int:
        """The sequence number after ``last``, wrapping inside :attr:`sequence_range`."""
        lo, hi = self.sequence_range or (0, 0)
        if last is None or not lo <= last < hi:
            return lo
        return last + 1

    def no_response(self, expected: str, timeout: float) -> NoResponseError:
        """A NoResponseError naming port, baud rate, what was expected, with a hint."""
        serial = self.profile.serial
        line = (f"{serial.get('baudrate')} {serial.get('bytesize', 8)}"
                f"{serial.get('parity', 'N')}{serial.get('stopbits', 1)}")
        return NoResponseError(
            f"board {self.profile.name!r} ({self.profile.family}) is silent: expected "
            f"{expected}. Hint: check the port, the cable and the board's power, that the "
            f"line is {line}, and that --board names this board's profile",
            port=self.transport.url, baudrate=self.transport.baudrate, timeout=timeout)

    def __enter__(self) -> Board:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.profile.name} on {self.transport.url}>"


def driver_class(family: str) -> type[Board]:
    """The driver class of a protocol family."""
    module_name, cls_name = families()[family].split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    assert issubclass(cls, Board)
    return cls


def open_board(profile: str | BoardProfile, url: str, **transport_options: Any) -> Board:
    """Open ``url`` with the profile's serial settings and return the family's driver.

    ``probe=False`` skips the start-up liveness check. Other options go to
    :func:`~vendhw.transport.open_transport` (for ``sim://`` URLs: simulator options).

    :raises ~vendhw.errors.NoResponseError: a silent board, naming port, baud rate, what
        was expected and a hint.
    :raises ~vendhw.errors.ConfigurationError: unknown profile.
    """
    from vendhw.transport import open_transport

    prof = profile if isinstance(profile, BoardProfile) else load_profile(profile)
    probe = bool(transport_options.pop("probe", True))
    options = {**prof.serial_options(), **transport_options}
    transport = open_transport(url, **options)
    try:
        board = driver_class(prof.family)(prof, transport)
        if probe:
            board.probe()
    except BaseException:
        transport.close()
        raise
    return board


__all__ = [
    "Board",
    "BoardProfile",
    "Outcome",
    "Timing",
    "VendReport",
    "driver_class",
    "load_profile",
    "open_board",
    "profile_names",
]
