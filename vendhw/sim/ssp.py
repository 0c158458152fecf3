"""An ITL SMART Payout (a note validator with a note recycler) speaking SSP and eSSP.

It behaves as the device does from power-up (GA138, GA973): disabled, every channel
inhibited, SLAVE RESET as its first event, payout commands refused with KEY NOT SET until a
key is agreed (``encryption="all"`` refuses every command but the key exchange, as
payout-only firmware does; ``"none"`` needs no key). A packet that repeats the previous
sequence flag gets the previous reply again without being executed, and an encrypted packet
with the wrong eCOUNT is discarded. Events marked "Poll with Ack" in GA138 repeat until EVENT
ACK when the host polls with 0x56, and no new note is taken until then.

Notes go in with :meth:`SspSimulator.insert_note` or the ``auto_insert="1,2"`` option (one
channel every ``insert_interval`` seconds while enabled). A note is read, then held in escrow:
the next POLL after the host saw it stacks it, REJECT returns it, HOLD keeps it, and 5 s
without a command returns it. Notes of a denomination routed to payout are stored for
payouts when the payout unit is enabled. The store starts with a float, :data:`DEFAULT_LEVELS`
(10 x 5 EUR, 10 x 10 EUR, 5 x 20 EUR: 250 EUR), so a payout works out of the box;
``levels="500:10,1000:5"`` sets another float and ``levels=""`` an empty store.
Time advances with the host's traffic (the ``now`` of each packet), never with a thread;
``speed=10`` makes the mechanics ten times faster (tests, demos).

Device faults (``set_fault`` or URL options): ``jam``, ``fraud``, ``rejected`` (the next note
is rejected; the value is the reject code), ``cashbox_removed``, ``reset`` (power cycle now),
``reset_during_payout`` (the next payout stops after that many notes with a power cycle; the
device then reports INCOMPLETE PAYOUT).
"""

from __future__ import annotations

import secrets
import threading
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from vendhw.framing.base import Frame
from vendhw.framing.checksums import CRC16_SSP
from vendhw.framing.essp import is_prime
from vendhw.framing.ssp import (
    ACKED_EVENTS,
    INTER_BYTE_GAP,
    SETUP_VALIDATOR,
    Command,
    Event,
    Response,
    SspFramer,
    UnitType,
)
from vendhw.options import option_flag, option_ints
from vendhw.sim.base import Reply, Simulator

if TYPE_CHECKING:
    from vendhw.sim import SimulatorSpec

REPLY_DELAY = 0.003
"""Seconds before a reply (an NV200 answers within a few milliseconds)."""
READ_TIME = 0.15
"""Seconds from insertion to escrow."""
STACK_TIME = 0.3
"""Seconds from the accepting poll to NOTE CREDIT / STACKED."""
NOTE_PAYOUT_TIME = 0.2
"""Seconds per note paid out."""
ESCROW_TIMEOUT = 5.0
"""GA973: a note in escrow is returned after 5 s without a command."""
INSERT_INTERVAL = 1.0
VALUES = (500, 1000, 2000, 5000)
"""Channel values in cents (EUR 5, 10, 20, 50)."""
C = Command
PAYOUT_COMMANDS = frozenset((
    C.PAYOUT_AMOUNT, C.FLOAT_AMOUNT, C.EMPTY_ALL, C.SMART_EMPTY, C.HALT_PAYOUT,
    C.SET_DENOMINATION_ROUTE, C.GET_DENOMINATION_ROUTE, C.ENABLE_PAYOUT_DEVICE,
    C.DISABLE_PAYOUT_DEVICE, C.GET_ALL_LEVELS, C.GET_DENOMINATION_LEVEL,
    C.PAYOUT_BY_DENOMINATION, C.FLOAT_BY_DENOMINATION, C.PAYOUT_NOTE, C.STACK_NOTE))
KEY_COMMANDS = frozenset((C.SYNC, C.SET_GENERATOR, C.SET_MODULUS, C.REQUEST_KEY_EXCHANGE,
                          C.HOST_PROTOCOL_VERSION, C.SETUP_REQUEST, C.GET_SERIAL_NUMBER))
