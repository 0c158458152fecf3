"""A JCM ID-003 note acceptor (UBA-style) answering status requests as the real one does.

From power-up it reports POWER UP until the host sends RESET (answered with ACK), then
INITIALIZE for a moment, then DISABLE/INHIBIT until the host's settings enable it (inhibit
``C3 00`` and at least one denomination enabled in ``C0``); setting commands are echoed with
their data. A note goes ACCEPTING -> ESCROW (denomination code) and waits for the host:
STACK-1/STACK-2 -> STACKING -> **VEND VALID, repeated on every status request until the host
sends ACK** -> STACKED -> idle; RETURN -> RETURNING -> idle; HOLD keeps it in escrow, and
``ESCROW_TIMEOUT`` without a decision returns it. The host's ACK gets no answer. Packets with a
bad CRC are ignored (the host retries). Time advances with the host's traffic (the ``now`` of
each packet); ``speed=10`` makes the mechanics ten times faster.

Notes go in with :meth:`Id003Simulator.insert_note` (a denomination code 0x61.. or its index
1..8) or ``auto_insert="1,2"``. Device faults (``set_fault`` or URL options): ``jam``
(acceptor jam), ``stacker_jam``, ``cheated``, ``rejected`` (the next note; the value is the
reject reason code), ``stacker_open``, ``stacker_full``, ``failure`` (a failure code),
``power_up_with_bill`` (the next power-up reports a bill in the stacker), ``reset`` (power
cycle now); plus the line faults (``silent``, ``garbage``...). CURRENCY ASSIGN (0x8A) is
answered with the table of options ``denominations`` (main-unit values of 0x61.., default
``5,10,20,50,100,200,500,0``) and ``country`` (the country byte, default 0).
"""

from __future__ import annotations

import threading
from collections import deque
from typing import TYPE_CHECKING, Any

from vendhw.errors import ConfigurationError, LengthError
from vendhw.framing.base import Frame
from vendhw.framing.id003 import (
    CURRENCY_ASSIGN,
    INTER_BYTE_GAP,
    Command,
    Id003Framer,
    Status,
    build_currency_assign,
)
from vendhw.options import FALSE_WORDS, TRUE_WORDS, option_flag, option_ints
from vendhw.sim.base import Reply, Simulator

if TYPE_CHECKING:
    from vendhw.sim import SimulatorSpec

REPLY_DELAY = 0.002
INIT_TIME = 0.3
"""Seconds of INITIALIZE after RESET."""
ACCEPT_TIME = 0.3
"""Seconds from insertion to ESCROW (or to REJECTING)."""
STACK_TIME = 0.3
"""Seconds of STACKING before VEND VALID, and of STACKED before idle."""
RETURN_TIME = 0.3
ESCROW_TIMEOUT = 10.0
"""Seconds a note waits in escrow for STACK/RETURN/HOLD before it is returned."""
INSERT_INTERVAL = 1.0
DENOMINATION_CODES = tuple(range(0x61, 0x69))
VERSION = b"vendhw-sim ID003 UBA 1.00"
DENOMINATIONS = "5,10,20,50,100,200,500,0"
"""Main-unit values of codes 0x61..0x68 in the CURRENCY ASSIGN table (0 = unused code)."""
COUNTRY = 0x00
"""Country byte of the table: 0x00 has no public meaning (EUR's byte is not in the public
sources), so the host keeps its ``currency=``; lamassu-machine knows 0x01 USD, 0x08 CAD."""



def _code_or(value: Any, default: int) -> int:
    """A fault value: on -> ``default``, off -> 0, a number (``0x72``, ``114``) -> itself."""
    if isinstance(value, bool):
        return default if value else 0
    text = str(value).strip().lower()
    if text in TRUE_WORDS:
        return default
    if text in FALSE_WORDS:
        return 0
    return int(text, 0)


