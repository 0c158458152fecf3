"""The DEX/UCS link as sans-I/O engines: the machine's side and a handheld's side.

A handheld (the *master*, "data carrier") reads the audit report of a vending machine (the
*slave*, "data communicator") over a 9600 8N1 serial line in three steps:

1. first handshake, master to slave: master ``ENQ``; slave ``DLE 0``; master
   ``DLE SOH`` + its communication id (10) + operation (``R`` read) + revision/level
   (``R01L01``) + ``DLE ETX`` + CRC; slave ``DLE 1``; master ``EOT``;
2. second handshake, roles swapped: slave ``ENQ``; master ``DLE 0``; slave ``DLE SOH`` +
   response code (``00``) + its communication id + revision/level + ``DLE ETX`` + CRC;
   master ``DLE 1``; slave ``EOT``;
3. data: slave ``ENQ``; master ``DLE 0``; slave blocks ``DLE STX`` data ``DLE ETB`` CRC
   (more follow) or ``DLE ETX`` CRC (the last); master acknowledges them alternately
   ``DLE 1``, ``DLE 0``, ... or ``NAK`` (the block is sent again); slave ``EOT``.

The CRC is CRC-16/ARC over the bytes after ``DLE SOH``/``DLE STX`` up to and including
``ETX``/``ETB`` (the ``DLE`` before it excluded), sent low byte first.

Sources (facts only, no code copied): EVA-DTS 6.1.2 §DEX/UCS, as implemented by
``Calvin-Abstraction/soda-pop-refresh@eeb5800ce851b699c57148615cef774b0539b9cf:
LEGACY/dex_communicate/dex.c`` (handshake strings ``1234567890RR01L01`` and
``001234567890R01L01``, alternating acks starting with ``DLE 1`` for the first block, bitwise
CRC equal to CRC-16/ARC) and ``/work/shared/research/boards-backend.md`` §2.2; the timer
values and block size below are those public DEX readers quote from EVA-DTS 6.1.2 p. 107.

The engines never read a clock and never touch a port: :meth:`DexEngine.receive` takes the
bytes that arrived and the time, returns what to send; :meth:`DexEngine.expire` is called
when :attr:`DexEngine.deadline` passes with nothing received. :func:`run` drives one over a
transport.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

from vendhw.errors import NoResponseError, ProtocolError
from vendhw.framing.checksums import CRC16_ARC
from vendhw.transport.base import Transport

SOH, STX, ETX, EOT, ENQ, DLE, NAK, ETB = 0x01, 0x02, 0x03, 0x04, 0x05, 0x10, 0x15, 0x17
ACK0 = bytes([DLE, 0x30])
"""``DLE 0``: answers ``ENQ`` and acknowledges even-numbered blocks."""
ACK1 = bytes([DLE, 0x31])
"""``DLE 1``: acknowledges the handshake and odd-numbered blocks (the first is odd)."""
WACK = bytes([DLE, 0x3B])
"""``DLE ;``: "wait, busy" — the sender asks again with ``ENQ``."""

BAUDRATE = 9600
"""DEX/UCS line speed, 8 data bits, no parity, 1 stop bit."""
RESPONSE_TIMEOUT = 1.0
"""Timer A (s): the longest wait for the other side's answer to what we sent."""
INTER_BYTE_TIMEOUT = 0.1
"""Timer B (s): the longest gap between two bytes of one block."""
SESSION_IDLE_TIMEOUT = 2.0
"""Timer D (s): silence after which a half-done session is abandoned."""
START_ATTEMPTS = 10
"""ENQs sent before the other side is declared absent."""
BLOCK_ATTEMPTS = 5
"""Times a block (or handshake) is sent before a session is given up."""
MAX_BLOCK = 245
"""Data bytes per block."""
REVISION_LEVEL = "R01L01"
"""Revision 01, level 01 of the DEX/UCS handshake."""
READ = "R"
"""Operation request: the master wants to read the slave's audit data."""
RESPONSE_OK = "00"
"""Second handshake response code: "go on"."""