STEX = 0x7E
FIXED_KEY = 0x0123456701234567
"""GA973 §4.1: the device's fixed key half until SET ENCRYPTION KEY (0x60) changes it."""
R = Response
OK, UNKNOWN, WRONG_PARAMS, OUT_OF_RANGE, CANNOT, FAIL, KEY_NOT_SET = (
    R.OK, R.COMMAND_NOT_KNOWN, R.WRONG_NUMBER_OF_PARAMETERS, R.PARAMETER_OUT_OF_RANGE,
    R.COMMAND_CANNOT_BE_PROCESSED, R.FAIL, R.KEY_NOT_SET)


@dataclass
class DeviceEssp:
    """The device side of eSSP, written apart from the host's ``EsspCipher`` on purpose.

    GA138 "Encryption": the count restarts at 0 with each key; an incoming packet must carry
    the device's count, which then advances; the reply is sealed with the advanced count and
    does not advance it again (the host expects N+1 after sending N, as ITL ``SSPComms.cs``
    checks). ``open`` returns None for a packet to discard (wrong count) and raises
    ValueError when the block does not decrypt with this key (eCRC wrong).
    """

    key: bytes
    count: int = 0

    @classmethod
    def agreed(cls, negotiated: int, fixed: int) -> DeviceEssp:
        """Key = fixed half then negotiated half, each 8 bytes little-endian (GA973 §4.1)."""
        return cls(fixed.to_bytes(8, "little") + negotiated.to_bytes(8, "little"))

    def _aes(self) -> Cipher[Any]:
        return Cipher(algorithms.AES(self.key), modes.ECB())

    def open(self, block: bytes) -> bytes | None:
        if not block or len(block) % 16:
            raise ValueError("not a whole number of AES blocks")
        decryptor = self._aes().decryptor()
        plain = decryptor.update(block) + decryptor.finalize()
        if CRC16_SSP.func(plain[:-2]) != int.from_bytes(plain[-2:], "little"):
            raise ValueError("eCRC does not match: another key")
        length, count = plain[0], int.from_bytes(plain[1:5], "little")
        if count != self.count or not 0 < length <= len(plain) - 7:
            return None
        self.count = (self.count + 1) & 0xFFFFFFFF
        return plain[5:5 + length]

    def seal(self, data: bytes) -> bytes:
        body = bytes((len(data),)) + self.count.to_bytes(4, "little") + data
        body += secrets.token_bytes(-(len(body) + 2) % 16)
        body += CRC16_SSP.func(body).to_bytes(2, "little")
        encryptor = self._aes().encryptor()
        return bytes((STEX,)) + encryptor.update(body) + encryptor.finalize()


DEFAULT_LEVELS = "500:10,1000:10,2000:5"
"""The float the payout store starts with (``value:count`` in cents): 250 EUR."""


