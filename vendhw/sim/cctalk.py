"""ccTalk peripherals: a coin acceptor (address 2), a hopper (3) and a bill validator (40).

They answer as real devices do from power-up: master inhibit active, every coin or bill
inhibited, event counters at 0 (counting 1..255 then 1 again), hopper disabled. Packets with
a bad checksum, or a partial packet followed by 50 ms of silence, are dropped without a
word (Part 1 §11); packets for other addresses are ignored. They reuse
:class:`~vendhw.framing.cctalk.CcTalkFramer`, never the host code.

Money goes in with :meth:`CcTalkCoinSimulator.insert_coin` /
:meth:`CcTalkBillSimulator.insert_bill`, or with the ``auto_insert="1,2,3"`` option
(channels fed one every ``insert_interval`` seconds once the device accepts), e.g.
``sim://cctalk-coin?auto_insert=1,5,6``. Time advances with the host's traffic (the ``now``
of each packet), so there is no background thread. Options from a URL arrive as strings;
device faults may be options too (``sim://cctalk-hopper?reset_during_payout=3``).
"""

from __future__ import annotations

import threading
from abc import abstractmethod
from collections import deque
from typing import TYPE_CHECKING, Any, ClassVar

from vendhw.framing.base import Frame, Layout
from vendhw.framing.cctalk import (
    BILL_ID_REPLY,
    BUFFERED_BILL_EVENTS_REPLY,
    BUFFERED_CREDIT_REPLY,
    COIN_ID_REPLY,
    COMMS_REVISION_REPLY,
    COUNTRY_SCALING_FACTOR_REPLY,
    DISPENSE_HOPPER_COINS_REPLY,
    EMERGENCY_STOP_REPLY,
    HOPPER_COIN_REPLY,
    HOPPER_DISPENSE_COUNT_REPLY,
    HOPPER_STATUS_REPLY,
    INTER_BYTE_GAP,
    MASTER_INHIBIT_STATUS_REPLY,
    NAK,
    REPLY,
    RESULT_FIELDS,
    ROUTE_BILL_REPLY,
    SERIAL_NUMBER_REPLY,
    TEST_HOPPER_REPLY,
    CcTalkFramer,
    Header,
)
from vendhw.options import option_flag, option_ints
from vendhw.sim.base import Reply, Simulator

if TYPE_CHECKING:
    from vendhw.sim import SimulatorSpec

REPLY_DELAY = 0.002
"""Seconds before a reply (Part 1 §11: most devices answer within 10 ms)."""
INSERT_INTERVAL = 0.25
"""Seconds between auto-inserted coins or notes (a customer feeding them one by one)."""
COIN_TIME = 0.05
"""Seconds per coin paid by the hopper (real ones pay 3-10 coins a second)."""
COMMS_REVISION = (1, 4, 7)
"""What header 4 answers: release 1 of ccTalk 4.7."""


def _build(layout: Layout, **fields: Any) -> bytes:
    return layout.build(fields, "cctalk")


def _id_field(layout: Layout, text: str, pad: bytes) -> bytes:
    """An id cut or padded to the width its layout declares (headers 184, 157, 171)."""
    width = layout.fixed_size
    return _build(layout, id=text.encode("ascii")[:width].ljust(width, pad))


