"""MDB peripherals: a coin changer (0x08) and a bill validator (0x30) on a 9-bit line.

They speak the in-band 9-bit form (``FF 00 b`` for a byte with the mode bit): host blocks in,
ACK or data + marked CHK out. Like real peripherals they report "was reset" at the first POLL
after power-up or RESET, repeat POLL data until the VMC ACKs it, and resend on RET.
"""

from __future__ import annotations

import collections
from abc import abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from vendhw.framing.base import Frame
from vendhw.framing.mdb import (
    ACK_TIMEOUT,
    BILL_SETUP,
    CHANGER_SETUP,
    IDENTIFICATION,
    Address,
    BillCommand,
    BillEscrow,
    BillExpansion,
    ChangerCommand,
    ChangerExpansion,
    MdbFramer,
)
from vendhw.options import option_flag
from vendhw.sim.base import Reply, Simulator

if TYPE_CHECKING:
    from vendhw.sim import SimulatorSpec

REPLY_DELAY = 0.0
EUR = 0x1978
"""MDB country code of the euro (``1`` + ISO 4217 numeric 978 in BCD)."""
"""Seconds before a reply by default (option ``reply_delay``); the spec allows up to 5 ms."""


class _MdbPeripheral(Simulator):
    kind = "cash"
    protocol = "mdb"
    baudrate = 9600
    address: int
    was_reset: int
    FAULT_EVENTS: ClassVar[dict[str, int]] = {}

    def __init__(self, *, reply_delay: float | str = REPLY_DELAY,
                 ack_window: float | str | None = None, **options: Any) -> None:
        faults = {k: options.pop(k) for k in list(options) if k in self.device_faults}
        super().__init__(**options)
        self.reply_delay = float(reply_delay)
        self.ack_window = None if ack_window in (None, "", "off") else (
            ACK_TIMEOUT if ack_window in (True, "spec", "on") else float(ack_window))
        """Seconds after its reply in which an ACK counts (option ``ack_window=spec`` is the
        spec's ``ACK_TIMEOUT``); a later ACK is ignored, so the data comes again at the next
        POLL as on a real peripheral. Off by default: over a pty or on a busy shared CPU a
        user-space host cannot promise 5 ms, and a sim that repeats then misleads."""
        self._replied_at = 0.0
        self.late_acks = 0
        """ACKs that came after the window (and were ignored)."""
        self.framer = MdbFramer(wire="9bit")
        self._deframer = self.framer.deframer("host")
        self.events: collections.deque[bytes] = collections.deque()
        self._unacked = b""
        self._last_reply = b""
        self.power_up()
        for fault, value in faults.items():  # device faults given as options (sim://...?jam=1)
            self.set_fault(fault, value)

    def power_up(self) -> None:
        # A reset does not clear a jam or fraud the host has not been told of yet: it is
        # still reported after JUST RESET (so ``sim://mdb-changer?jam=1`` survives start()).
        faults = [e for e in self.events if e[0] in self.FAULT_EVENTS.values()]
        self.events.clear()
        self.events.append(bytes((self.was_reset,)))
        self.events.extend(faults)
        self._unacked = b""

    def _ack(self) -> bytes:
        return self.framer.build(direction="device", control="ACK")

    def _data(self, data: bytes) -> bytes:
        return self.framer.build(direction="device", data=data)

    def receive(self, data: bytes, now: float) -> list[Reply]:
        replies: list[Reply] = []
        for item in self._deframer.feed(data):
            if not isinstance(item, Frame):
                continue  # a real peripheral ignores a corrupt block and lets the VMC retry
            reply = self._handle(item, now)
            if reply:
                self._replied_at = now + self.reply_delay
                self._last_reply = reply
                replies.append((self.reply_delay, reply))
        return replies

    def _handle(self, frame: Frame, now: float) -> bytes:
        command = frame["command"]
        if command == "ACK":
            if self.ack_window is not None and now - self._replied_at > self.ack_window:
                self.late_acks += 1  # too late: the data stays, the next POLL repeats it
                return b""
            self._unacked = b""
            return b""
        if command == "RET":
            return self._last_reply
        if command == "NAK":
            return b""
        head = frame["code"]
        if head & 0xF8 != self.address:
            return b""  # another peripheral's block
        return self._command(head & 0x07, bytes(frame["data"]))

    def _poll(self) -> bytes:
        if not self._unacked:
            out = bytearray()
            while self.events and len(out) + len(self.events[0]) <= 16:
                out += self.events.popleft()
            self._unacked = bytes(out)
        return self._data(self._unacked) if self._unacked else self._ack()

    @abstractmethod
    def _command(self, command: int, data: bytes) -> bytes:
        """Answer one command addressed to this peripheral."""


