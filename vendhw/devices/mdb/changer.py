"""The coin changer (address 0x08): its sans-I/O core (setup, tubes, payouts) and the
host that runs it."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from vendhw.devices.cash import CashEvent, CashEventKind, EventSink
from vendhw.devices.engine import Op
from vendhw.devices.mdb.core import Request, TubeCounts, _CashCore, _Payout
from vendhw.devices.mdb.link import MdbLink
from vendhw.devices.mdb.polls import parse_changer_poll
from vendhw.devices.mdb.runner import _CoreAttr, _MdbCashDevice
from vendhw.devices.mdb.setup import (
    ChangerSetup,
    Identification,
    currency_of,
    minor_unit_factor,
    parse_changer_setup,
    parse_diagnostic_status,
    parse_identification,
)
from vendhw.devices.mdb.tables import (
    CHANGER_BUSY,
    FEATURE_ALTERNATIVE_PAYOUT,
    MAX_DISPENSE,
    PAYOUT_BUSY,
    PAYOUT_CHUNK,
)
from vendhw.errors import ConfigurationError
from vendhw.framing.mdb import Address, ChangerCommand, ChangerExpansion


class ChangerCore(_CashCore):
    """A coin changer at address 0x08, sans-I/O: setup, tubes, payouts and their operations."""

    address = Address.CHANGER
    commands = ChangerCommand
    was_reset = 0x0B

    def __init__(self, name: str = "mdb-changer", *, accept_tokens: bool = False) -> None:
        super().__init__(name)
        self.setup: ChangerSetup | None = None
        self.tubes: list[int] = [0] * 16
        self.accept_tokens = accept_tokens
        """Enable the token coin types too (they are reported as TOKEN events, value 0)."""
        self._payout: _Payout | None = None
        self._payouts = 0
        self.identity: Identification | None = None
        self.alternative_payout = False
        """Level 3 with the optional feature: pay by EXPANSION PAYOUT, count by PAYOUT STATUS."""

    def activities(self, data: bytes) -> list[bytes]:
        """Coin reports (1yyyxxxx or 01yyxxxx) are two bytes, the second a tube count that
        may equal a status code, so the reply is walked, not searched."""
        out, i = [], 0
        while i < len(data):
            size = 2 if data[i] & 0xC0 else 1
            out.append(data[i:i + size])
            i += size
        return out

    def require_setup(self) -> ChangerSetup:
        if self.setup is None:
            raise ConfigurationError(f"{self.name}: call start() first")
        return self.setup

    def parse_poll(self, data: bytes, prefix: str) -> list[CashEvent]:
        return parse_changer_poll(data, self.require_setup(), self.name, prefix)

    def read_setup_op(self, *, ack: bool = True) -> Op[None]:
        self.setup = parse_changer_setup((yield from self._setup_reply_op(ack=ack)))
        self.currency = currency_of(self.setup.country)

    def start_op(self) -> Op[None]:
        yield from self.reset_op()
        yield from self.read_setup_op()
        assert self.setup is not None
        if self.setup.level >= 3:  # EXPANSION commands are level 3
            self.identity = yield from self.identify_op()
            self.alternative_payout = bool(
                self.identity and (self.identity.features or 0) & FEATURE_ALTERNATIVE_PAYOUT)
            if self.alternative_payout:
                yield from self.expansion_op(ChangerExpansion.FEATURE_ENABLE,
                                             FEATURE_ALTERNATIVE_PAYOUT.to_bytes(4, "big"))
        yield from self._read_tubes_op()
        yield from self.disable_op()

    def expansion_op(self, sub: ChangerExpansion, data: bytes = b"") -> Op[bytes | None]:
        """One EXPANSION (``0F``) subcommand; its reply data, None for a lone ACK."""
        reply: bytes | None = yield Request(ChangerCommand.EXPANSION, bytes((sub,)) + data)
        return reply

    def identify_op(self) -> Op[Identification | None]:
        """EXPANSION IDENTIFICATION (``0F 00``); None when the changer only ACKs."""
        reply = yield from self.expansion_op(ChangerExpansion.IDENTIFICATION)
        return parse_identification(reply) if reply is not None else None

    def diagnostic_status_op(self) -> Op[list[dict[str, Any]] | None]:
        """EXPANSION SEND DIAGNOSTIC STATUS (``0F 05``, level 3); None below level 3 or when
        the changer only ACKs."""
        if self.require_setup().level < 3:
            return None
        reply = yield from self.expansion_op(ChangerExpansion.SEND_DIAGNOSTIC_STATUS)
        return parse_diagnostic_status(reply) if reply is not None else None

    def _read_tubes_op(self) -> Op[list[int]]:
        """The tube counts now, in the middle of another operation (:class:`TubeCounts`)."""
        counts = yield TubeCounts()
        self.tubes = list(counts)
        return self.tubes

    def tube_status_op(self) -> Op[list[int]]:
        reply = yield Request(ChangerCommand.TUBE_STATUS)
        if reply is not None and len(reply) >= 2:
            counts = list(reply[2:18])
            self.tubes = counts + [0] * (16 - len(counts))
        return self.tubes

    def enable_op(self) -> Op[None]:
        setup = self.require_setup()
        mask = sum(1 << i for i, v in enumerate(setup.coin_values)
                   if v or (self.accept_tokens and i in setup.tokens))
        yield Request(ChangerCommand.COIN_TYPE, mask.to_bytes(2, "big") + self._manual_dispense())

    def disable_op(self) -> Op[None]:
        """Accept no coins; the tube buttons (manual dispense) stay on for the operator."""
        yield Request(ChangerCommand.COIN_TYPE, b"\x00\x00" + self._manual_dispense())

    def _manual_dispense(self) -> bytes:
        """Manual dispense is enabled for the coin types that can go to a tube (the SETUP
        routing bits), as Zzzzipper/projects' master does."""
        return self.require_setup().routing.to_bytes(2, "big")

    def payout_op(self, amount: int) -> Op[None]:
        """Start paying ``amount`` from the tubes (see :meth:`MdbCoinChanger.payout`)."""
        if self._payout is not None:
            raise ConfigurationError(f"{self.name}: a payout of {self._payout.requested} "
                                     "is still running")
        setup = self.require_setup()
        before = list((yield from self._read_tubes_op()))
        batches: list[tuple[int, int]] = []
        left = amount
        for coin in sorted(range(16), key=lambda c: -setup.coin_values[c]):
            value = setup.coin_values[coin]
            if value <= 0 or left < value:
                continue  # tokens and unused types have value 0: never change
            count = min(left // value, before[coin])
            left -= count * value
            while count:
                batch = min(count, MAX_DISPENSE)
                batches.append((coin, batch))
                count -= batch
        if left:
            raise ConfigurationError(
                f"{self.name}: tubes cannot pay {amount} exactly ({left} short)")
        self._payouts += 1
        event_id = f"{self._poll_state.session}:payout:{self._payouts}"
        if self.alternative_payout:
            unit = setup.scaling * minor_unit_factor(setup.country, setup.decimals)
            units = amount // unit  # exact: every coin value is a multiple of the unit
            chunks = [min(PAYOUT_CHUNK, units - i) for i in range(0, units, PAYOUT_CHUNK)]
            self._payout = _Payout(amount, [], before, event_id, chunks=chunks,
                                   expansion=True)
            yield from self._expansion_payout_next()
            return
        self._payout = _Payout(amount, batches, before, event_id)
        yield from self._dispense_next()

    def _expansion_payout_next(self) -> Op[None]:
        payout = self._payout
        assert payout is not None
        units = payout.chunks.pop(0)
        yield from self.expansion_op(ChangerExpansion.PAYOUT, bytes((units,)))

    def _poll_instead_op(self) -> Op[list[CashEvent] | None]:
        """During a level-3 payout: PAYOUT VALUE POLL until the changer only ACKs (done),
        then PAYOUT STATUS for the coins of each type paid (ACK only: still busy)."""
        payout = self._payout
        if payout is None or not payout.expansion:
            return None
        if (yield from self.expansion_op(ChangerExpansion.PAYOUT_VALUE_POLL)) is not None:
            return []  # data: the value paid so far; the payout goes on
        status = yield from self.expansion_op(ChangerExpansion.PAYOUT_STATUS)
        if status is None:
            return []  # payout busy
        for coin, count in enumerate(status[:16]):
            if count:
                payout.paid[coin] = payout.paid.get(coin, 0) + count
        if payout.chunks:
            yield from self._expansion_payout_next()
            return []
        setup = self.require_setup()
        yield from self._read_tubes_op()
        paid = sum(n * setup.coin_values[c] for c, n in payout.paid.items())
        self._payout = None
        done = paid == payout.requested
        return [CashEvent(
            CashEventKind.PAYOUT_DONE if done else CashEventKind.PAYOUT_INCOMPLETE, self.name,
            paid, self.currency, route="customer",
            reason=None if done else "PAYOUT STATUS reports less than was asked",
            event_id=payout.event_id, requested=payout.requested,
            detail={"coins": {str(c): n for c, n in payout.paid.items() if n},
                    "measured_by": "payout status"})]

    def _dispense_next(self) -> Op[None]:
        payout = self._payout
        assert payout is not None
        coin, count = payout.batches.pop(0)
        payout.sent[coin] = payout.sent.get(coin, 0) + count
        yield Request(ChangerCommand.DISPENSE, bytes(((count << 4) | coin,)))

    def _after_poll_op(self, data: bytes, events: list[CashEvent]) -> Op[list[CashEvent]]:
        """A payout ends when POLL stops saying "payout busy" after the last DISPENSE (or the
        changer resets): TUBE STATUS then tells how many coins of each type really left."""
        payout = self._payout
        if payout is None or payout.expansion:
            return []
        activities = self.activities(data)
        reset = any(e.kind is CashEventKind.DEVICE_RESET for e in events)
        if not reset and (PAYOUT_BUSY in activities or CHANGER_BUSY in activities):
            return []
        if payout.batches and not reset:
            yield from self._dispense_next()
            return []
        setup = self.require_setup()
        after = yield from self._read_tubes_op()
        paid_coins = {coin: min(sent, max(0, payout.tubes_before[coin] - after[coin]))
                      for coin, sent in payout.sent.items()}
        paid = sum(n * setup.coin_values[c] for c, n in paid_coins.items())
        self._payout = None
        done = paid == payout.requested and not payout.batches
        return [CashEvent(
            CashEventKind.PAYOUT_DONE if done else CashEventKind.PAYOUT_INCOMPLETE, self.name,
            paid, self.currency, route="customer",
            reason=None if done else ("changer reset during payout" if reset else
                                      "tube counts confirm less than was asked"),
            event_id=payout.event_id, requested=payout.requested,
            detail={"coins": {str(c): n for c, n in paid_coins.items() if n},
                    "measured_by": "tube status"})]


class MdbCoinChanger(_MdbCashDevice[ChangerCore]):
    """A coin changer at address 0x08: accepts coins into tubes/cashbox, pays out from tubes."""

    address = Address.CHANGER
    commands = ChangerCommand
    setup: _CoreAttr[ChangerSetup | None] = _CoreAttr()
    tubes: _CoreAttr[list[int]] = _CoreAttr()
    accept_tokens: _CoreAttr[bool] = _CoreAttr()
    """Enable the token coin types too (they are reported as TOKEN events, value 0)."""
    identity: _CoreAttr[Identification | None] = _CoreAttr()
    alternative_payout: _CoreAttr[bool] = _CoreAttr()
    """Level 3 with the optional feature: pay by EXPANSION PAYOUT, count by PAYOUT STATUS."""

    def __init__(self, link: MdbLink, name: str = "mdb-changer", *,
                 accept_tokens: bool = False) -> None:
        super().__init__(link, ChangerCore(name, accept_tokens=accept_tokens))

    def _tube_counts(self) -> list[int]:
        return self.tube_status()

    def start(self, sink: EventSink | None = None) -> None:
        """RESET, SETUP, identification, tubes; left disabled. After :meth:`restore`, data
        the changer still holds goes to ``sink`` before the RESET (without a sink: to the
        first poll)."""
        self.run(self.core.start_op(), self._start_sink(sink))

    def identify(self) -> Identification | None:
        """EXPANSION IDENTIFICATION (``0F 00``); None when the changer only ACKs."""
        return self.run(self.core.identify_op())

    def diagnostic_status(self) -> list[dict[str, Any]] | None:
        """EXPANSION SEND DIAGNOSTIC STATUS (``0F 05``, level 3): the changer's status codes
        named (:data:`CHANGER_DIAGNOSTICS`); None below level 3 or when it only ACKs."""
        return self.run(self.core.diagnostic_status_op())

    def tube_status(self) -> list[int]:
        return self.run(self.core.tube_status_op())

    def enable(self) -> None:
        self.run(self.core.enable_op())

    def disable(self) -> None:
        """Accept no coins; the tube buttons (manual dispense) stay on for the operator."""
        self.run(self.core.disable_op())

    def payout(self, amount: int) -> None:
        """Start paying ``amount`` from the tubes; :meth:`poll` drives it to the end and then
        reports ``payout_done`` (or ``payout_incomplete``) with the value really paid.

        Level 3 with alternative payout: EXPANSION PAYOUT in steps of ``PAYOUT_CHUNK`` units,
        counted by PAYOUT STATUS. Otherwise one DISPENSE (up to 15 coins of one type, largest
        first) at a time, the next when POLL no longer says "payout busy", counted by the
        TUBE STATUS difference. Raises ConfigurationError when the tubes cannot make the
        amount, before any coin moves.
        """
        self.run(self.core.payout_op(amount))

    def status(self) -> dict[str, Any]:
        setup = self.core.require_setup()
        out = {"device": self.name, "level": setup.level, "currency": self.currency,
               "coin_values": list(setup.coin_values), "tubes": self.tube_status()}
        if setup.tokens:
            out["token_coin_types"] = sorted(setup.tokens)
        if self.identity is not None:
            out["identity"] = asdict(self.identity)
        if setup.level >= 3:
            out["diagnostics"] = self.diagnostic_status()
        return out
