"""ccTalk payout hopper (address 3): dispense with counters, progress, emergency stop."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import Any

from vendhw.devices.cash import CashEvent, CashEventKind, EventSink
from vendhw.devices.cctalk.bus import CcTalkBus
from vendhw.devices.cctalk.counter import counter_advance
from vendhw.devices.cctalk.device import CcTalkDevice, _drain
from vendhw.devices.cctalk.tables import (
    ENABLE_HOPPER_CODE,
    HOPPER_ADDRESS,
    HOPPER_FLAGS,
    MAX_DISPENSE,
    K,
    currency_of,
    parse_reply,
    parse_value_id,
    reply_id,
)
from vendhw.devices.engine import Deliver, Op
from vendhw.errors import (
    ConfigurationError,
    FramingError,
    NoResponseError,
    ProtocolError,
)
from vendhw.framing.cctalk import (
    DISPENSE_HOPPER_COINS_REPLY,
    EMERGENCY_STOP_REPLY,
    HOPPER_COIN_REPLY,
    HOPPER_DISPENSE_COUNT_REPLY,
    HOPPER_STATUS_REPLY,
    TEST_HOPPER_REPLY,
    Header,
)

log = logging.getLogger("vendhw.devices.cctalk")  # one logger for the package, as before


# --- hopper -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class HopperStatus:
    """Header 166: ``[event counter][coins remaining][last payout paid][last payout unpaid]``."""

    counter: int
    remaining: int
    paid: int
    unpaid: int

    @classmethod
    def parse(cls, data: bytes) -> HopperStatus:
        """Raises :class:`~vendhw.errors.UnexpectedReplyError` on a reply under 4 bytes."""
        f = parse_reply(HOPPER_STATUS_REPLY, data)
        return cls(f["counter"], f["remaining"], f["paid"], f["unpaid"])


def hopper_flags(data: bytes) -> list[str]:
    """Names of the flags set in a TEST HOPPER (163) reply.

    A register missing from a short reply reads as clear, as before.
    """
    size = TEST_HOPPER_REPLY.fixed_size
    regs = parse_reply(TEST_HOPPER_REPLY, bytes(data[:size]).ljust(size, b"\0"))
    names: list[str] = []
    for register, key in zip(HOPPER_FLAGS, ("register_1", "register_2", "register_3"),
                             strict=True):
        byte = regs[key]
        names += [name for bit, name in enumerate(register) if name and byte >> bit & 1]
    return names


@dataclass
class Payout:
    """A dispense in progress: what was asked, the hopper's counters at the start."""

    amount: int
    coins: int
    counter: int
    """The hopper's event counter after it accepted this dispense."""
    baseline: int | None
    """The lifetime dispense count (header 168) before it started, for reconciliation."""
    reported: int = 0
    """Coins already reported as paid."""

    @property
    def key(self) -> str:
        return f"payout{self.counter}"