class MdbChangerSimulator(_MdbPeripheral):
    """Coin changer: EUR 5c..2 EUR in six tubes, level 3."""

    name = "mdb-changer"
    description = "MDB coin changer at 0x08 (EUR, 6 coin types, tubes; 9-bit in-band form)"
    address = Address.CHANGER
    was_reset = 0x0B
    device_faults = ("jam", "fraud", "tube_jam", "reset_during_payout")
    FAULT_EVENTS: ClassVar[dict[str, int]] = {"jam": 0x0C, "fraud": 0x0D, "tube_jam": 0x07}
    """Fault -> the status byte the changer answers a POLL with (MDB changer status codes)."""
    COIN_CREDITS = (1, 2, 4, 10, 20, 40)  # x scaling 5 -> 5, 10, 20, 50, 100, 200 cents
    SCALING = 5
    TUBE_CAPACITY = 50

    def __init__(self, *, tubes: str = "20,20,20,10,10,10", auto_insert: str = "",
                 tokens: str = "", alternative_payout: bool | str = False,
                 diagnostic: str = "", **options: Any) -> None:
        self.diagnostic = [c.strip() for c in str(diagnostic).split(",") if c.strip()]
        """SEND DIAGNOSTIC STATUS codes to answer (hex, ``diagnostic=1130``); empty: derived."""
        self.alternative_payout = option_flag(alternative_payout)
        """Offer the level-3 optional feature EXPANSION PAYOUT (option ``alternative_payout``)."""
        self.features_enabled = 0
        self._payout_status: list[int] | None = None
        self._value_paid: int | None = None
        counts = [int(x) for x in tubes.split(",")]
        self.tubes = counts + [0] * (16 - len(counts))
        self.tokens = {int(x) for x in str(tokens).split(",") if x.strip()}
        """Coin types that are vend tokens (credit byte 0xFF in SETUP), option ``tokens=6``."""
        self.cashbox = 0
        self.enabled_mask = 0
        self.auto_insert = [int(x) for x in auto_insert.split(",") if x.strip()]
        self.paid_out = 0
        self.reset_during_payout = False
        super().__init__(**options)

    def set_fault(self, name: str, value: Any = True) -> None:
        code = self.FAULT_EVENTS.get(name)
        if code is not None:
            if option_flag(value):
                self.events.append(bytes((code,)))
        elif name == "reset_during_payout":
            self.reset_during_payout = option_flag(value)
        else:
            super().set_fault(name, value)

    def _credit(self, coin: int) -> int:
        """Credit units of a coin type (0 for unused types and tokens)."""
        if coin in self.tokens or coin >= len(self.COIN_CREDITS):
            return 0
        return self.COIN_CREDITS[coin]

    def insert_coin(self, coin: int) -> None:
        """A customer drops coin type ``coin``; accepted only while enabled."""
        if not self.enabled_mask >> coin & 1:
            return  # returned physically, not reported
        if self.tubes[coin] < self.TUBE_CAPACITY:
            self.tubes[coin] += 1
            route = 1
        else:
            self.cashbox += 1
            route = 0
        self.events.append(bytes((0x40 | route << 4 | coin, min(self.tubes[coin], 255))))

    def _command(self, command: int, data: bytes) -> bytes:
        if command == ChangerCommand.RESET:
            self.enabled_mask = self.features_enabled = 0
            self.power_up()
            return self._ack()
        if command == ChangerCommand.SETUP:
            credits = bytes(0xFF if i in self.tokens else self._credit(i) for i in range(16))
            routing = sum(1 << i for i in range(16) if self._credit(i) or i in self.tokens)
            return self._data(CHANGER_SETUP.build(
                {"level": 3, "country": EUR, "scaling": self.SCALING, "decimals": 2,
                 "routing": routing, "credits": credits}, "mdb"))
        if command == ChangerCommand.TUBE_STATUS:
            full = sum(1 << i for i, n in enumerate(self.tubes) if n >= self.TUBE_CAPACITY)
            return self._data(full.to_bytes(2, "big") + bytes(min(n, 255) for n in self.tubes))
        if command == ChangerCommand.POLL:
            if self.enabled_mask and self.auto_insert:
                for coin in self.auto_insert:
                    self.insert_coin(coin)
                self.auto_insert = []
            return self._poll()
        if command == ChangerCommand.COIN_TYPE and len(data) >= 2:
            self.enabled_mask = int.from_bytes(data[:2], "big")
            return self._ack()
        if command == ChangerCommand.DISPENSE and data:
            count, coin = data[0] >> 4, data[0] & 0x0F
            paid = min(count, self.tubes[coin])
            if self.reset_during_payout:
                paid //= 2
                self.tubes[coin] -= paid
                self.paid_out += paid * self._credit(coin) * self.SCALING
                self.enabled_mask = 0
                self.power_up()  # the next POLL says "changer was reset"
                return self._ack()
            self.tubes[coin] -= paid
            self.paid_out += paid * self._credit(coin) * self.SCALING
            self.events.append(b"\x02")  # payout busy, then done at the following POLL
            return self._ack()
        if command == ChangerCommand.EXPANSION:
            return self._expansion(data)
        return self._ack()

    def _expansion(self, data: bytes) -> bytes:
        sub = data[0] if data else -1
        if sub == ChangerExpansion.IDENTIFICATION:  # optional feature bit 0: alternative payout
            return self._data(IDENTIFICATION.build(
                {"manufacturer": b"VHW", "serial": b"000000000001", "model": b"SIM-CHANGER ",
                 "software_version": b"\x01\x00",
                 "rest": int(self.alternative_payout).to_bytes(4, "big")}, "mdb"))
        if sub == ChangerExpansion.FEATURE_ENABLE and len(data) >= 5:
            self.features_enabled = int.from_bytes(data[1:5], "big")
            return self._ack()
        if sub == ChangerExpansion.PAYOUT and len(data) >= 2 and self.features_enabled & 1:
            self._expansion_payout(data[1])
            return self._ack()
        if sub == ChangerExpansion.PAYOUT_VALUE_POLL:  # the value paid once, then ACK (done)
            paid, self._value_paid = self._value_paid, None
            return self._data(bytes((min(paid, 255),))) if paid is not None else self._ack()
        if sub == ChangerExpansion.SEND_DIAGNOSTIC_STATUS:  # two-byte codes, "03 00" = OK
            return self._data(self.diagnostic_codes())
        if sub == ChangerExpansion.PAYOUT_STATUS:  # coins of each type paid since the last one
            counts, self._payout_status = self._payout_status or [0] * 16, None
            return self._data(bytes(min(n, 255) for n in counts))
        return self._ack()

    def diagnostic_codes(self) -> bytes:
        """What SEND DIAGNOSTIC STATUS answers: the option ``diagnostic=1130,1502`` (hex
        codes) if given, else a pending jam/tube jam, else inhibited (disabled) or OK."""
        if self.diagnostic:
            return b"".join(bytes.fromhex(code) for code in self.diagnostic)
        codes = b""
        pending = {e[0] for e in self.events}
        if self.FAULT_EVENTS["jam"] in pending:
            codes += b"\x11\x30"  # coin jam in sensor
        if self.FAULT_EVENTS["tube_jam"] in pending:
            codes += b"\x14\x00"  # dispenser module error
        return codes or (b"\x06\x00" if not self.enabled_mask else b"\x03\x00")

    def _expansion_payout(self, units: int) -> None:
        """Pay ``units`` x scaling from the tubes, largest coins first, as the changer decides."""
        counts = self._payout_status or [0] * 16
        left = units
        for coin in sorted(range(16), key=lambda c: -self._credit(c)):
            credit = self._credit(coin)
            if not credit:
                continue
            n = min(left // credit, self.tubes[coin])
            if self.reset_during_payout:
                n //= 2
            self.tubes[coin] -= n
            counts[coin] += n
            left -= n * credit
        paid = units - left
        self.paid_out += paid * self.SCALING
        self._payout_status = counts
        self._value_paid = paid
        if self.reset_during_payout:
            self.enabled_mask = 0
            self.power_up()

    def summary(self) -> dict[str, Any]:
        return {"tubes": self.tubes[:6], "cashbox": self.cashbox, "paid_out": self.paid_out}


class MdbBillSimulator(_MdbPeripheral):
    """Bill validator: EUR 5/10/20/50 with escrow, level 1."""

    name = "mdb-bill"
    description = "MDB bill validator at 0x30 (EUR 5-50, escrow; 9-bit in-band form)"
    address = Address.BILL_VALIDATOR
    was_reset = 0x06
    device_faults = ("jam", "fraud", "rejected", "cashbox_removed")
    FAULT_EVENTS: ClassVar[dict[str, int]] = {"jam": 0x05, "fraud": 0x0C,
                                               "cashbox_removed": 0x08}
    """Fault -> the status byte the validator answers a POLL with (MDB bill status codes)."""
    BILL_CREDITS = (5, 10, 20, 50)  # x scaling 100 -> 500 .. 5000 cents
    SCALING = 100

    def __init__(self, *, auto_insert: str = "", **options: Any) -> None:
        self.enabled_mask = 0
        self.escrow_mask = 0
        self.escrow: int | None = None
        self.stacked: list[int] = []
        self.auto_insert = [int(x) for x in auto_insert.split(",") if x.strip()]
        self.reject_next = False
        super().__init__(**options)

    def set_fault(self, name: str, value: Any = True) -> None:
        code = self.FAULT_EVENTS.get(name)
        if code is not None:
            if option_flag(value):
                self.events.append(bytes((code,)))
        elif name == "rejected":
            self.reject_next = option_flag(value)
        else:
            super().set_fault(name, value)

    def insert_bill(self, bill: int) -> None:
        """A customer feeds bill type ``bill``."""
        if not self.enabled_mask >> bill & 1:
            self.events.append(b"\x41")  # one insertion attempt while disabled
            return
        if self.reject_next:
            self.reject_next = False
            self.events.append(b"\x0b")
            return
        if self.escrow_mask >> bill & 1:
            self.escrow = bill
            self.events.append(bytes((0x90 | bill,)))
        else:
            self.stacked.append(bill)
            self.events.append(bytes((0x80 | bill,)))

    def _command(self, command: int, data: bytes) -> bytes:
        if command == BillCommand.RESET:
            self.enabled_mask = self.escrow_mask = 0
            if self.escrow is not None:
                self.escrow = None  # a held note is returned at reset
            self.power_up()
            return self._ack()
        if command == BillCommand.SETUP:
            credits = bytes(self.BILL_CREDITS) + bytes(16 - len(self.BILL_CREDITS))
            return self._data(BILL_SETUP.build(
                {"level": 1, "country": EUR, "scaling": self.SCALING, "decimals": 2,
                 "stacker_capacity": 500, "security": 0, "escrow": 0xFF, "credits": credits},
                "mdb"))
        if command == BillCommand.POLL:
            if self.enabled_mask and self.auto_insert:
                for bill in self.auto_insert:
                    self.insert_bill(bill)
                self.auto_insert = []
            return self._poll()
        if command == BillCommand.BILL_TYPE and len(data) >= 4:
            self.enabled_mask = int.from_bytes(data[:2], "big")
            self.escrow_mask = int.from_bytes(data[2:4], "big")
            return self._ack()
        if command == BillCommand.ESCROW and data:
            if self.escrow is None:
                self.events.append(b"\x0a")  # invalid escrow request
            elif data[0] == BillEscrow.STACK_BILL:
                self.stacked.append(self.escrow)
                self.events.append(bytes((0x80 | self.escrow,)))
                self.escrow = None
            else:
                self.events.append(bytes((0xA0 | self.escrow,)))
                self.escrow = None
            return self._ack()
        if command == BillCommand.STACKER:
            return self._data(len(self.stacked).to_bytes(2, "big"))
        if command == BillCommand.EXPANSION and data[:1] == bytes(
                (BillExpansion.LEVEL_1_IDENTIFICATION,)):
            return self._data(IDENTIFICATION.build(
                {"manufacturer": b"VHW", "serial": b"000000000002", "model": b"SIM-BILL    ",
                 "software_version": b"\x01\x00", "rest": b""}, "mdb"))
        return self._ack()

    def summary(self) -> dict[str, Any]:
        return {"stacked": self.stacked, "escrow": self.escrow}


class MdbBusSimulator(Simulator):
    """Several MDB peripherals on one line (one pty, one ``sim://mdb-bus``): every member
    sees every byte and answers only at its own address, as on a real bus."""

    name = "mdb-bus"
    kind = "cash"
    protocol = "mdb"
    baudrate = 9600
    description = ("MDB bus: a changer (0x08), a bill validator (0x30) and a cashless "
                   "reader (0x10) on one line; options coins=, notes=, funds=")

    def __init__(self, *, members: str = "mdb-changer,mdb-bill,mdb-cashless",
                 coins: str = "", notes: str = "", funds: int | str = 1000,
                 **options: Any) -> None:
        super().__init__(**options)
        from vendhw.sim import create

        per_member: dict[str, dict[str, Any]] = {
            "mdb-changer": {"auto_insert": coins}, "mdb-bill": {"auto_insert": notes},
            "mdb-cashless": {"funds": funds}}
        self.members: list[Simulator] = [
            create(name.strip(), **per_member.get(name.strip(), {}))
            for name in members.split(",") if name.strip()]
        self._deframer = MdbFramer(wire="9bit").deframer("host")
        self._addressed: Simulator | None = None

    def member(self, name: str) -> Simulator:
        """The member simulator called ``name`` (``mdb-changer``...)."""
        for sim in self.members:
            if sim.name == name:
                return sim
        raise KeyError(name)

    def receive(self, data: bytes, now: float) -> list[Reply]:
        # An addressed block goes to every member (each answers only its own address); an
        # ACK, RET or NAK only to the peripheral the VMC addressed last, as on the wire: a
        # RET must not make every member send its last reply again.
        out: list[Reply] = []
        for item in self._deframer.feed(data):
            if not isinstance(item, Frame):
                continue
            if item["command"] in ("ACK", "RET", "NAK"):
                targets = [self._addressed] if self._addressed is not None else []
            else:
                head = item["code"]
                self._addressed = next(
                    (sim for sim in self.members
                     if getattr(sim, "address", None) == head & 0xF8), None)
                targets = self.members
            for sim in targets:
                out += sim.receive(item.raw, now)
        return self.line.apply(out)

    def tick(self, now: float) -> list[Reply]:
        out: list[Reply] = []
        for sim in self.members:
            out += sim.tick(now)
        return out

    def next_tick(self) -> float | None:
        due = [t for t in (sim.next_tick() for sim in self.members) if t is not None]
        return min(due) if due else None

    def summary(self) -> dict[str, Any]:
        return {sim.name: getattr(sim, "summary", dict)() for sim in self.members}


def specs() -> list[SimulatorSpec]:
    from vendhw.sim import SimulatorSpec

    return [SimulatorSpec.of(MdbChangerSimulator), SimulatorSpec.of(MdbBillSimulator),
            SimulatorSpec.of(MdbBusSimulator)]
