"""The SSP packet layer (sans-I/O): sequence flag, retransmission packet, eSSP sealing."""

from __future__ import annotations

from vendhw.devices.ssp.tables import SYNC
from vendhw.errors import ConfigurationError, ProtocolError, UnexpectedReplyError
from vendhw.framing.base import Frame
from vendhw.framing.essp import STEX, EsspCipher
from vendhw.framing.ssp import SspFramer

# --- packet layer (sans-I/O) -------------------------------------------------------------------


class SspSession:
    """Sequence flag and eSSP state of one link; builds packets and opens replies."""

    def __init__(self, address: int = 0) -> None:
        if not 0 <= address <= 0x7D:
            raise ConfigurationError(f"SSP slave ID must be 0..0x7D, got {address}")
        self.address = address
        self.framer = SspFramer()
        self.seq = 0
        """The flag of the last packet built (SYNC always goes with 1)."""
        self.cipher: EsspCipher | None = None

    def sync(self) -> bytes:
        """SYNC with flag 1: the slave then expects flag 0 for the next command (GA138)."""
        self.seq = 1
        return self.framer.build(data=bytes((SYNC,)), seq=1, address=self.address)

    def command(self, data: bytes, *, encrypt: bool = False) -> bytes:
        """A new command: the flag toggles, and the packet is sealed when ``encrypt``."""
        self.seq ^= 1
        if encrypt:
            if self.cipher is None:
                raise ConfigurationError("eSSP command before a key was agreed")
            data = self.cipher.seal(data)
        return self.framer.build(data=data, seq=self.seq, address=self.address)

    def open(self, frame: Frame) -> tuple[int, bytes]:
        """``(generic response, data)`` of a reply frame, decrypted when it is eSSP."""
        if frame["address"] != self.address:
            raise UnexpectedReplyError(f"reply from slave {frame['address']}, expected "
                                       f"{self.address}")
        raw = frame.raw
        if frame["code"] == STEX:
            if self.cipher is None:
                raise ProtocolError("an encrypted reply, but no key was agreed")
            data = self.cipher.open(bytes(frame["encrypted"]))
        else:
            data = bytes((frame["code"],)) + bytes(frame.get("data", b""))
        if not data:
            raise UnexpectedReplyError(f"empty SSP reply {raw.hex(' ')}")
        return data[0], data[1:]