def crc_bytes(payload: bytes, end: int) -> bytes:
    """The 2 CRC bytes (low first) over ``payload`` and the ``ETX``/``ETB`` that ends it."""
    value = CRC16_ARC(payload + bytes([end]))
    return bytes([value & 0xFF, value >> 8])


def handshake_frame(payload: bytes) -> bytes:
    return bytes([DLE, SOH]) + payload + bytes([DLE, ETX]) + crc_bytes(payload, ETX)


def data_block(payload: bytes, last: bool) -> bytes:
    end = ETX if last else ETB
    return bytes([DLE, STX]) + payload + bytes([DLE, end]) + crc_bytes(payload, end)


def split_blocks(data: bytes, size: int = MAX_BLOCK) -> list[bytes]:
    if DLE in data:
        raise ValueError("DEX data must not contain DLE (0x10); audit reports are ASCII")
    return [data[i:i + size] for i in range(0, len(data), size)] or [b""]


class _Collector:
    """Collects one ``DLE SOH|STX ... DLE ETX|ETB crc_lo crc_hi`` frame from a byte stream."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.body = bytearray()
        self.started = False
        self.dle = False
        self.end: int | None = None
        self.crc = bytearray()

    def feed(self, byte: int) -> tuple[bytes, int, bool] | None:
        """Returns ``(payload, end byte, crc ok)`` when a frame is complete."""
        if self.end is not None:
            self.crc.append(byte)
            if len(self.crc) < 2:
                return None
            body, end, crc = bytes(self.body), self.end, bytes(self.crc)
            self.reset()
            return body, end, crc == crc_bytes(body, end)
        if not self.started:
            if self.dle and byte in (SOH, STX):
                self.started = True
            self.dle = byte == DLE
            return None
        if self.dle:
            self.dle = False
            if byte in (ETX, ETB):
                self.end = byte
            else:  # DLE DLE is a literal DLE; anything else after DLE is kept as data
                self.body.append(byte)
            return None
        if byte == DLE:
            self.dle = True
            return None
        self.body.append(byte)
        return None


@dataclass
class DexResult:
    """What a session achieved."""

    data: bytes = b""
    peer_comm_id: str = ""
    operation: str = ""
    blocks: int = 0
    retries: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    log: list[str] = field(default_factory=list)

    @property
    def wire_seconds(self) -> float:
        """How long the bytes of the session take at 9600 8N1 (10 bits a byte)."""
        return (self.bytes_sent + self.bytes_received) * 10 / BAUDRATE


class DexEngine(ABC):
    """Common state of both sides: a state name, a deadline, the result."""

    def __init__(self) -> None:
        self.state = "idle"
        self.deadline: float | None = None
        self.done = False
        self.error: str | None = None
        self.result = DexResult()
        self._attempts = 0
        self._collector = _Collector()
        self._last_sent = b""
        self._pending_dle = False

    # -- helpers -------------------------------------------------------------------------

    def _send(self, data: bytes, now: float, state: str, *, timeout: float = RESPONSE_TIMEOUT
              ) -> bytes:
        self.state = state
        self.deadline = now + timeout
        self._last_sent = data
        self.result.bytes_sent += len(data)
        self.result.log.append(f"TX {state}: {data[:24].hex(' ')}")
        return data

    def _fail(self, why: str) -> bytes:
        self.done = True
        self.error = why
        self.deadline = None
        self.state = "failed"
        return b""

    def _finish(self) -> None:
        self.done = True
        self.deadline = None
        self.state = "done"

    def _retry(self, now: float, limit: int, why: str) -> bytes:
        self._attempts += 1
        self.result.retries += 1
        if self._attempts >= limit:
            return self._fail(f"{why} ({self._attempts} attempts in state {self.state})")
        return self._send(self._last_sent, now, self.state)

    def _ack_kind(self, byte: int) -> str | None:
        """Turn the byte stream into ``ack0``/``ack1``/``wack``/``nak``/``enq``/``eot``."""
        if self._pending_dle:
            self._pending_dle = False
            return {0x30: "ack0", 0x31: "ack1", 0x3B: "wack"}.get(byte)
        if byte == DLE:
            self._pending_dle = True
            return None
        return {NAK: "nak", ENQ: "enq", EOT: "eot"}.get(byte)

    # -- API ---------------------------------------------------------------------------------

    def start(self, now: float) -> bytes:
        """Bytes to send to begin (the master's first ``ENQ``; nothing for the slave)."""
        return b""

    def receive(self, data: bytes, now: float) -> bytes:
        """Bytes arrived at ``now``; returns what to send back."""
        self.result.bytes_received += len(data)
        out = bytearray()
        for byte in data:
            if self.done:
                break
            out += self._byte(byte, now)
        return bytes(out)

    @abstractmethod
    def expire(self, now: float) -> bytes:
        """The deadline passed with nothing received."""

    @abstractmethod
    def _byte(self, byte: int, now: float) -> bytes:
        """One received byte at ``now``; returns what to send back."""


class DexSlave(DexEngine):
    """The vending machine's side: answers a handheld and sends ``report`` in blocks.

    :param comm_id: the machine's 10-character communication id.
    """

    def __init__(self, report: bytes | Callable[[], bytes], comm_id: str, *,
                 block_size: int = MAX_BLOCK) -> None:
        super().__init__()
        if len(comm_id) != 10:
            raise ValueError(f"communication id must have 10 characters, not {comm_id!r}")
        self.comm_id = comm_id
        self._report = report
        self._block_size = block_size
        self.blocks: list[bytes] = []
        self._block = 0

    def expire(self, now: float) -> bytes:
        if self.state in ("idle", "hs1_frame", "hs1_eot"):
            if self.state == "idle":
                self.deadline = None
                return b""
            return self._fail("the handheld went silent during the first handshake")
        if self.state == "data_ack":
            return self._ask_again(now)
        limit = START_ATTEMPTS if self.state in ("hs2_enq", "data_enq") else BLOCK_ATTEMPTS
        return self._retry(now, limit, "no answer from the handheld")

    def _byte(self, byte: int, now: float) -> bytes:
        state = self.state
        if state in ("idle", "hs1_frame"):
            if state == "idle" and byte == ENQ:
                self._collector.reset()
                return self._send(ACK0, now, "hs1_frame")
            if state == "hs1_frame":
                self.deadline = now + SESSION_IDLE_TIMEOUT
                frame = self._collector.feed(byte)
                if frame is None:
                    return b""
                payload, _end, ok = frame
                if not ok:
                    self.result.log.append("RX first handshake: bad CRC")
                    return self._send(bytes([NAK]), now, "hs1_frame")
                text = payload.decode("ascii", "replace")
                self.result.peer_comm_id = text[:10]
                self.result.operation = text[10:11]
                if self.result.operation != READ:
                    return self._fail(f"the handheld asked for operation "
                                      f"{self.result.operation!r}; only reads (R) are served")
                return self._send(ACK1, now, "hs1_eot")
            return b""  # noise before a session
        if state == "hs1_eot":
            if byte == EOT:
                self._attempts = 0
                return self._send(bytes([ENQ]), now, "hs2_enq")
            if byte == ENQ:  # the handheld missed our ack and starts over
                return self._send(ACK1, now, "hs1_eot")
            return b""
        kind = self._ack_kind(byte)
        if kind is None:
            return b""
        if state == "hs2_enq":
            if kind == "ack0":
                self._attempts = 0
                payload = f"{RESPONSE_OK}{self.comm_id}{REVISION_LEVEL}".encode("ascii")
                return self._send(handshake_frame(payload), now, "hs2_ack")
            return b""
        if state == "hs2_ack":
            if kind in ("ack1", "ack0"):
                self._attempts = 0
                return self._send(bytes([EOT, ENQ]), now, "data_enq")
            if kind == "nak":
                return self._retry(now, BLOCK_ATTEMPTS, "the handheld refused our handshake")
            return b""
        if state == "data_enq":
            if kind == "ack0":
                self._attempts = 0
                if not self.blocks:  # the report is made when a handheld really reads it
                    report = self._report() if callable(self._report) else self._report
                    self.blocks = split_blocks(report, self._block_size)
                return self._send_block(now)
            if kind == "wack":
                return self._send(bytes([ENQ]), now, "data_enq")
            return b""
        if state == "data_ack":
            expected = "ack1" if self._block % 2 == 0 else "ack0"
            if kind == expected:
                self._attempts = 0
                self.result.blocks += 1
                self._block += 1
                if self._block == len(self.blocks):
                    self.result.data = b"".join(self.blocks)
                    out = self._send(bytes([EOT]), now, "done")
                    self._finish()
                    return out
                return self._send_block(now)
            if kind in ("nak", "ack0", "ack1"):  # NAK, or the previous block's ack again
                return self._retry(now, BLOCK_ATTEMPTS, "the handheld refused a block")
            if kind == "wack":
                return self._ask_again(now)
        return b""

    def _ask_again(self, now: float) -> bytes:
        """No (or a busy) answer to a block: ENQ asks the handheld to repeat its last ack.

        The block itself is not sent again blind: the handheld may have taken it, and a
        second copy would be appended twice. Its answer (the expected ack, or the previous
        one) tells whether the block arrived.
        """
        self._attempts += 1
        self.result.retries += 1
        if self._attempts >= BLOCK_ATTEMPTS:
            return self._fail(f"no answer from the handheld to block {self._block + 1}")
        self.deadline = now + RESPONSE_TIMEOUT
        self.result.bytes_sent += 1
        return bytes([ENQ])

    def _send_block(self, now: float) -> bytes:
        last = self._block == len(self.blocks) - 1
        return self._send(data_block(self.blocks[self._block], last), now, "data_ack")


class DexMaster(DexEngine):
    """A handheld's side: reads the audit data of the machine at the other end.

    :param comm_id: the handheld's 10-character communication id.
    """

    def __init__(self, comm_id: str = "1234567890") -> None:
        super().__init__()
        if len(comm_id) != 10:
            raise ValueError(f"communication id must have 10 characters, not {comm_id!r}")
        self.comm_id = comm_id
        self._data = bytearray()
        self._acks = 0

    def start(self, now: float) -> bytes:
        self._attempts = 0
        return self._send(bytes([ENQ]), now, "hs1_enq")

    def expire(self, now: float) -> bytes:
        if self.state in ("hs1_enq",):
            return self._retry(now, START_ATTEMPTS, "the machine does not answer ENQ")
        if self.state == "hs1_ack":
            return self._retry(now, BLOCK_ATTEMPTS, "the machine does not acknowledge")
        return self._fail(f"the machine went silent ({self.state})")

    def _byte(self, byte: int, now: float) -> bytes:
        state = self.state
        if state in ("hs1_enq", "hs1_ack"):
            kind = self._ack_kind(byte)
            if state == "hs1_enq" and kind == "ack0":
                self._attempts = 0
                payload = f"{self.comm_id}{READ}{REVISION_LEVEL}".encode("ascii")
                return self._send(handshake_frame(payload), now, "hs1_ack")
            if state == "hs1_ack" and kind in ("ack1", "ack0"):
                return self._send(bytes([EOT]), now, "hs2_enq",
                                  timeout=SESSION_IDLE_TIMEOUT)
            if state == "hs1_ack" and kind == "nak":
                return self._retry(now, BLOCK_ATTEMPTS, "the machine refused our handshake")
            return b""
        if state == "hs2_enq":
            if byte == ENQ:
                self._collector.reset()
                return self._send(ACK0, now, "hs2_frame", timeout=SESSION_IDLE_TIMEOUT)
            return b""
        if state == "hs2_frame":
            frame = self._collector.feed(byte)
            if frame is None:
                return b""
            payload, _end, ok = frame
            if not ok:
                return self._send(bytes([NAK]), now, "hs2_frame", timeout=SESSION_IDLE_TIMEOUT)
            text = payload.decode("ascii", "replace")
            if text[:2] != RESPONSE_OK:
                return self._fail(f"the machine answered code {text[:2]!r}, not 00")
            self.result.peer_comm_id = text[2:12]
            return self._send(ACK1, now, "hs2_eot", timeout=SESSION_IDLE_TIMEOUT)
        if state == "hs2_eot":
            if byte == EOT:
                self.state = "data_enq"
            return b""
        if state == "data_enq":
            if byte == ENQ:
                self._collector.reset()
                return self._send(ACK0, now, "data", timeout=SESSION_IDLE_TIMEOUT)
            return b""
        if state == "data":
            if byte == EOT and not self._collector.started:
                self.result.data = bytes(self._data)
                self._finish()
                return b""
            if byte == ENQ and not self._collector.started:  # it missed our last ack
                return self._send(self._last_sent, now, "data", timeout=SESSION_IDLE_TIMEOUT)
            frame = self._collector.feed(byte)
            if frame is None:
                return b""
            payload, _end, ok = frame
            if not ok:
                self.result.retries += 1
                return self._send(bytes([NAK]), now, "data", timeout=SESSION_IDLE_TIMEOUT)
            self._data += payload
            self._acks += 1
            self.result.blocks += 1
            ack = ACK1 if self._acks % 2 == 1 else ACK0
            return self._send(ack, now, "data", timeout=SESSION_IDLE_TIMEOUT)
        return b""


def run(engine: DexEngine, transport: Transport, *, idle_timeout: float | None = None,
        clock: Callable[[], float] = time.monotonic) -> DexResult:
    """Drive ``engine`` over ``transport`` until it is done; raise on failure.

    ``idle_timeout`` bounds the wait for a session to begin (a slave waiting for a
    handheld); ``None`` waits forever.
    """
    now_fn = clock
    now = now_fn()
    out = engine.start(now)
    if out:
        transport.write(out)
    idle_deadline = None if idle_timeout is None else now + idle_timeout
    while not engine.done:
        now = now_fn()
        deadline = engine.deadline if engine.deadline is not None else idle_deadline
        wait = 1.0 if deadline is None else max(0.0, deadline - now)
        data = transport.read(wait)
        now = now_fn()
        if data:
            out = engine.receive(data, now)
        elif engine.deadline is not None and now >= engine.deadline:
            out = engine.expire(now)
        elif engine.deadline is None and idle_deadline is not None and now >= idle_deadline:
            raise NoResponseError(f"{transport.url}: no DEX session began within "
                                  f"{idle_timeout:g} s")
        else:
            out = b""
        if out:
            transport.write(out)
    if engine.error:
        if "silent" in engine.error or "answer" in engine.error:
            raise NoResponseError(f"{transport.url}: DEX: {engine.error}")
        raise ProtocolError(f"{transport.url}: DEX: {engine.error}")
    return engine.result


__all__ = [
    "ACK0",
    "ACK1",
    "BAUDRATE",
    "BLOCK_ATTEMPTS",
    "INTER_BYTE_TIMEOUT",
    "MAX_BLOCK",
    "RESPONSE_TIMEOUT",
    "SESSION_IDLE_TIMEOUT",
    "START_ATTEMPTS",
    "WACK",
    "DexMaster",
    "DexResult",
    "DexSlave",
    "crc_bytes",
    "data_block",
    "handshake_frame",
    "run",
    "split_blocks",
]
