"""One small exception tree for everything vendhw raises on purpose.

Catch :class:`VendhwError` to handle every failure of the hardware, the wire or the
configuration; anything else escaping vendhw is a bug. ``ValueError`` stays for plain
programming mistakes (a negative amount, a wrong type).
"""

from __future__ import annotations


class VendhwError(Exception):
    """Root of every error vendhw raises deliberately."""


# --- framing ---------------------------------------------------------------------------


class FramingError(VendhwError):
    """Bytes that are not a valid frame of the protocol that was asked to read them."""

    def __init__(self, message: str, *, protocol: str = "", data: bytes = b"") -> None:
        self.protocol = protocol
        self.data = bytes(data)
        prefix = f"{protocol}: " if protocol else ""
        super().__init__(prefix + message)


class ChecksumError(FramingError):
    """The frame's checksum does not match its contents; names both values and the algorithm."""

    def __init__(
        self,
        *,
        protocol: str,
        algorithm: str,
        expected: int,
        received: int,
        width: int = 2,
        data: bytes = b"",
    ) -> None:
        self.algorithm = algorithm
        self.expected = expected
        self.received = received
        digits = width * 2
        super().__init__(
            f"bad checksum ({algorithm}): expected 0x{expected:0{digits}X}, "
            f"received 0x{received:0{digits}X}",
            protocol=protocol,
            data=data,
        )


class LengthError(FramingError):
    """The frame is shorter or longer than its length field or the protocol allows."""


class StartByteError(FramingError):
    """The frame does not begin with the protocol's start byte(s)."""


# --- transport -------------------------------------------------------------------------


class TransportError(VendhwError):
    """The byte pipe itself failed: the port is missing, busy or went away."""


class PortNotFoundError(TransportError):
    """The serial device, USB device or simulator named by the URL does not exist."""


class PortBusyError(TransportError):
    """Another process holds the port (it is opened exclusively)."""


class DisconnectedError(TransportError):
    """The device went away while in use (USB-serial unplugged, pty closed)."""


class NoResponseError(VendhwError, TimeoutError):
    """Nothing (or not enough) arrived before the deadline.

    The message names the port, its baud rate and the deadline so a hardware engineer can
    tell a wrong port from a wrong baud rate from a dead device.
    """

    def __init__(
        self, message: str = "", *, port: str = "", baudrate: int | None = None,
        timeout: float | None = None,
    ) -> None:
        self.port = port
        self.baudrate = baudrate
        self.timeout = timeout
        parts = [message or "no response"]
        where = []
        if port:
            where.append(f"port {port}")
        if baudrate:
            where.append(f"{baudrate} baud")
        if timeout is not None:
            where.append(f"deadline {timeout * 1000:.0f} ms")
        if where:
            parts.append("(" + ", ".join(where) + ")")
        super().__init__(" ".join(parts))


# --- protocol --------------------------------------------------------------------------


class ProtocolError(VendhwError):
    """A well-formed frame that breaks the conversation's rules."""


class NakError(ProtocolError):
    """The peer refused the command (NAK, generic failure code)."""


class UnexpectedReplyError(ProtocolError):
    """A reply that does not answer the command that was sent."""


class SequenceError(ProtocolError):
    """A sequence number, counter or toggle bit is not the one the protocol requires."""


# --- device and configuration ----------------------------------------------------------


class DeviceFault(VendhwError):
    """The device reports a fault of its own (jam, motor fault, sensor fault, ...)."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        self.code = code
        super().__init__(message if code is None else f"{message} [code 0x{code:02X}]")


class ConfigurationError(VendhwError):
    """A profile, URL, option or configuration file is wrong or names something unknown."""


class NotSupportedError(ConfigurationError):
    """The device or its profile lacks the feature that was asked for."""


class JournalError(VendhwError):
    """A journal (vends, ships, cash, outbox) could not be written: the disk is full or the
    file or folder is read-only. The transaction was rolled back, so nothing is half-written,
    and what it would have recorded was not done (no vend started, no credit spent)."""


__all__ = [
    "ChecksumError",
    "ConfigurationError",
    "DeviceFault",
    "DisconnectedError",
    "FramingError",
    "JournalError",
    "LengthError",
    "NakError",
    "NoResponseError",
    "NotSupportedError",
    "PortBusyError",
    "PortNotFoundError",
    "ProtocolError",
    "SequenceError",
    "StartByteError",
    "TransportError",
    "UnexpectedReplyError",
    "VendhwError",
]