class _CcTalkPeripheral(Simulator):
    """Packet handling, identification and the reset every ccTalk peripheral shares."""

    kind = "cash"
    protocol = "cctalk"
    baudrate = 9600
    address: int
    category: ClassVar[str]
    product: ClassVar[str] = "VENDHW-SIM"
    manufacturer: ClassVar[str] = "vendhw"

    def __init__(self, *, address: int | str | None = None, checksum: str = "simple",
                 echo: bool | str = False, serial: int | str = 0x0A1B2C,
                 reply_delay: float | str = REPLY_DELAY, **options: Any) -> None:
        faults = {k: options.pop(k) for k in list(options) if k in self.device_faults}
        super().__init__(**options)
        self.address = int(address) if address is not None else type(self).address
        self.framer = CcTalkFramer(checksum=checksum)
        self.echo = option_flag(echo)
        self.serial = int(serial)
        self.reply_delay = float(reply_delay)
        self._deframer = self.framer.deframer("host", gap=INTER_BYTE_GAP)
        self._lock = threading.RLock()
        self.now = 0.0
        self.received: list[int] = []
        """Headers addressed to this device, in order (for tests)."""
        self.power_up()
        for fault, value in faults.items():  # device faults given as options (sim://...?jam=2)
            self.set_fault(fault, value)

    # -- device state ------------------------------------------------------------------------

    def power_up(self) -> None:
        """Power-up defaults (also what RESET DEVICE restores)."""

    def advance(self, now: float) -> None:
        """Let the device's own time pass up to ``now`` (coins fall, motors turn)."""
        self.now = max(self.now, now)

    # -- wire --------------------------------------------------------------------------------

    def receive(self, data: bytes, now: float) -> list[Reply]:
        with self._lock:
            self.advance(now)
            replies: list[Reply] = [(0.0, data)] if self.echo else []
            for item in self._deframer.feed(data, now):
                if not isinstance(item, Frame):
                    continue  # bad packets are discarded silently; the host retries
                if item["dest"] not in (self.address, 0):
                    continue
                header = item["header"]
                self.received.append(header)
                answer = self.handle(header, bytes(item["data"]))
                if answer is None or item["dest"] == 0:
                    if header == Header.RESET_DEVICE:
                        self.power_up()
                    continue  # broadcasts are obeyed, never answered (replies would collide)
                reply_header, reply_data = answer
                packet = self.framer.build(direction="device", dest=item.get("src", 1),
                                           src=self.address, header=reply_header,
                                           data=reply_data)
                replies.append((self.reply_delay, packet))
                if header == Header.RESET_DEVICE:
                    self.power_up()  # RESET DEVICE: ACK first, then restart
            return replies

    def handle(self, header: int, data: bytes) -> tuple[int, bytes] | None:
        """Answer one command: ``(REPLY, data)``, ``(NAK, b"")``, or None for silence."""
        common: dict[int, bytes] = {
            Header.SIMPLE_POLL: b"",
            Header.REQUEST_MANUFACTURER_ID: self.manufacturer.encode(),
            Header.REQUEST_EQUIPMENT_CATEGORY_ID: self.category.encode(),
            Header.REQUEST_PRODUCT_CODE: self.product.encode(),
            Header.REQUEST_SOFTWARE_REVISION: b"SIM-1.0",
            Header.REQUEST_BUILD_CODE: b"SIM01   ",
            Header.RESET_DEVICE: b"",
        }
        if header in common:
            return (REPLY, common[header])
        if header == Header.REQUEST_SERIAL_NUMBER:
            return (REPLY, _build(SERIAL_NUMBER_REPLY, serial=self.serial.to_bytes(3, "little")))
        if header == Header.REQUEST_COMMS_REVISION:
            release, major, minor = COMMS_REVISION
            return (REPLY, _build(COMMS_REVISION_REPLY, release=release, major=major,
                                  minor=minor))
        if header == Header.REQUEST_STATUS:  # 0 = OK
            return (REPLY, b"\x00")
        answer = self.command(header, data)
        return answer if answer is not None else (NAK, b"")

    def command(self, header: int, data: bytes) -> tuple[int, bytes] | None:
        """Device-specific headers; None = not implemented (NAK)."""
        return None

    def set_fault(self, name: str, value: Any = True) -> None:
        with self._lock:
            if name == "reset":
                if option_flag(value):
                    self.power_up()
                return
            super().set_fault(name, value)


class _EventBuffer:
    """The five-event buffer and its counter (1..255, wrapping to 1; 0 only after reset)."""

    def __init__(self) -> None:
        self.counter = 0
        self.events: deque[tuple[int, int]] = deque([(0, 0)] * 5, maxlen=5)

    def push(self, a: int, b: int) -> None:
        self.counter = self.counter % 255 + 1
        self.events.appendleft((a, b))

    def reply(self, layout: Layout = BUFFERED_CREDIT_REPLY) -> bytes:
        """The 229/159 reply (both share one layout), newest event first."""
        fields = {"counter": self.counter}
        for (a_key, b_key), (a, b) in zip(RESULT_FIELDS, self.events, strict=True):
            fields[a_key], fields[b_key] = a, b
        return layout.build(fields, "cctalk")


