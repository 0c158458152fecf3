"""eSSP, the encryption layer of ITL SSP: Diffie-Hellman key agreement and AES-128 packets.

Both ends use this layer (the host driver and the simulator), as both use the SSP framer.
Everything here is pure computation: no port, no clock.

* **Key** (GA973 §4.1): 16 bytes = the 64-bit *fixed key* (default 0x0123456701234567)
  little-endian, then the 64-bit *negotiated key* little-endian.
* **Agreement** (GA973 §4.2): the host sends prime GENERATOR (``4A``) and prime MODULUS
  (``4B``, GENERATOR must be the larger), then HostInterKey = G^HOST_RND mod M (``4C``); the
  slave answers SlaveInterKey = G^SLAVE_RND mod M; each side computes the other's inter key
  raised to its own random, mod M. Modular power is Python's three-argument ``pow``, never
  ``**`` then ``%`` (the bug peer libraries shipped).
* **Packet** (GA973 §4.3): SSP DATA = ``STEX 0x7E`` + AES-128-ECB over ``eLENGTH | eCOUNT (4
  LE) | eDATA | packing | eCRCL | eCRCH``, padded with random bytes to a multiple of 16; the
  eCRC is the SSP CRC over eLENGTH..packing. eCOUNT starts at 0 after power-up and after each
  key agreement, and advances **once per exchange**: the host seals command N and expects the
  reply sealed with N+1, then seals its next command with N+1; the device checks N, answers
  with N+1 and expects N+1 next. A packet whose count is not the expected one is discarded.

:class:`EsspCipher` is the **host** side of that rule. The device side lives in the simulator
(``vendhw.sim.ssp``), written separately so that one reading of the rule cannot hide in both.

Sources: ``protocols/ssp/README.md`` (ITL GA973 SSP Implementation Guide §4; ITL's C# host
``SSPComms.cs``; the Node ``encrypted-smiley-secure-protocol`` host; a real NV9USB log in its
issue #44; the known-answer vector from ssp-rs ``src/encrypted.rs``).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from vendhw.errors import ChecksumError, LengthError, SequenceError
from vendhw.framing.checksums import CRC16_SSP

STEX = 0x7E
DEFAULT_FIXED_KEY = 0x0123456701234567
"""GA973 §4.1: the fixed half of the key until ``60 SET ENCRYPTION KEY`` changes it."""
BLOCK = 16

# Deterministic Miller-Rabin bases for every n < 3.3e24 (covers all 64-bit numbers).
_MR_BASES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41)


def is_prime(n: int) -> bool:
    """Exact primality for 64-bit numbers (the slave checks GENERATOR and MODULUS)."""
    if n < 2:
        return False
    for p in _MR_BASES:
        if n % p == 0:
            return n == p
    d, r = n - 1, 0
    while d % 2 == 0:
        d //= 2
        r += 1
    for a in _MR_BASES:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def random_prime(bits: int = 63) -> int:
    """A random prime of exactly ``bits`` bits (eSSP sends 8-byte values)."""
    while True:
        candidate = secrets.randbits(bits) | (1 << (bits - 1)) | 1
        if is_prime(candidate):
            return candidate


@dataclass
class KeyAgreement:
    """One side's half of the Diffie-Hellman exchange."""

    generator: int
    modulus: int
    secret: int = field(default_factory=lambda: secrets.randbits(63) | 1)

    @classmethod
    def new(cls) -> KeyAgreement:
        """Fresh primes, the generator the larger of the two (GA973 §4.2)."""
        a, b = random_prime(), random_prime()
        while a == b:
            b = random_prime()
        return cls(generator=max(a, b), modulus=min(a, b))

    @property
    def inter_key(self) -> int:
        """What this side sends: G^secret mod M."""
        return pow(self.generator, self.secret, self.modulus)

    def negotiated_key(self, other_inter_key: int) -> int:
        """The shared 64-bit key from the other side's inter key."""
        return pow(other_inter_key, self.secret, self.modulus)


def aes_key(negotiated: int, fixed: int = DEFAULT_FIXED_KEY) -> bytes:
    """The 16-byte AES key: fixed key then negotiated key, each 64-bit little-endian."""
    return fixed.to_bytes(8, "little") + negotiated.to_bytes(8, "little")


class EsspCipher:
    """The host's eSSP state: seals commands and opens replies, keeping eCOUNT.

    ``count`` is the count of the next command. Sealing uses it and advances it; a reply must
    carry the advanced count, and opening it changes nothing (ITL ``SSPComms.cs``:
    ``EncryptSSPPacket`` increments once, the reply is checked against the incremented value).
    A retransmission resends the sealed packet as it is, so it keeps its count.
    """

    def __init__(self, key: bytes) -> None:
        if len(key) != BLOCK:
            raise ValueError("an eSSP key is 16 bytes")
        self.key = key
        self.count = 0
        self._cipher = Cipher(algorithms.AES(key), modes.ECB())

    @classmethod
    def from_agreement(cls, negotiated: int, fixed: int = DEFAULT_FIXED_KEY) -> EsspCipher:
        return cls(aes_key(negotiated, fixed))

    def seal(self, data: bytes, *, packing: bytes | None = None) -> bytes:
        """``STEX`` + the encrypted block for ``data`` (a command or a reply)."""
        if not 0 < len(data) <= 255:
            raise LengthError(f"eSSP data must be 1..255 bytes, got {len(data)}",
                              protocol="essp")
        body = bytes((len(data),)) + self.count.to_bytes(4, "little") + data
        pad = -(len(body) + 2) % BLOCK
        body += packing[:pad].ljust(pad, b"\0") if packing is not None else secrets.token_bytes(pad)
        body += CRC16_SSP.func(body).to_bytes(2, "little")
        encryptor = self._cipher.encryptor()
        sealed = encryptor.update(body) + encryptor.finalize()
        self.count = (self.count + 1) & 0xFFFFFFFF
        return bytes((STEX,)) + sealed

    def decrypt(self, block: bytes) -> bytes:
        """The plaintext of an encrypted block (after STEX), eCRC checked; no count check."""
        if not block or len(block) % BLOCK:
            raise LengthError(f"an eSSP block is a multiple of 16 bytes, got {len(block)}",
                              protocol="essp", data=block)
        decryptor = self._cipher.decryptor()
        plain = decryptor.update(block) + decryptor.finalize()
        expected = CRC16_SSP.func(plain[:-2])
        received = plain[-2] | plain[-1] << 8
        if expected != received:
            raise ChecksumError(protocol="essp", algorithm=CRC16_SSP.name, expected=expected,
                                received=received, width=2, data=block)
        length = plain[0]
        if length == 0 or 5 + length > len(plain) - 2:
            raise LengthError(f"eLENGTH {length} does not fit a {len(plain)}-byte block",
                              protocol="essp", data=block)
        return plain

    def open(self, block: bytes) -> bytes:
        """eDATA of an encrypted reply (after STEX); its count must be that of the next command
        (the one sealed last, plus one). Opening does not advance the count."""
        plain = self.decrypt(block)
        count = int.from_bytes(plain[1:5], "little")
        if count != self.count:
            raise SequenceError(f"eSSP count {count}, expected {self.count}: packet discarded")
        return plain[5:5 + plain[0]]


__all__ = ["DEFAULT_FIXED_KEY", "STEX", "EsspCipher", "KeyAgreement", "aes_key", "is_prime",
           "random_prime"]