class CcTalkHopper(CcTalkDevice):
    """A payout hopper (address 3): enable, dispense with counters, emergency stop.

    :param coin_value: value of the hopper's coin in minor units (else read with header 171).
    :param security: what precedes the coin count in DISPENSE HOPPER COINS: ``"serial"`` (the
        3 serial-number bytes, the unencrypted hoppers' check) or ``"none"``.
    """

    default_address = HOPPER_ADDRESS
    expected_category = ("Payout", "Hopper")

    def __init__(self, bus: CcTalkBus, *, address: int | None = None, name: str = "",
                 coin_value: int | None = None, security: str = "serial",
                 dispense_timeout: float = 2.0) -> None:
        super().__init__(bus, address=address, name=name)
        if security not in ("serial", "none"):
            raise ConfigurationError("hopper security must be 'serial' or 'none'")
        self.security = security
        self.coin_value = coin_value or 0
        self.coin_id = ""
        self.dispense_timeout = dispense_timeout
        self.session = secrets.token_hex(4)
        self.last_counter: int | None = None
        self.active: Payout | None = None
        self.start_flags: list[str] = []

    def status_op(self) -> Op[HopperStatus]:
        # Only a reply of the declared 4 bytes: a late answer to an earlier command (the lost
        # reply of a dispense, read while deciding whether that dispense was taken) is skipped.
        data: bytes = yield self._req(Header.REQUEST_HOPPER_STATUS,
                                      reply_length=HOPPER_STATUS_REPLY.fixed_size)
        return HopperStatus.parse(data)

    def dispense_count_op(self) -> Op[int | None]:
        data = yield from self._optional(Header.REQUEST_HOPPER_DISPENSE_COUNT)
        if data is None or len(data) < HOPPER_DISPENSE_COUNT_REPLY.fixed_size:
            return None  # a short reply counts as no counter, as before
        return int.from_bytes(parse_reply(HOPPER_DISPENSE_COUNT_REPLY, data)["count"], "little")

    def flags_op(self) -> Op[list[str]]:
        data = yield from self._optional(Header.TEST_HOPPER)
        return hopper_flags(data) if data else []

    def start_op(self) -> Op[None]:
        yield from self.identify_op()
        reply = yield from self._optional(Header.REQUEST_HOPPER_COIN)
        if reply:
            self.coin_id = reply_id(HOPPER_COIN_REPLY, reply)
            country, value = parse_value_id(self.coin_id)
            self.currency = currency_of(country)
            if not self.coin_value and value:
                self.coin_value = value
        status = yield from self.status_op()
        self.last_counter = status.counter
        self.start_flags = yield from self.flags_op()  # also clears "power-up detected"
        yield self._req(Header.ENABLE_HOPPER, b"\x00")

    def start(self, sink: EventSink | None = None) -> None:
        self.run(self.start_op(), sink)

    def enable(self) -> None:
        self.run(self._single(Header.ENABLE_HOPPER, bytes((ENABLE_HOPPER_CODE,))))

    def disable(self) -> None:
        self.run(self._single(Header.ENABLE_HOPPER, b"\x00"))

    def _single(self, header: int, data: bytes = b"") -> Op[bytes]:
        reply: bytes = yield self._req(header, data)
        return reply

    def payout_op(self, amount: int) -> Op[Payout]:
        """Start paying ``amount``; never sends a dispense twice for one request.

        If the dispense reply is lost, the hopper's event counter tells whether it took the
        command: a resend happens only when the counter did not move.
        """
        if self.active is not None:
            raise ProtocolError(f"{self.name}: a payout is already in progress")
        if amount <= 0:
            raise ValueError("payout amount must be positive")
        if not self.coin_value:
            raise ConfigurationError(f"{self.name}: coin value unknown; pass coin_value=")
        coins, rest = divmod(amount, self.coin_value)
        if rest:
            raise ConfigurationError(f"{self.name}: {amount} is not a multiple of the coin "
                                     f"value {self.coin_value}")
        if coins > MAX_DISPENSE:
            raise ConfigurationError(f"{self.name}: at most {MAX_DISPENSE} coins per payout "
                                     f"({coins} asked)")
        baseline = yield from self.dispense_count_op()
        before = yield from self.status_op()
        if before.remaining:
            raise ProtocolError(f"{self.name}: hopper still paying {before.remaining} coins")
        yield self._req(Header.ENABLE_HOPPER, bytes((ENABLE_HOPPER_CODE,)))
        security = self.identity.serial_bytes if self.security == "serial" else b""
        if self.security == "serial" and len(security) != 3:
            raise ConfigurationError(f"{self.name}: no serial number for the dispense check; "
                                     f"use security='none'")
        expected = counter_advance(before.counter, 1)
        for attempt in range(2):
            try:
                reply: bytes = yield self._req(Header.DISPENSE_HOPPER_COINS,
                                               security + bytes((coins,)), retries=0,
                                               timeout=self.dispense_timeout)
            except (NoResponseError, FramingError) as exc:
                after = yield from self.status_op()
                if after.counter == expected:
                    break  # it was accepted; only its reply was lost
                if after.counter != before.counter or attempt:
                    raise ProtocolError(f"{self.name}: dispense not confirmed ({exc}); "
                                        f"counter {before.counter} -> {after.counter}") from exc
                continue
            if reply:  # the event counter; an ACK alone is fine too
                counter = parse_reply(DISPENSE_HOPPER_COINS_REPLY, reply)["counter"]
                if counter != expected:
                    log.warning("%s: dispense counter %d, expected %d", self.name, counter,
                                expected)
                    expected = counter
            break
        payout = Payout(amount, coins, expected, baseline)
        self.active = payout
        self.last_counter = expected
        self._pending.append(CashEvent(
            K.PAYOUT_STARTED, self.name, 0, self.currency, route="customer",
            event_id=f"{self.ident_key}/{self.session}/{payout.key}/started", requested=amount,
            detail={"coins": coins, "coin_value": self.coin_value}))
        return payout

    def payout(self, amount: int) -> None:
        self.run(self.payout_op(amount))

    def emergency_stop(self) -> int:
        """Stop the motor now; returns the coins left unpaid (reported at the next poll)."""
        data: bytes = self.run(self._single(Header.EMERGENCY_STOP))
        return parse_reply(EMERGENCY_STOP_REPLY, data)["unpaid"] if data else 0

    def _payout_event(self, kind: CashEventKind, payout: Payout, paid: int, suffix: str,
                      reason: str | None = None, **detail: Any) -> CashEvent:
        return CashEvent(kind, self.name, paid * self.coin_value, self.currency,
                         route="customer", reason=reason,
                         event_id=f"{self.ident_key}/{self.session}/{payout.key}/{suffix}",
                         requested=payout.amount,
                         detail={"coins_paid": paid, "coins_requested": payout.coins,
                                 **detail})

    def poll_op(self) -> Op[list[CashEvent]]:
        """Hopper status: payout progress, its end, and a reset (counter back to 0)."""
        out: list[CashEvent] = yield from _drain(self._pending)
        status = yield from self.status_op()
        payout = self.active
        if status.counter == 0 and self.last_counter:
            event = CashEvent(K.DEVICE_RESET, self.name, reason="hopper event counter "
                              "restarted (power-up or reset)",
                              event_id=f"{self.ident_key}/{self.session}/reset")
            yield Deliver(event)
            out.append(event)
            if payout is not None:
                now = yield from self.dispense_count_op()
                flags = yield from self.flags_op()
                if now is not None and payout.baseline is not None:
                    paid = max(0, min(payout.coins, now - payout.baseline))
                    how = "by the lifetime dispense counter"
                else:
                    paid = payout.reported
                    how = "last reported before the reset (dispense count unavailable)"
                event = self._payout_event(
                    K.PAYOUT_INCOMPLETE, payout, paid, "incomplete",
                    f"hopper reset during payout: {paid} of {payout.coins} coins paid ({how})",
                    flags=flags)
                yield Deliver(event)
                out.append(event)
                self.active = None
            self.session = secrets.token_hex(4)
            self.last_counter = 0
            return out
        self.last_counter = status.counter
        if payout is None:
            return out
        if status.counter != payout.counter:
            raise ProtocolError(f"{self.name}: hopper counter {status.counter}, expected "
                                f"{payout.counter}: another host dispensed?")
        if status.paid > payout.reported and status.remaining:
            event = self._payout_event(K.PAYOUT_PROGRESS, payout, status.paid,
                                       f"paid{status.paid}")
            yield Deliver(event)
            out.append(event)
            payout.reported = status.paid
        if status.remaining:
            return out
        if status.paid >= payout.coins and not status.unpaid:
            event = self._payout_event(K.PAYOUT_DONE, payout, status.paid, "done")
        else:
            flags = yield from self.flags_op()
            why = ", ".join(flags) or "hopper empty or stopped"
            event = self._payout_event(
                K.PAYOUT_INCOMPLETE, payout, status.paid, "incomplete",
                f"{status.unpaid} coin(s) unpaid: {why}", coins_unpaid=status.unpaid,
                flags=flags)
        yield Deliver(event)
        out.append(event)
        self.active = None
        return out

    def poll(self, sink: EventSink | None = None) -> list[CashEvent]:
        return self.run(self.poll_op(), sink)

    def status(self) -> dict[str, Any]:
        st = self.run(self.status_op())
        count = self.run(self.dispense_count_op())
        flags = self.run(self.flags_op())
        return {"device": self.name, "address": self.address, **self.identity.to_dict(),
                "coin_id": self.coin_id, "coin_value": self.coin_value,
                "currency": self.currency, "counter": st.counter, "remaining": st.remaining,
                "last_paid": st.paid, "last_unpaid": st.unpaid, "dispense_count": count,
                "flags": flags, "payout_active": self.active is not None}