class _Acceptor(_CcTalkPeripheral):
    """Master inhibit, the 16-channel inhibit mask and the event buffer."""

    read_header: ClassVar[int]
    read_layout: ClassVar[Layout]
    default_ids: ClassVar[tuple[str, ...]]

    def __init__(self, *, auto_insert: Any = "", insert_interval: float | str = INSERT_INTERVAL,
                 ids: Any = None, **options: Any) -> None:
        self.auto_insert = option_ints(auto_insert)
        self.insert_interval = float(insert_interval)
        names = ids if ids is not None else self.default_ids
        self.ids = [s.strip() for s in (names.split(",") if isinstance(names, str) else names)]
        self.ids += ["......"] * (16 - len(self.ids))
        self._next_insert: float | None = None
        super().__init__(**options)

    def power_up(self) -> None:
        self.buffer = _EventBuffer()
        self.master_enabled = False
        self.mask = 0
        self._next_insert = None

    @property
    def accepting(self) -> bool:
        return self.master_enabled and self.mask != 0

    def channel_enabled(self, channel: int) -> bool:
        return self.master_enabled and 1 <= channel <= 16 and bool(self.mask >> (channel - 1) & 1)

    def advance(self, now: float) -> None:
        super().advance(now)
        if not self.auto_insert or not self.accepting:
            self._next_insert = None
            return
        if self._next_insert is None:
            self._next_insert = now + self.insert_interval
        while self.auto_insert and self._next_insert is not None and self._next_insert <= now:
            self.feed(self.auto_insert.pop(0))
            self._next_insert += self.insert_interval

    @abstractmethod
    def feed(self, channel: int) -> None:
        """A customer inserts the item of ``channel`` (auto-insert calls this)."""

    def command(self, header: int, data: bytes) -> tuple[int, bytes] | None:
        if header == self.read_header:
            return (REPLY, self.buffer.reply(self.read_layout))
        if header == Header.MODIFY_INHIBIT_STATUS and len(data) >= 2:  # bit = 1: enabled
            self.mask = data[0] | data[1] << 8
            return (REPLY, b"")
        if header == Header.REQUEST_INHIBIT_STATUS:
            return (REPLY, self.mask.to_bytes(2, "little"))
        if header == Header.MODIFY_MASTER_INHIBIT_STATUS and data:  # bit 0 = 1: normal
            self.master_enabled = bool(data[0] & 1)
            return (REPLY, b"")
        if header == Header.REQUEST_MASTER_INHIBIT_STATUS:
            return (REPLY, _build(MASTER_INHIBIT_STATUS_REPLY,
                                  status=1 if self.master_enabled else 0))
        return None

    def summary(self) -> dict[str, Any]:
        return {"counter": self.buffer.counter, "master_enabled": self.master_enabled,
                "mask": self.mask}