class Id003Simulator(Simulator):
    name = "id003"
    kind = "cash"
    protocol = "id003"
    baudrate = 9600
    description = "JCM ID-003 note acceptor with escrow (denominations 0x61-0x68)"
    device_faults = ("jam", "stacker_jam", "cheated", "rejected", "stacker_open",
                     "stacker_full", "failure", "power_up_with_bill", "reset")

    def __init__(self, *, auto_insert: Any = "", insert_interval: float | str = INSERT_INTERVAL,
                 reply_delay: float | str = REPLY_DELAY, speed: float | str = 1.0,
                 denominations: str = DENOMINATIONS, country: int | str = COUNTRY,
                 **options: Any) -> None:
        faults = {k: options.pop(k) for k in list(options) if k in self.device_faults}
        super().__init__(**options)
        self.reply_delay = float(reply_delay)
        self.speed = float(speed)
        self.auto_insert = deque(self._code(x) for x in option_ints(auto_insert))
        self.insert_interval = float(insert_interval)
        values = [int(v) for v in str(denominations).replace(";", ",").split(",") if v.strip()]
        country_byte = int(str(country), 0)
        if not 0 <= country_byte <= 0xFF or any(v < 0 for v in values):
            raise ConfigurationError("id003 simulator: country must be a byte and "
                                     "denominations non-negative")
        self.currency_table = [(0x61 + i, country_byte, v) for i, v in enumerate(values[:8])]
        """The CURRENCY ASSIGN answer: (escrow code, country byte, main-unit value)."""
        try:
            build_currency_assign(self.currency_table)
        except LengthError as exc:
            raise ConfigurationError(f"id003 simulator denominations: {exc}") from None
        self.framer = Id003Framer()
        self._deframer = self.framer.deframer("host", gap=INTER_BYTE_GAP)
        self._lock = threading.RLock()
        self.now = 0.0
        self.stacked: list[int] = []
        """Denomination codes that reached the stacker (for tests)."""
        self.received: list[int] = []
        """Command codes received with a good CRC, in order (for tests)."""
        self.jam = self.stacker_jam = self.cheated = False
        self.stacker_open = self.stacker_full = False
        self.failure = 0
        self.reject_next = 0
        self.bill_in_stacker = False
        self.power_up()
        for fault, value in faults.items():
            self.set_fault(fault, value)

    @staticmethod
    def _code(value: int) -> int:
        return DENOMINATION_CODES[value - 1] if 1 <= value <= 8 else value

    def power_up(self) -> None:
        """Power-on: POWER UP until RESET; settings back to inhibited."""
        self.state: int = (Status.POWER_UP_BILL_STACKER if self.bill_in_stacker
                           else Status.POWER_UP)
        self.bill_in_stacker = False
        self.state_data = b""
        self.since = self.now
        self.settings: dict[int, bytes] = {
            Command.SET_DENOMINATIONS: b"\x00\x00", Command.SET_SECURITY: b"\x00\x00",
            Command.SET_COMMUNICATION_MODE: b"\x00", Command.SET_INHIBIT: b"\x01",
            Command.SET_DIRECTION: b"\x00", Command.SET_OPTIONAL_FUNCTION: b"\x00\x00",
            Command.SET_BARCODE_FUNCTION: b"\x01\x12", Command.SET_BAR_INHIBIT: b"\x00"}
        self.escrow = 0
        self._next_insert: float | None = None

    @property
    def enabled(self) -> bool:
        mask = int.from_bytes(self.settings[Command.SET_DENOMINATIONS][:2], "little")
        return self.settings[Command.SET_INHIBIT][:1] == b"\x00" and mask != 0xFFFF

    def denomination_enabled(self, code: int) -> bool:
        mask = int.from_bytes(self.settings[Command.SET_DENOMINATIONS][:2], "little")
        return not mask >> (code - 0x61) & 1  # a 1 bit disables (py-id003 SET_DENOM)

    def insert_note(self, denomination: int) -> None:
        """A customer feeds a note: a code 0x61..0x68, or its index 1..8."""
        with self._lock:
            if self.state not in (Status.IDLING, Status.DISABLED):
                raise RuntimeError(f"the acceptor is busy (status 0x{self.state:02X})")
            self._go(Status.ACCEPTING)
            self.escrow = self._code(denomination)

    def _go(self, state: int, data: bytes = b"") -> None:
        self.state, self.state_data, self.since = state, data, self.now

    def _elapsed(self, seconds: float) -> bool:
        return self.now - self.since >= seconds / self.speed

    def advance(self, now: float) -> None:
        """Device time passes: initialisation ends, notes move, escrow times out."""
        self.now = max(self.now, now)
        state = self.state
        if state == Status.INITIALIZE and self._elapsed(INIT_TIME):
            self._go(Status.IDLING if self.enabled else Status.DISABLED)
        elif state in (Status.IDLING, Status.DISABLED):
            self._go(Status.IDLING if self.enabled else Status.DISABLED)
            if self.state == Status.IDLING and self.auto_insert:
                if self._next_insert is None:
                    self._next_insert = self.now + self.insert_interval
                elif self.now >= self._next_insert:
                    self._next_insert = None
                    self._go(Status.ACCEPTING)
                    self.escrow = self.auto_insert.popleft()
        elif state == Status.ACCEPTING and self._elapsed(ACCEPT_TIME):
            if self.reject_next or not self.denomination_enabled(self.escrow):
                reason = self.reject_next or 0x79  # 0x79: inhibited
                self.reject_next = 0
                self._go(Status.REJECTING, bytes((reason,)))
            else:
                self._go(Status.ESCROW, bytes((self.escrow,)))
        elif state in (Status.ESCROW, Status.HOLDING) and self.now - self.since >= ESCROW_TIMEOUT:
            self._go(Status.RETURNING)
        elif state == Status.STACKING and self._elapsed(STACK_TIME):
            self._go(Status.VEND_VALID)
        elif state == Status.STACKED and self._elapsed(STACK_TIME):
            self._go(Status.IDLING if self.enabled else Status.DISABLED)
        elif state in (Status.REJECTING, Status.RETURNING) and self._elapsed(RETURN_TIME):
            self.escrow = 0
            self._go(Status.IDLING if self.enabled else Status.DISABLED)

    def status(self) -> tuple[int, bytes]:
        """What a STATUS REQUEST answers now (faults take precedence)."""
        if self.failure:
            return Status.FAILURE, bytes((self.failure,))
        for flag, code in ((self.stacker_open, Status.STACKER_OPEN),
                           (self.stacker_full, Status.STACKER_FULL),
                           (self.jam, Status.ACCEPTOR_JAM), (self.stacker_jam, Status.STACKER_JAM),
                           (self.cheated, Status.CHEATED)):
            if flag and self.state not in (Status.POWER_UP, Status.POWER_UP_BILL_STACKER,
                                           Status.INITIALIZE):
                return code, b""
        return self.state, self.state_data

    # -- wire --------------------------------------------------------------------------------

    def receive(self, data: bytes, now: float) -> list[Reply]:
        with self._lock:
            self.advance(now)
            replies: list[Reply] = []
            for item in self._deframer.feed(data, now):
                if not isinstance(item, Frame):
                    continue
                self.received.append(item["code"])
                answer = self.handle(item["code"], bytes(item["data"]))
                if answer is not None:
                    code, body = answer
                    replies.append((self.reply_delay,
                                    self.framer.build(direction="device", code=code, data=body)))
            return replies

    def handle(self, code: int, data: bytes) -> tuple[int, bytes] | None:
        """One command; returns ``(status or echo code, data)`` or None for no answer."""
        if code == Command.STATUS_REQUEST:
            return self.status()
        if code == Command.ACK:
            if self.state == Status.VEND_VALID:
                self.stacked.append(self.escrow)
                self._go(Status.STACKED, bytes((self.escrow,)))
            return None  # the host's ACK is not answered
        if code == Command.RESET:
            if self.state == Status.VEND_VALID:
                # The note is in the stacker and was credited (VEND VALID): a RESET before
                # the host's ACK (a host restarted, an adapter plugged back) does not give it
                # back; it ends in the cash box.
                self.stacked.append(self.escrow)
            self.power_up()
            self._go(Status.INITIALIZE)
            return Status.ACK, b""
        if Command.SET_DENOMINATIONS <= code <= Command.SET_BAR_INHIBIT:
            self.settings[code] = data
            if self.state in (Status.IDLING, Status.DISABLED):
                self._go(Status.IDLING if self.enabled else Status.DISABLED)
            return code, data
        if Command.DENOMINATIONS_REQUEST <= code <= Command.BAR_INHIBIT_REQUEST:
            return code, self.settings[code | 0x40]  # the status of SET 0xC0 + n is 0x80 + n
        if code == Command.VERSION_REQUEST:
            return code, VERSION
        if code == CURRENCY_ASSIGN:
            return code, build_currency_assign(self.currency_table)
        if code in (Command.STACK_1, Command.STACK_2):
            if self.state not in (Status.ESCROW, Status.HOLDING):
                return Status.INVALID_COMMAND, b""
            self._go(Status.STACKING)
            return Status.ACK, b""
        if code == Command.RETURN:
            if self.state not in (Status.ESCROW, Status.HOLDING):
                return Status.INVALID_COMMAND, b""
            self._go(Status.RETURNING)
            return Status.ACK, b""
        if code == Command.HOLD:  # keep the note; the escrow timer starts again
            if self.state not in (Status.ESCROW, Status.HOLDING):
                return Status.INVALID_COMMAND, b""
            self._go(Status.HOLDING)
            return Status.ACK, b""
        return Status.INVALID_COMMAND, b""

    # -- faults ------------------------------------------------------------------------------

    def set_fault(self, name: str, value: Any = True) -> None:
        with self._lock:
            if name in ("jam", "stacker_jam", "cheated", "stacker_open", "stacker_full"):
                setattr(self, name, option_flag(value))
            elif name == "rejected":  # the next note; the value is the reason code
                self.reject_next = _code_or(value, 0x71)  # 0x71: insertion error
            elif name == "failure":
                self.failure = _code_or(value, 0xA2)  # 0xA2: stack motor failure
            elif name == "power_up_with_bill":
                self.bill_in_stacker = option_flag(value)
            elif name == "reset":
                if option_flag(value):
                    if self.state in (Status.STACKING, Status.VEND_VALID):
                        # The note is in the stacker: a real acceptor reports POWER UP WITH
                        # BILL IN STACKER, whether or not the host's ACK came.
                        self.stacked.append(self.escrow)
                        self.bill_in_stacker = True
                    self.power_up()
            else:
                super().set_fault(name, value)


def specs() -> list[SimulatorSpec]:
    from vendhw.sim import SimulatorSpec

    return [SimulatorSpec.of(Id003Simulator)]
