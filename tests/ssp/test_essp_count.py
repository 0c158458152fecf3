"""eCOUNT advances once per exchange (regression: vendhw advanced it on seal *and* on open).

The device side here is written in the test from the published rule (ITL ``SSPComms.cs``,
the Node ``encrypted-smiley-secure-protocol`` host, the NV9USB log in its issue #44): the
host seals N; the device checks N and answers sealed with N+1; the host's next command is
sealed with N+1. Nothing here uses vendhw's cipher or CRC for the device side.
"""

from __future__ import annotations

import secrets

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from vendhw.devices.ssp import SspDevice
from vendhw.errors import SequenceError
from vendhw.framing.essp import EsspCipher, aes_key
from vendhw.framing.ssp import SspFramer
from vendhw.sim.ssp import SspSimulator
from vendhw.transport import SimTransport

KEY = aes_key(0x0000000D0E5FA5E)


def crc16_ssp(data: bytes) -> int:
    """CRC-16 poly 0x8005, seed 0xFFFF, MSB first (GA138), written out bit by bit."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def unseal(block: bytes, key: bytes = KEY) -> tuple[int, bytes]:
    """(eCOUNT, eDATA) of an encrypted block after STEX; the eCRC must hold."""
    plain = Cipher(algorithms.AES(key), modes.ECB()).decryptor().update(block)
    assert crc16_ssp(plain[:-2]) == int.from_bytes(plain[-2:], "little")
    return int.from_bytes(plain[1:5], "little"), plain[5:5 + plain[0]]


def seal(count: int, data: bytes, key: bytes = KEY) -> bytes:
    """STEX + the AES block for ``data`` with ``count`` (either direction: the format is one)."""
    body = bytes((len(data),)) + count.to_bytes(4, "little") + data
    body += secrets.token_bytes(-(len(body) + 2) % 16)
    body += crc16_ssp(body).to_bytes(2, "little")
    return b"\x7e" + Cipher(algorithms.AES(key), modes.ECB()).encryptor().update(body)


def test_host_seals_the_next_command_with_the_count_of_the_reply() -> None:
    host = EsspCipher(KEY)
    counts = []
    for _ in range(5):
        count, data = unseal(host.seal(b"\x07")[1:])
        assert data == b"\x07"
        counts.append(count)
        assert host.open(seal(count + 1, b"\xf0")[1:]) == b"\xf0"
    assert counts == [0, 1, 2, 3, 4]


def test_host_refuses_a_reply_whose_count_did_not_advance() -> None:
    host = EsspCipher(KEY)
    count, _ = unseal(host.seal(b"\x07")[1:])
    with pytest.raises(SequenceError, match="count 0, expected 1"):
        host.open(seal(count, b"\xf0")[1:])


class _Exchange:
    """A host written in the test: sealed commands with counts 0, 1, 2... to the simulator."""

    def __init__(self, sim: SspSimulator) -> None:
        self.sim, self.framer, self.seq, self.now = sim, SspFramer(), 0, 0.0

    def send(self, data: bytes) -> bytes | None:
        self.seq = 1 if data[:1] == b"\x11" else self.seq ^ 1  # GA138: SYNC goes with 1
        self.now += 0.01
        replies = self.sim.receive(self.framer.build(data=data, seq=self.seq), self.now)
        if not replies:
            return None
        frame = self.framer.parse(replies[0][1], "device")
        return bytes((frame["code"],)) + bytes(frame.get("encrypted", frame.get("data", b"")))


def test_simulator_answers_count_n_with_n_plus_one_and_expects_n_plus_one_next() -> None:
    sim = SspSimulator(reply_delay=0)
    # Agree the key the device will use: generator/modulus/exchange in clear, then compare.
    host = _Exchange(sim)
    assert host.send(b"\x11") == b"\xf0"
    generator, modulus, secret = 0xFFFFFFFFFFFFFFC5, 0xFFFFFFFB, 0x1234567
    assert host.send(b"\x4a" + generator.to_bytes(8, "little")) == b"\xf0"
    assert host.send(b"\x4b" + modulus.to_bytes(8, "little")) == b"\xf0"
    reply = host.send(b"\x4c" + pow(generator, secret, modulus).to_bytes(8, "little"))
    assert reply is not None and reply[0] == 0xF0
    negotiated = pow(int.from_bytes(reply[1:9], "little"), secret, modulus)
    key = aes_key(negotiated)
    for n in range(6):
        reply = host.send(seal(n, b"\x07", key))
        assert reply is not None, f"command sealed with count {n} was discarded"
        count, data = unseal(reply[1:], key)
        assert (count, data[:1]) == (n + 1, b"\xf0")
    # A command that repeats an old count is discarded (no reply).
    assert host.send(seal(3, b"\x07", key)) is None


def test_host_and_simulator_keep_talking_after_many_encrypted_commands() -> None:
    sim = SspSimulator(reply_delay=0, speed=50)
    dev = SspDevice(SimTransport(sim), reply_timeout=0.05, retries=2, encryption=True)
    dev.start()
    for _ in range(10):
        dev.poll()
    assert dev.session.cipher is not None and dev.session.cipher.count > 10
    assert dev.stats["retries"] == 0 and dev.stats["resyncs"] == 0