class CcTalkCoinSimulator(_Acceptor):
    """A coin acceptor: EUR 5c..2 EUR on channels 1-6."""

    name = "cctalk-coin"
    description = ("ccTalk coin acceptor at address 2 (EUR 5c-2 EUR on channels 1-6); "
                   "option auto_insert=1,5,6")
    address = 2
    category = "Coin Acceptor"
    read_header = Header.READ_BUFFERED_CREDIT_OR_ERROR_CODES
    read_layout = BUFFERED_CREDIT_REPLY
    default_ids = ("EU005A", "EU010A", "EU020A", "EU050A", "EU100A", "EU200A")
    device_faults = ("jam", "fraud", "reject", "reset")

    def __init__(self, **options: Any) -> None:
        self.credited: list[int] = []
        self.reject_next = False
        super().__init__(**options)

    def insert_coin(self, channel: int) -> None:
        """A customer drops the coin of ``channel``: accepted, or rejected as inhibited."""
        with self._lock:
            self.feed(channel)

    def feed(self, channel: int) -> None:
        known = 1 <= channel <= 16 and not self.ids[channel - 1].startswith("..")
        if not known or self.reject_next:
            self.reject_next = False
            self.buffer.push(0, 1)  # reject coin: no programmed coin matched
        elif not self.channel_enabled(channel):
            self.buffer.push(0, 2)  # inhibited coin
        else:
            self.buffer.push(channel, 1)  # credit, sorter path 1
            self.credited.append(channel)

    def set_fault(self, name: str, value: Any = True) -> None:
        with self._lock:
            if name == "jam" and option_flag(value):
                self.buffer.push(0, 6)  # credit sensor timeout: coin jam
            elif name == "fraud" and option_flag(value):
                self.buffer.push(0, 20)  # coin-on-string mechanism activated
            elif name == "reject":
                self.reject_next = option_flag(value)
            else:
                super().set_fault(name, value)

    def command(self, header: int, data: bytes) -> tuple[int, bytes] | None:
        if header == Header.REQUEST_COIN_ID and data:
            channel = data[0]
            if not 1 <= channel <= 16:
                return None
            return (REPLY, _id_field(COIN_ID_REPLY, self.ids[channel - 1], b"."))
        if header == Header.PERFORM_SELF_CHECK:  # 0 = no fault
            return (REPLY, b"\x00")
        return super().command(header, data)

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "credited": list(self.credited)}


class CcTalkBillSimulator(_Acceptor):
    """A bill validator with escrow: EUR 5/10/20/50 on channels 1-4."""

    name = "cctalk-bill"
    description = ("ccTalk bill validator at address 40 (EUR 5-50, escrow); "
                   "option auto_insert=1,2")
    address = 40
    category = "Bill Validator"
    read_header = Header.READ_BUFFERED_BILL_EVENTS
    read_layout = BUFFERED_BILL_EVENTS_REPLY
    default_ids = ("EU0005A", "EU0010A", "EU0020A", "EU0050A")
    device_faults = ("jam", "fraud", "reject", "cashbox_removed", "cashbox_replaced",
                     "cashbox_full", "reset")

    def __init__(self, **options: Any) -> None:
        self.stacked: list[int] = []
        self.returned: list[int] = []
        self.reject_next = False
        super().__init__(**options)

    def power_up(self) -> None:
        super().power_up()
        self.mode = 0b01  # stacker on, escrow off until the host asks (header 153)
        escrowed = getattr(self, "escrow", None)
        if escrowed is not None:
            self.returned.append(escrowed)  # a restart hands the held note back
        self.escrow: int | None = None

    def insert_bill(self, channel: int) -> None:
        """A customer feeds the note of ``channel``."""
        with self._lock:
            self.feed(channel)

    def feed(self, channel: int) -> None:
        known = 1 <= channel <= 16 and not self.ids[channel - 1].startswith("..")
        if self.escrow is not None:
            self.returned.append(channel)  # the slot is busy: handed straight back
            return
        if not self.master_enabled:
            self.buffer.push(0, 0)  # master inhibit active
        elif not known or self.reject_next:
            self.reject_next = False
            self.buffer.push(0, 2)  # validation fail
        elif not self.channel_enabled(channel):
            self.buffer.push(0, 4)  # inhibited bill (serial)
        elif self.mode & 0b10:
            self.escrow = channel
            self.buffer.push(channel, 1)  # validated, held in escrow
        else:
            self.stacked.append(channel)
            self.buffer.push(channel, 0)  # validated and stacked

    def set_fault(self, name: str, value: Any = True) -> None:
        codes = {"jam": 6, "fraud": 8, "cashbox_removed": 11, "cashbox_replaced": 12,
                 "cashbox_full": 14}
        with self._lock:
            if name in codes:
                if option_flag(value):
                    self.buffer.push(0, codes[name])
            elif name == "reject":
                self.reject_next = option_flag(value)
            else:
                super().set_fault(name, value)

    def command(self, header: int, data: bytes) -> tuple[int, bytes] | None:
        if header == Header.REQUEST_BILL_ID and data:
            channel = data[0]
            if not 1 <= channel <= 16:
                return None
            return (REPLY, _id_field(BILL_ID_REPLY, self.ids[channel - 1], b"."))
        if header == Header.REQUEST_COUNTRY_SCALING_FACTOR and len(data) >= 2:  # 100, 2 decimals
            if data[:2] == b"EU":
                return (REPLY, _build(COUNTRY_SCALING_FACTOR_REPLY, factor=100, decimals=2))
            return (REPLY, _build(COUNTRY_SCALING_FACTOR_REPLY, factor=0, decimals=0))
        if header == Header.MODIFY_BILL_OPERATING_MODE and data:
            self.mode = data[0] & 0b11
            return (REPLY, b"")
        if header == Header.REQUEST_BILL_OPERATING_MODE:
            return (REPLY, bytes((self.mode,)))
        if header == Header.ROUTE_BILL and data:
            code = data[0]
            if code == 255:
                return (REPLY, b"")  # extend the escrow timeout
            if self.escrow is None:
                return (REPLY, _build(ROUTE_BILL_REPLY, error=254))  # escrow empty
            channel, self.escrow = self.escrow, None
            if code == 1:
                self.stacked.append(channel)
                self.buffer.push(channel, 0)
            else:
                self.returned.append(channel)
                self.buffer.push(0, 1)  # bill returned from escrow
            return (REPLY, b"")
        return super().command(header, data)

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "stacked": list(self.stacked),
                "returned": list(self.returned), "escrow": self.escrow}