class SspSimulator(Simulator):
    name = "ssp"
    kind = "cash"
    protocol = "ssp"
    baudrate = 9600
    description = "ITL SMART Payout: note validator + recycler, SSP/eSSP (EUR 5/10/20/50)"
    device_faults = ("jam", "fraud", "rejected", "cashbox_removed", "reset",
                     "reset_during_payout")

    def __init__(self, *, address: int | str = 0, currency: str = "EUR",
                 serial: int | str = 0x01A2B3C4, encryption: str = "payout",
                 max_version: int | str = 8, levels: str | dict[int, int] = DEFAULT_LEVELS,
                 auto_insert: Any = "", insert_interval: float | str = INSERT_INTERVAL,
                 reply_delay: float | str = REPLY_DELAY, speed: float | str = 1.0,
                 **options: Any) -> None:
        faults = {k: options.pop(k) for k in list(options) if k in self.device_faults}
        super().__init__(**options)
        self.address = int(address)
        if not (len(currency) == 3 and currency.isascii() and currency.isalpha()):
            raise ValueError(f"currency must be 3 letters (ISO 4217, e.g. EUR), not {currency!r}")
        self.currency = currency.upper()
        self.serial = int(serial)
        if encryption not in ("payout", "all", "none"):
            raise ValueError("encryption must be payout, all or none")
        self.encryption = encryption
        self.max_version = int(max_version)
        self.reply_delay = float(reply_delay)
        self.speed = float(speed)
        """Mechanical times (reading, stacking, paying a note) are divided by this."""
        self.auto_insert = deque(option_ints(auto_insert))
        self.insert_interval = float(insert_interval)
        self.framer = SspFramer()
        self._deframer = self.framer.deframer("host", gap=INTER_BYTE_GAP)
        self._lock = threading.RLock()
        self.now = 0.0
        # Survives power cycles: the note store, routes and counters.
        self.levels: dict[int, int] = dict.fromkeys(VALUES, 0)
        if isinstance(levels, dict):
            self.levels.update(levels)
        else:
            for pair in str(levels).split(","):
                if pair.strip():
                    value, count = pair.split(":")
                    self.levels[int(value)] = int(count)
        self.routes: dict[int, int] = dict.fromkeys(VALUES, 0)  # 0 = store for payout
        self.cashbox: list[int] = []
        self.paid_out: list[int] = []
        """Every note paid to a customer, in order (for tests)."""
        self.credited: list[int] = []
        """Every note value reported as credit (for tests)."""
        self.executed: list[int] = []
        """Command codes executed (not repeats), in order (for tests)."""
        self.interrupted: tuple[int, int] | None = None
        self.fixed_key = FIXED_KEY
        self.jam = False
        self.cashbox_removed = False
        self.reject_next = 0
        self.reset_during_payout = 0
        self.power_up()
        for fault, value in faults.items():
            self.set_fault(fault, value)

    # -- device state ------------------------------------------------------------------------

    def power_up(self) -> None:
        """Power-on defaults; an interrupted payout is reported after SLAVE RESET, and a note
        that was in the path is cleared (GA138 0xE2/0xE1) and reported after it."""
        in_path: dict[str, Any] | None = getattr(self, "note", None)
        self.last_seq: int | None = None
        self.last_reply = b""
        self.cipher: DeviceEssp | None = None
        self.generator = 0
        self.modulus = 0
        self.version = 6
        self.enabled = False
        self.inhibits = 0
        self.payout_enabled = False
        self.queue: deque[tuple[bytes, bool]] = deque([(b"\xf1", False)])
        """Events for the next poll in the order they happened; True: repeats until EVENT ACK
        when the host polls with 0x56."""
        self.ack_mode = False
        self.note: dict[str, Any] | None = None
        self.last_reject = 0
        self.job: dict[str, Any] | None = None
        self.last_command_at = self.now
        self._next_insert: float | None = None
        if in_path is not None:
            channel = in_path["channel"]
            if in_path["state"] == "stacking":  # past the point of return: into the cashbox
                value = VALUES[channel - 1]
                self.credited.append(value)
                self.cashbox.append(value)
                self._emit(Event.NOTE_CLEARED_TO_CASHBOX, bytes((channel,)))
            elif in_path["state"] == "escrow":  # held: handed back
                self._emit(Event.NOTE_CLEARED_FROM_FRONT, bytes((channel,)))
        if self.interrupted:
            paid, requested = self.interrupted
            self._emit(Event.INCOMPLETE_PAYOUT, self._incomplete(paid, requested))
            self.interrupted = None

    def _money(self, value: int) -> bytes:
        if self.version >= 6:
            return b"\x01" + value.to_bytes(4, "little") + self.currency.encode()
        return value.to_bytes(4, "little")

    def _incomplete(self, paid: int, requested: int) -> bytes:
        pair = paid.to_bytes(4, "little") + requested.to_bytes(4, "little")
        return b"\x01" + pair + self.currency.encode() if self.version >= 6 else pair

    def _emit(self, code: int, data: bytes = b"") -> None:
        self.queue.append((bytes((code,)) + data, code in ACKED_EVENTS))

    def inject(self, raw: bytes, *, ack: bool = False) -> None:
        """Queue raw event bytes for the next poll (tests: codes or shapes the device model
        never makes); ``ack=True`` makes them repeat until EVENT ACK, like a credit."""
        with self._lock:
            self.queue.append((bytes(raw), ack))

    @property
    def acked(self) -> list[bytes]:
        """Events waiting for EVENT ACK."""
        return [item for item, needs_ack in self.queue if needs_ack]

    def insert_note(self, channel: int) -> None:
        """A customer feeds a note of ``channel`` (1-based)."""
        with self._lock:
            self._start_note(channel)

    def _start_note(self, channel: int) -> None:
        if not 1 <= channel <= len(VALUES):
            raise ValueError(f"channel {channel} is not in the dataset (1..{len(VALUES)})")
        if self.note is not None:
            raise RuntimeError("a note is already in the validator")
        self.note = {"channel": channel, "state": "reading", "at": self.now, "seen": False}

    def _accepting(self) -> bool:
        return (self.enabled and not self.jam and not self.cashbox_removed
                and not (self.ack_mode and self.acked) and self.job is None)

    def advance(self, now: float) -> None:
        """Let device time pass: notes move, payouts pay, escrow times out."""
        self.now = max(self.now, now)
        note = self.note
        if note is None and self.auto_insert and self._accepting():
            if self._next_insert is None:
                self._next_insert = self.now + self.insert_interval
            elif self.now >= self._next_insert:
                self._next_insert = None
                self._start_note(self.auto_insert.popleft())
                note = self.note
        if note is not None:
            channel, value = note["channel"], VALUES[note["channel"] - 1]
            if note["state"] == "reading" and self.now - note["at"] >= READ_TIME / self.speed:
                inhibited = not (self.inhibits >> (channel - 1) & 1)
                if self.reject_next or inhibited or not self.enabled:
                    code = self.reject_next or (0x06 if inhibited else 0x0C)
                    self.reject_next = 0
                    self._reject(code)
                else:
                    note.update(state="escrow", at=self.now)
            elif note["state"] == "escrow" and self.now - self.last_command_at > ESCROW_TIMEOUT:
                self._reject(0x13)
            elif note["state"] == "stacking" and self.now - note["at"] >= STACK_TIME / self.speed:
                self._emit(Event.CREDIT_NOTE, bytes((channel,)))
                self.credited.append(value)
                if self.payout_enabled and self.routes.get(value) == 0:
                    self.levels[value] = self.levels.get(value, 0) + 1
                    self._emit(Event.NOTE_STORED_IN_PAYOUT)
                else:
                    self.cashbox.append(value)
                    self._emit(Event.NOTE_STACKED)
                self.note = None
        self._advance_payout()

    def _reject(self, code: int) -> None:
        self.last_reject = code
        self._emit(Event.NOTE_REJECTING)
        self._emit(Event.NOTE_REJECTED)
        self.note = None

    def _advance_payout(self) -> None:
        job = self.job
        if job is None:
            return
        while job["notes"] and self.now >= job["next"]:
            if self.reset_during_payout and job["count"] >= self.reset_during_payout:
                self.reset_during_payout = 0
                self.interrupted = (job["paid"], job["requested"])
                self.job = None
                self.power_up()
                return
            value = job["notes"].pop(0)
            self.levels[value] -= 1
            self.paid_out.append(value)
            job["paid"] += value
            job["count"] += 1
            job["next"] += NOTE_PAYOUT_TIME / self.speed
        if not job["notes"]:
            self._emit(Event.DISPENSED, self._money(job["paid"]))
            self.job = None

    # -- wire --------------------------------------------------------------------------------

    def receive(self, data: bytes, now: float) -> list[Reply]:
        with self._lock:
            self.advance(now)
            replies: list[Reply] = []
            for item in self._deframer.feed(data, now):
                if not isinstance(item, Frame) or item["address"] != self.address:
                    continue  # bad CRC or another slave: silence, the host retries
                reply = self._packet(item)
                if reply is not None:
                    replies.append((self.reply_delay, reply))
            return replies

    def _packet(self, frame: Frame) -> bytes | None:
        seq = frame["seq"]
        code = frame["code"]
        is_sync = code == Command.SYNC
        if not is_sync and self.last_seq is not None and seq == self.last_seq:
            return self.last_reply  # a retransmission: answer again, do not execute again
        encrypted = code == STEX
        if encrypted:
            if self.cipher is None:
                return self._reply(seq, bytes((KEY_NOT_SET,)))
            try:
                opened = self.cipher.open(bytes(frame["encrypted"]))
            except ValueError:  # another key (the host's is stale): not executed
                return self._reply(seq, bytes((KEY_NOT_SET,)))
            if opened is None:
                return None  # GA138: a packet with the wrong count is discarded
            data = opened
        else:
            data = bytes((code,)) + bytes(frame.get("params", b""))
        command, params = data[0], data[1:]
        if not encrypted and self.cipher is None and self._needs_key(command):
            return self._reply(seq, bytes((KEY_NOT_SET,)))
        if not encrypted and self.cipher is not None and command in PAYOUT_COMMANDS:
            return self._reply(seq, bytes((KEY_NOT_SET,)))  # payouts only inside eSSP
        self.last_command_at = self.now
        self.executed.append(command)
        answer = self.execute(command, params)
        if command == Command.REQUEST_KEY_EXCHANGE and answer[0] == OK:
            encrypted = False  # the key exchange reply travels in clear
        body = self.cipher.seal(answer) if encrypted and self.cipher is not None else answer
        reply = self._reply(seq, body)
        if is_sync:
            # GA138 SYNC: "the slave device expects the next seq bit to be 0", whatever flag
            # the SYNC itself carried (hosts send it with 1 or, like the Node library, 0).
            self.last_seq = 1
        if command == Command.RESET:  # RESET: answer, then restart
            self.power_up()
        return reply

    def _needs_key(self, command: int) -> bool:
        if self.encryption == "none":
            return False
        if self.encryption == "all":
            return command not in KEY_COMMANDS
        return command in PAYOUT_COMMANDS

    def _reply(self, seq: int, body: bytes) -> bytes:
        self.last_seq = seq
        self.last_reply = self.framer.build(data=body, seq=seq, address=self.address)
        return self.last_reply

    # -- commands ----------------------------------------------------------------------------

    def execute(self, command: int, p: bytes) -> bytes:
        """Run one command; return the reply data (generic response first)."""
        ok = bytes((OK,))
        if command == Command.SYNC:
            return ok
        if command == Command.RESET:
            return ok
        if command == Command.HOST_PROTOCOL_VERSION:
            if len(p) != 1:
                return bytes((WRONG_PARAMS,))
            if not 4 <= p[0] <= self.max_version:
                return bytes((FAIL,))
            self.version = p[0]
            return ok
        if command == Command.SET_GENERATOR or command == Command.SET_MODULUS:
            if len(p) != 8:
                return bytes((WRONG_PARAMS,))
            value = int.from_bytes(p, "little")
            if not is_prime(value):
                return bytes((OUT_OF_RANGE,))
            if command == Command.SET_GENERATOR:
                self.generator = value
            else:
                self.modulus = value
            return ok
        if command == Command.REQUEST_KEY_EXCHANGE:
            if len(p) != 8:
                return bytes((WRONG_PARAMS,))
            if not (self.generator and self.modulus):
                return bytes((FAIL,))
            slave_random = secrets.randbits(63) | 1
            negotiated = pow(int.from_bytes(p, "little"), slave_random, self.modulus)
            self.cipher = DeviceEssp.agreed(negotiated, self.fixed_key)
            return ok + pow(self.generator, slave_random, self.modulus).to_bytes(8, "little")
        if command == Command.SETUP_REQUEST:
            return ok + self._setup()
        if command == Command.GET_SERIAL_NUMBER:
            return ok + self.serial.to_bytes(4, "big")
        if command == Command.SET_INHIBITS:
            if not p:
                return bytes((WRONG_PARAMS,))
            self.inhibits = int.from_bytes(p[:2], "little")
            return ok
        if command == Command.ENABLE:
            self.enabled = True
            return ok
        if command == Command.DISABLE:
            self.enabled = False
            return ok
        if command in (Command.POLL, Command.POLL_WITH_ACK):
            return ok + self._poll(with_ack=command == Command.POLL_WITH_ACK)
        if command == Command.EVENT_ACK:
            self.queue = deque(entry for entry in self.queue if not entry[1])
            return ok
        if command == Command.HOLD:
            return ok
        if command == Command.REJECT:
            if self.note is None or self.note["state"] not in ("escrow", "reading"):
                return bytes((CANNOT,))
            self._reject(0x08)
            return ok
        if command == Command.LAST_REJECT_CODE:
            return ok + bytes((self.last_reject,))
        return self._payout_command(command, p)

    def _setup(self) -> bytes:
        """SETUP REQUEST: a SMART Payout, values in whole units x real value multiplier 100."""
        currency = self.currency.encode()
        return SETUP_VALIDATOR.build({
            "unit_type": UnitType.SMART_PAYOUT, "firmware": b"0420", "country": currency,
            "multiplier": 1, "count": len(VALUES), "values": bytes(v // 100 for v in VALUES),
            "security": bytes((2,)) * len(VALUES), "real_multiplier": 100,
            "protocol_version": self.version,
            "expanded": {"currencies": [currency] * len(VALUES),
                         "values": [v // 100 for v in VALUES]}}, self.protocol)

    def _poll(self, *, with_ack: bool) -> bytes:
        self.ack_mode = with_ack
        out = bytearray()
        if not self.enabled:
            out += b"\xe8"
        if self.jam:
            out += b"\xe9"
        if self.cashbox_removed:
            out += b"\xe3"
        note = self.note
        if note is not None:
            if note["state"] == "reading":
                out += b"\xef\x00"
            elif note["state"] == "escrow":
                if note["seen"]:
                    note.update(state="stacking", at=self.now)  # this poll accepts the note
                    out += b"\xcc"
                else:
                    note["seen"] = True
                    out += bytes((0xEF, note["channel"]))
            elif note["state"] == "stacking":
                out += b"\xcc"
        job = self.job
        if job is not None and job["notes"]:
            out += b"\xda" + self._money(job["paid"])
        for item, _ in self.queue:  # in the order they happened (credit before stacked)
            out += item
        self.queue = deque(entry for entry in self.queue if with_ack and entry[1])
        return bytes(out)

    def _value_param(self, p: bytes) -> tuple[int, bytes] | None:
        if self.version >= 6:
            if len(p) < 7 or p[4:7].decode("ascii", "replace") != self.currency:
                return None
            return int.from_bytes(p[:4], "little"), p[7:]
        if len(p) < 4:
            return None
        return int.from_bytes(p[:4], "little"), p[4:]

    def _plan(self, amount: int) -> tuple[list[int] | None, int]:
        """Notes for ``amount`` (largest first) or None with the GA138 error code."""
        if amount > sum(v * n for v, n in self.levels.items()):
            return None, 1
        notes: list[int] = []
        left = amount
        for value in sorted(self.levels, reverse=True):
            take = min(self.levels[value], left // value)
            notes += [value] * take
            left -= take * value
        return (notes, 0) if left == 0 else (None, 2)

    def _payout_command(self, command: int, p: bytes) -> bytes:
        ok = bytes((OK,))
        if command == Command.ENABLE_PAYOUT_DEVICE:
            self.payout_enabled = True
            return ok
        if command == Command.DISABLE_PAYOUT_DEVICE:
            self.payout_enabled = False
            return ok
        if command == Command.GET_ALL_LEVELS:
            out = bytearray(ok + bytes((len(self.levels),)))
            for value in sorted(self.levels):
                out += self.levels[value].to_bytes(2, "little") + value.to_bytes(4, "little")
                out += self.currency.encode()
            return bytes(out)
        if command == Command.GET_DENOMINATION_LEVEL:
            parsed = self._value_param(p)
            if parsed is None or parsed[0] not in self.levels:
                return bytes((CANNOT,))
            return ok + self.levels[parsed[0]].to_bytes(2, "little")
        if command == Command.SET_DENOMINATION_ROUTE:
            if not p:
                return bytes((WRONG_PARAMS,))
            parsed = self._value_param(p[1:])
            if parsed is None or parsed[0] not in self.routes:
                return bytes((CANNOT, 2))
            self.routes[parsed[0]] = p[0]
            return ok
        if command == Command.GET_DENOMINATION_ROUTE:
            parsed = self._value_param(p)
            if parsed is None or parsed[0] not in self.routes:
                return bytes((CANNOT, 2))
            return ok + bytes((self.routes[parsed[0]],))
        if command == Command.PAYOUT_AMOUNT:
            parsed = self._value_param(p)
            if parsed is None:
                return bytes((WRONG_PARAMS,))
            amount, rest = parsed
            test = bool(rest) and rest[0] == 0x19
            if self.job is not None:
                return bytes((CANNOT, 3))
            if not self.payout_enabled:
                return bytes((CANNOT, 4))
            notes, error = self._plan(amount)
            if notes is None:
                return bytes((CANNOT, error))
            if not test:
                self.job = {"notes": notes, "paid": 0, "requested": amount, "count": 0,
                            "next": self.now + NOTE_PAYOUT_TIME / self.speed}
            return ok
        if command == Command.HALT_PAYOUT:
            if self.job is None:
                return bytes((CANNOT,))
            self._emit(Event.HALTED, self._money(self.job["paid"]))
            self.job = None
            return ok
        if command == Command.FLOAT_AMOUNT:
            if len(p) < 8:
                return bytes((WRONG_PARAMS,))
            parsed = self._value_param(p[4:])
            if parsed is None:
                return bytes((WRONG_PARAMS,))
            keep = parsed[0]
            moved = 0
            for value in sorted(self.levels):  # small notes go first, keeping large ones
                while self.levels[value] and sum(
                        v * n for v, n in self.levels.items()) - value >= keep:
                    self.levels[value] -= 1
                    self.cashbox.append(value)
                    moved += value
            self._emit(Event.FLOATED, self._money(moved))
            return ok
        if command in (Command.EMPTY_ALL, Command.SMART_EMPTY):
            total = sum(v * n for v, n in self.levels.items())
            for value, count in self.levels.items():
                self.cashbox += [value] * count
                self.levels[value] = 0
            if command == Command.EMPTY_ALL:
                self._emit(Event.EMPTYING)
                self._emit(Event.EMPTIED)
            else:
                self._emit(Event.SMART_EMPTIED, self._money(total))
            return ok
        return bytes((UNKNOWN,))

    # -- faults ------------------------------------------------------------------------------

    def set_fault(self, name: str, value: Any = True) -> None:
        with self._lock:
            if name == "jam":
                self.jam = option_flag(value)
            elif name == "fraud":
                if option_flag(value):
                    self._emit(Event.FRAUD_ATTEMPT, b"\x00")
            elif name == "rejected":  # True: "average fail"; a number: that reject code
                if not isinstance(value, bool) and str(value).strip().isdigit():
                    self.reject_next = int(value)
                else:
                    self.reject_next = 0x02 if option_flag(value) else 0
            elif name == "cashbox_removed":
                removed = option_flag(value)
                if self.cashbox_removed and not removed:
                    self._emit(Event.CASHBOX_REPLACED)
                self.cashbox_removed = removed
            elif name == "reset":
                if option_flag(value):
                    self.power_up()
            elif name == "reset_during_payout":
                self.reset_during_payout = int(value) if not isinstance(value, bool) else 1
            else:
                super().set_fault(name, value)


def specs() -> list[SimulatorSpec]:
    from vendhw.sim import SimulatorSpec

    return [SimulatorSpec.of(SspSimulator)]
