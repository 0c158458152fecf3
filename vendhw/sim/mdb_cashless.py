"""An MDB cashless reader (card terminal) at 0x10 (or 0x60) on a 9-bit line.

It speaks only the wire protocol (MDB 4.2 §7, see ``protocols/mdb-cashless/README.md``) through
:class:`~vendhw.framing.mdb.MdbFramer`; it never imports the host code it is used to check.

Behaviour: JUST RESET at the first POLL after power-up or RESET; READER CONFIG in reply to
SETUP CONFIG; PERIPHERAL ID in reply to EXPANSION REQUEST ID; once enabled, a card is
"tapped" ``tap_after`` seconds later (BEGIN SESSION with ``funds``); VEND REQUEST is answered
at the next POLL with VEND APPROVED (or VEND DENIED); VEND SUCCESS / VEND FAILURE are recorded
(:attr:`MdbCashlessSimulator.settled`, a failure is a refund); SESSION COMPLETE is answered by
END SESSION. POLL data is repeated until the VMC ACKs it.

Options (``sim://mdb-cashless?deny=1&tap_after=2``): ``address`` (16 or 96), ``level`` (1-3),
``funds``, ``tap_after`` (seconds; negative: no card ever), ``scale``, ``max_response``,
``deferred`` (READER CONFIG and PERIPHERAL ID come at the next POLL, not in the reply),
``no_just_reset`` (never reports JUST RESET).
Device faults: ``deny`` (every vend denied), ``timeout`` (vend requests never answered until
VEND CANCEL), ``cancel`` (the customer cancels on the reader after the card), ``malfunction``
(reports a malfunction at the next POLL), ``revalue_deny``.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any

from vendhw.framing.base import Frame
from vendhw.framing.mdb import PERIPHERAL_ID, READER_CONFIG, Address, MdbFramer
from vendhw.framing.mdb import CashlessCommand as Command
from vendhw.framing.mdb import CashlessExpansion as Expansion
from vendhw.framing.mdb import CashlessPoll as Poll
from vendhw.framing.mdb import CashlessReader as Reader
from vendhw.framing.mdb import CashlessRevalue as Revalue
from vendhw.framing.mdb import CashlessSetup as Setup
from vendhw.framing.mdb import CashlessVend as Vend
from vendhw.options import option_flag
from vendhw.sim.base import Reply, Simulator

if TYPE_CHECKING:
    from vendhw.sim import SimulatorSpec

MAX_POLL_DATA = 35
"""A reply block carries at most 36 bytes including the CHK."""


def _code(code: int) -> bytes:
    return bytes((code,))


class MdbCashlessSimulator(Simulator):
    name = "mdb-cashless"
    kind = "cash"
    protocol = "mdb"
    baudrate = 9600
    description = ("MDB cashless reader at 0x10 (card after tap_after s; faults deny, timeout, "
                   "cancel, malfunction; 9-bit in-band form)")
    device_faults = ("deny", "timeout", "cancel", "malfunction", "revalue_deny")

    def __init__(self, *, address: int | str = 0x10, level: int | str = 3,
                 funds: int | str = 1000, tap_after: float | str = 0.0, scale: int | str = 1,
                 max_response: int | str = 5, reply_delay: float | str = 0.0,
                 deferred: bool | str = False, no_just_reset: bool | str = False,
                 time_request: bool | str = False, display: str = "",
                 **options: Any) -> None:
        self.time_request = option_flag(time_request)
        """Send TIME/DATE REQUEST after READER ENABLE (option ``time_request=1``)."""
        self.display = str(display)
        """Send DISPLAY REQUEST with this text (3 s) after READER ENABLE (``display=Hi``)."""
        self.time_date: bytes | None = None
        """The 10 BCD bytes of the VMC's last EXPANSION WRITE TIME/DATE."""
        faults = {k: options.pop(k) for k in list(options) if k in self.device_faults}
        super().__init__(**options)
        self.address = int(address)
        if self.address not in (Address.CASHLESS_1, Address.CASHLESS_2):
            raise ValueError(f"cashless address must be 16 (0x10) or 96 (0x60), not {address}")
        self.level = int(level)
        self.funds = int(funds)
        self.tap_after = float(tap_after)
        self.scale = int(scale)
        self.max_response = int(max_response)
        self.reply_delay = float(reply_delay)
        self.no_just_reset = option_flag(no_just_reset)
        """Never report JUST RESET (some readers do not after a RESET command)."""
        self.deferred = option_flag(deferred)
        """ACK SETUP CONFIG and EXPANSION ID, and send their data at the next POLL (allowed
        by the spec; some readers do it)."""
        self.framer = MdbFramer(wire="9bit")
        self._deframer = self.framer.deframer("host")
        self.events: collections.deque[bytes] = collections.deque()
        self._unacked = b""
        self._last_reply = b""
        self.faults = dict.fromkeys(self.device_faults, False)
        self.enabled = False
        self.enabled_at: float | None = None
        self.in_session = False
        self.vend: tuple[int, int] | None = None
        """(price, item) of the vend request being decided or vended."""
        self.approved = False
        self.settled: list[dict[str, Any]] = []
        """What the VMC reported: ``{"result": "success"|"failure"|"cash_sale", ...}``."""
        self.vmc_level: int | None = None
        self.prices: tuple[int, int] | None = None
        self.vmc_id = b""
        self.commands: list[str] = []
        self._power_up()
        for fault, value in faults.items():
            self.set_fault(fault, value)

    # -- helpers ---------------------------------------------------------------------------

    def _power_up(self) -> None:
        self.events.clear()
        if not self.no_just_reset:
            self.events.append(_code(Poll.JUST_RESET))
        self._unacked = b""
        self.enabled = False
        self.in_session = False
        self.vend = None
        self.approved = False

    def set_fault(self, name: str, value: Any = True) -> None:
        if name in self.device_faults:
            self.faults[name] = option_flag(value)
            if name == "malfunction" and self.faults[name]:
                self.events.append(_code(Poll.MALFUNCTION) + b"\x01")
        else:
            super().set_fault(name, value)

    def _ack(self) -> bytes:
        return self.framer.build(direction="device", control="ACK")

    def _data(self, data: bytes) -> bytes:
        return self.framer.build(direction="device", data=data)

    def _config(self) -> bytes:
        options = 0x01 | 0x08  # refunds possible, cash sale supported
        return READER_CONFIG.build(
            {"level": self.level, "country": 0x1978, "scale": self.scale, "decimals": 2,
             "max_response": self.max_response, "options": options, "rest": b""}, "mdb")

    def _identity(self) -> bytes:
        return PERIPHERAL_ID.build(
            {"manufacturer": b"VHW", "serial": b"SIMCARD00001", "model": b"SIM-CASHLESS",
             "software_version": b"\x01\x00", "rest": bytes(4) if self.level >= 3 else b""},
            "mdb")

    def _answer(self, data: bytes) -> bytes:
        if self.deferred:
            self.events.append(data)
            return self._ack()
        return self._data(data)

    def _wire(self, amount: int) -> bytes:
        return min(amount // self.scale, 0xFFFF).to_bytes(2, "big")

    def _out_of_sequence(self) -> bytes:
        return _code(Poll.OUT_OF_SEQUENCE) + (b"\x02" if self.level >= 2 else b"")

    # -- the wire ------------------------------------------------------------------------------

    def receive(self, data: bytes, now: float) -> list[Reply]:
        replies: list[Reply] = []
        for item in self._deframer.feed(data):
            if not isinstance(item, Frame):
                continue  # a corrupt block is ignored; the VMC times out and retries
            reply = self._handle(item, now)
            if reply:
                self._last_reply = reply
                replies.append((self.reply_delay, reply))
        return replies

    def _handle(self, frame: Frame, now: float) -> bytes:
        command = frame["command"]
        if command == "ACK":
            self._unacked = b""
            return b""
        if command == "RET":
            return self._last_reply
        if command == "NAK":
            return b""
        head = frame["code"]
        if head & 0xF8 != self.address:
            return b""
        data = bytes(frame["data"])
        self.commands.append(f"{head & 0x07}:{data.hex()}")
        return self._command(head & 0x07, data, now)

    def _begin_session(self) -> bytes:
        funds = self._wire(self.funds)
        if self.level >= 2:
            return _code(Poll.BEGIN_SESSION) + funds + b"\x00\x00\x00\x01\x01\x00\x00"
        return _code(Poll.BEGIN_SESSION) + funds

    def _poll(self, now: float) -> bytes:
        if (self.enabled and not self.in_session and self.enabled_at is not None
                and self.tap_after >= 0 and now - self.enabled_at >= self.tap_after):
            self.in_session = True
            self.enabled_at = None  # one card per enable
            self.events.append(self._begin_session())
            if self.faults["cancel"]:
                self.events.append(_code(Poll.SESSION_CANCEL_REQUEST))
        if not self._unacked:
            out = bytearray()
            while self.events and len(out) + len(self.events[0]) <= MAX_POLL_DATA:
                out += self.events.popleft()
            self._unacked = bytes(out)
        return self._data(self._unacked) if self._unacked else self._ack()

    def _command(self, command: int, data: bytes, now: float) -> bytes:
        sub = data[0] if data else None
        if command == Command.RESET:
            self._power_up()
            return self._ack()
        if command == Command.SETUP:
            if sub == Setup.CONFIG_DATA and len(data) >= 2:
                self.vmc_level = data[1]
                self.level = min(self.level, data[1])
                return self._answer(self._config())
            if sub == Setup.MAX_MIN_PRICES and len(data) >= 5:
                self.prices = (int.from_bytes(data[1:3], "big"),
                               int.from_bytes(data[3:5], "big"))
                return self._ack()
            return self._ack()
        if command == Command.POLL:
            return self._poll(now)
        if command == Command.VEND:
            return self._vend(sub, data)
        if command == Command.READER:
            if sub == Reader.READER_DISABLE:
                self.enabled = False
            elif sub == Reader.READER_ENABLE:
                self.enabled = True
                self.enabled_at = now
                if self.time_request:
                    self.events.append(_code(Poll.TIME_DATE_REQUEST))
                if self.display:
                    self.events.append(_code(Poll.DISPLAY_REQUEST) + b"\x1e"  # 3 s
                                       + self.display.encode("ascii")[:32])
            elif sub == Reader.READER_CANCEL and self.enabled:
                self.events.append(_code(Poll.CANCELLED))
            return self._ack()
        if command == Command.REVALUE:
            if sub == Revalue.REVALUE_REQUEST:
                self.events.append(_code(Poll.REVALUE_DENIED if self.faults["revalue_deny"]
                                         else Poll.REVALUE_APPROVED))
            elif sub == Revalue.REVALUE_LIMIT_REQUEST:
                self.events.append(_code(Poll.REVALUE_LIMIT) + self._wire(5000))
            return self._ack()
        if command == Command.EXPANSION:
            if sub == Expansion.REQUEST_ID:
                self.vmc_id = data[1:]
                return self._answer(self._identity())
            if sub == Expansion.WRITE_TIME_DATE and len(data) >= 11:
                self.time_date = bytes(data[1:11])
            return self._ack()
        return self._ack()

    def _vend(self, sub: int | None, data: bytes) -> bytes:
        if sub == Vend.VEND_REQUEST and len(data) >= 5:
            if not self.in_session or self.vend is not None:
                self.events.append(self._out_of_sequence())
                return self._ack()
            price = int.from_bytes(data[1:3], "big") * self.scale
            item = int.from_bytes(data[3:5], "big")
            self.vend = (price, item)
            if self.faults["timeout"]:
                return self._ack()  # never decided until VEND CANCEL
            if self.faults["deny"] or price > self.funds:
                self.events.append(_code(Poll.VEND_DENIED))
                self.vend = None
            else:
                self.approved = True
                self.events.append(_code(Poll.VEND_APPROVED) + self._wire(price))
            return self._ack()
        if sub == Vend.VEND_CANCEL:
            if self.vend is not None and not self.approved:
                self.vend = None
                self.events.append(_code(Poll.VEND_DENIED))
            return self._ack()
        if sub in (Vend.VEND_SUCCESS, Vend.VEND_FAILURE):
            if self.vend is None or not self.approved:
                self.events.append(self._out_of_sequence())
                return self._ack()
            price, item = self.vend
            result = "success" if sub == Vend.VEND_SUCCESS else "failure"
            entry: dict[str, Any] = {"result": result, "price": price, "item": item}
            if sub == Vend.VEND_SUCCESS and len(data) >= 3:
                entry["reported_item"] = int.from_bytes(data[1:3], "big")
            if result == "success":
                self.funds -= price
            self.settled.append(entry)
            self.vend = None
            self.approved = False
            return self._ack()
        if sub == Vend.SESSION_COMPLETE:
            if self.in_session:
                self.in_session = False
                self.vend = None
                self.approved = False
                self.events.append(_code(Poll.END_SESSION))
            return self._ack()
        if sub == Vend.CASH_SALE and len(data) >= 5:
            self.settled.append({"result": "cash_sale",
                                 "price": int.from_bytes(data[1:3], "big") * self.scale,
                                 "item": int.from_bytes(data[3:5], "big")})
            return self._ack()
        return self._ack()

    def summary(self) -> dict[str, Any]:
        return {"funds": self.funds, "settled": self.settled, "enabled": self.enabled,
                "in_session": self.in_session}


def specs() -> list[SimulatorSpec]:
    from vendhw.sim import SimulatorSpec

    return [SimulatorSpec.of(MdbCashlessSimulator)]