JAM_OVER_CURRENT = (0b0000_0001, 0, 0)
"""TEST HOPPER registers after a stall: absolute maximum current exceeded."""
JAM_REVERSE_LIMIT = (0b0000_0100, 0b0001_0000, 0)
"""After a jam the motor could not clear: motor reversed (reg 1 bit 2) and motor reverse
limit reached (reg 2 bit 4, Part 2 v4.7 §3.90)."""


class CcTalkHopperSimulator(_CcTalkPeripheral):
    """A payout hopper of 1 EUR coins that pays one coin every ``coin_time`` seconds.

    Options: ``coins`` (inventory), ``coin_id``, ``coin_time``, ``security`` (``serial``: the
    dispense command must carry the serial number; ``none``: just the count). Faults: ``jam``
    (the motor stalls after N more coins: over-current), ``reverse_limit`` (a jam the motor
    could not clear by reversing after N more coins: motor reversed + reverse limit reached),
    ``empty``, ``reset_during_payout`` (a power cut
    after N coins of the next payout; the lifetime dispense count survives in NV memory).
    """

    name = "cctalk-hopper"
    description = "ccTalk payout hopper at address 3 (1 EUR coins, 100 in stock)"
    address = 3
    category = "Payout"
    device_faults = ("jam", "reverse_limit", "empty", "reset_during_payout", "reset")

    def __init__(self, *, coins: int | str = 100, coin_id: str = "EU100A",
                 coin_time: float | str = COIN_TIME, security: str = "serial",
                 **options: Any) -> None:
        self.inventory = int(coins)
        self.coin_id = coin_id
        self.coin_time = float(coin_time)
        self.security = security
        self.dispensed_total = 0  # NV memory: survives resets
        self.jam_after: int | None = None
        self.jam_flags = JAM_OVER_CURRENT
        self.reset_after: int | None = None
        self.paid_out: list[int] = []
        super().__init__(**options)

    def power_up(self) -> None:
        self.enabled = False
        self.counter = 0
        self.remaining = 0
        self.paid = 0
        self.unpaid = 0
        self._next_coin: float | None = None
        self.flags = [0b0100_0000, 0, 0]  # power-up detected

    def advance(self, now: float) -> None:
        super().advance(now)
        while self.remaining and self._next_coin is not None and self._next_coin <= now:
            if self.inventory <= 0:
                self.flags[0] |= 0b10  # payout timeout: nothing came out
                self._stop()
                return
            if self.jam_after is not None and self.jam_after <= 0:
                self.jam_after = None
                for register, bits in enumerate(self.jam_flags):
                    self.flags[register] |= bits
                self._stop()
                return
            self.inventory -= 1
            self.remaining -= 1
            self.paid += 1
            self.dispensed_total = (self.dispensed_total + 1) & 0xFFFFFF
            self.paid_out.append(1)
            if self.jam_after is not None:
                self.jam_after -= 1
            self._next_coin += self.coin_time
            if self.reset_after is not None:
                self.reset_after -= 1
                if self.reset_after <= 0 and self.remaining:
                    self.reset_after = None
                    self.power_up()
                    self.flags[2] |= 0b1  # power down during payout
                    return
        if not self.remaining:
            self._next_coin = None

    def _stop(self) -> None:
        self.unpaid += self.remaining
        self.remaining = 0
        self._next_coin = None

    def set_fault(self, name: str, value: Any = True) -> None:
        with self._lock:
            if name in ("jam", "reverse_limit"):
                self.jam_after = None if value is False else (
                    0 if value is True else int(value))
                self.jam_flags = JAM_OVER_CURRENT if name == "jam" else JAM_REVERSE_LIMIT
            elif name == "empty":
                if option_flag(value):
                    self.inventory = 0
            elif name == "reset_during_payout":
                self.reset_after = None if value is False else (
                    1 if value is True else max(1, int(value)))
            else:
                super().set_fault(name, value)

    def command(self, header: int, data: bytes) -> tuple[int, bytes] | None:
        if header == Header.ENABLE_HOPPER and data:
            self.enabled = data[0] == 165
            return (REPLY, b"")
        if header == Header.REQUEST_HOPPER_STATUS:
            return (REPLY, _build(HOPPER_STATUS_REPLY, counter=self.counter,
                                  remaining=self.remaining, paid=self.paid, unpaid=self.unpaid))
        if header == Header.DISPENSE_HOPPER_COINS:
            if not data or not self.enabled or self.remaining or data[-1] == 0:
                return None
            if self.security == "serial" and data[:-1] != self.serial.to_bytes(3, "little"):
                return None
            self.counter = self.counter % 255 + 1
            self.remaining = data[-1]
            self.paid = self.unpaid = 0
            self.flags[0] &= ~0b111
            self.flags[1] &= ~0b1_0000
            self.flags[2] &= ~0b1
            self._next_coin = self.now + self.coin_time
            return (REPLY, _build(DISPENSE_HOPPER_COINS_REPLY, counter=self.counter))
        if header == Header.EMERGENCY_STOP:
            left = self.remaining
            self._stop()
            self.enabled = False
            return (REPLY, _build(EMERGENCY_STOP_REPLY, unpaid=left))
        if header == Header.REQUEST_HOPPER_COIN:
            # Cut or padded to the 6 characters of the layout (spaces: the host strips them).
            return (REPLY, _id_field(HOPPER_COIN_REPLY, self.coin_id, b" "))
        if header == Header.REQUEST_HOPPER_DISPENSE_COUNT:
            return (REPLY, _build(HOPPER_DISPENSE_COUNT_REPLY,
                                  count=self.dispensed_total.to_bytes(3, "little")))
        if header == Header.TEST_HOPPER:  # clears "power-up detected"
            first = self.flags[0] & 0x7F | (0 if self.enabled else 0x80)  # payout disabled
            self.flags[0] &= ~0b0100_0000
            return (REPLY, _build(TEST_HOPPER_REPLY, register_1=first,
                                  register_2=self.flags[1], register_3=self.flags[2]))
        if header == Header.REQUEST_PAYOUT_HIGH_LOW_STATUS:  # low-level sensor fitted
            return (REPLY, bytes((0x10 | (1 if self.inventory < 10 else 0),)))
        return None

    def summary(self) -> dict[str, Any]:
        return {"inventory": self.inventory, "paid_out": len(self.paid_out),
                "dispense_count": self.dispensed_total, "counter": self.counter}


def specs() -> list[SimulatorSpec]:
    from vendhw.sim import SimulatorSpec

    return [SimulatorSpec.of(CcTalkCoinSimulator), SimulatorSpec.of(CcTalkHopperSimulator),
            SimulatorSpec.of(CcTalkBillSimulator)]
