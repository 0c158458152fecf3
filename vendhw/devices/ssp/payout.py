"""The payout and float operations of :class:`~vendhw.devices.ssp.core.SspCore` (SMART
Payout, NV11, SMART Hopper), kept apart so the core stays readable."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from vendhw.devices.cash import CashEvent
from vendhw.devices.engine import Op
from vendhw.devices.ssp.events import K
from vendhw.devices.ssp.setup import SetupInfo, _ascii, money
from vendhw.devices.ssp.tables import (
    CANNOT_PROCESS,
    COMMIT,
    DISABLE_PAYOUT_DEVICE,
    EMPTY_ALL,
    ENABLE_PAYOUT_DEVICE,
    FLOAT_AMOUNT,
    GET_ALL_LEVELS,
    GET_DENOMINATION_ROUTE,
    HALT_PAYOUT,
    PAYOUT_AMOUNT,
    PAYOUT_DEVICE_ERRORS,
    PAYOUT_ERRORS,
    PAYOUT_UNITS,
    ROUTE_CASHBOX,
    ROUTE_ERRORS,
    ROUTE_PAYOUT,
    SET_DENOMINATION_ROUTE,
    SMART_EMPTY,
    TEST_ONLY,
    SspResponseError,
)
from vendhw.errors import NotSupportedError, UnexpectedReplyError
from vendhw.framing.ssp import UnitType


class SspPayoutOps:
    """Payout, float, routing and levels operations; mixed into :class:`SspCore`, whose
    state and ``command_op`` they use."""

    # Set by SspCore; declared here for the type checker.
    name: str
    currency: str
    serial: int | None
    payout_enabled: bool
    _token: str
    _polls: int
    _pending: deque[CashEvent]

    if TYPE_CHECKING:
        @property
        def version(self) -> int: ...

        def command_op(self, command: int, params: bytes = b"", *,
                       encrypt: bool | None = None, errors: dict[int, str] | None = None,
                       recover: bool = True) -> Op[bytes]: ...

        def _require_setup(self) -> SetupInfo: ...

    # -- payout ------------------------------------------------------------------------------

    def _require_payout(self) -> SetupInfo:
        setup = self._require_setup()
        if setup.unit_type not in PAYOUT_UNITS:
            raise NotSupportedError(f"{self.name} ({setup.unit}) cannot pay out")
        return setup

    def enable_payout_op(self) -> Op[None]:
        """ENABLE PAYOUT DEVICE (SMART Payout, NV11): store notes for later payouts."""
        self._require_payout()
        yield from self.command_op(ENABLE_PAYOUT_DEVICE, errors=PAYOUT_DEVICE_ERRORS)
        self.payout_enabled = True

    def disable_payout_op(self) -> Op[None]:
        self._require_payout()
        yield from self.command_op(DISABLE_PAYOUT_DEVICE)
        self.payout_enabled = False

    def payout_op(self, amount: int, *, test: bool = False) -> Op[None]:
        """PAYOUT AMOUNT in minor units; progress, done or incomplete come as poll events.

        ``test=True`` asks whether the amount could be paid without paying it. A refusal
        raises :class:`SspResponseError` with the reason. A PAYOUT STARTED event is queued for
        the next poll to deliver (the command has no event of its own).
        """
        self._require_payout()
        if amount <= 0:
            raise ValueError("payout amount must be positive")
        params = money(amount, self.currency, self.version)
        if self.version >= 6:
            params += bytes((TEST_ONLY if test else COMMIT,))
        yield from self.command_op(PAYOUT_AMOUNT, params, errors=PAYOUT_ERRORS)
        if not test:
            self._pending.append(CashEvent(
                K.PAYOUT_STARTED, self.name, value=0, currency=self.currency,
                requested=amount, route="customer",
                event_id=f"ssp:{self.serial:08X}/{self._token}/payout{self._polls}"))

    def can_pay_op(self, amount: int) -> Op[bool]:
        """PAYOUT AMOUNT with the test option: COMMAND CANNOT BE PROCESSED means no."""
        try:
            yield from self.payout_op(amount, test=True)
        except SspResponseError as exc:
            if exc.code == CANNOT_PROCESS:
                return False
            raise
        return True

    def float_amount_op(self, keep: int, min_payout: int) -> Op[None]:
        """FLOAT AMOUNT: send stored money to the cashbox until ``keep`` remains."""
        setup = self._require_payout()
        width = 2 if setup.unit_type == UnitType.SMART_HOPPER else 4
        params = min_payout.to_bytes(width, "little") + money(keep, self.currency, self.version)
        if self.version >= 6:
            params += bytes((COMMIT,))
        yield from self.command_op(FLOAT_AMOUNT, params, errors=PAYOUT_ERRORS)

    def empty_op(self, *, smart: bool = False) -> Op[None]:
        """EMPTY ALL (or SMART EMPTY, which records the value) to the cashbox."""
        self._require_payout()
        yield from self.command_op(SMART_EMPTY if smart else EMPTY_ALL)

    def halt_payout_op(self) -> Op[None]:
        self._require_payout()
        yield from self.command_op(HALT_PAYOUT)

    def set_route_op(self, value: int, *, to_payout: bool) -> Op[None]:
        """SET DENOMINATION ROUTE: store notes of ``value`` for payout or send to cashbox."""
        setup = self._require_payout()
        route = ROUTE_PAYOUT if to_payout else ROUTE_CASHBOX
        if self.version >= 6:
            params = bytes((route,)) + money(value, self.currency, self.version)
        else:
            width = 2 if setup.unit_type == UnitType.SMART_HOPPER else 4
            params = bytes((route,)) + value.to_bytes(width, "little")
        yield from self.command_op(SET_DENOMINATION_ROUTE, params, errors=ROUTE_ERRORS)

    def get_route_op(self, value: int) -> Op[str]:
        reply = yield from self.command_op(GET_DENOMINATION_ROUTE,
                                           money(value, self.currency, self.version),
                                           errors=ROUTE_ERRORS)
        return "payout" if reply and reply[0] == ROUTE_PAYOUT else "cashbox"

    def levels_op(self) -> Op[list[dict[str, Any]]]:
        """GET ALL LEVELS: ``[{"value", "currency", "level"}]`` per stored denomination."""
        self._require_payout()
        data = yield from self.command_op(GET_ALL_LEVELS)
        if not data:
            return []
        out = []
        for i in range(data[0]):
            block = data[1 + 9 * i:10 + 9 * i]
            if len(block) < 9:
                raise UnexpectedReplyError(f"GET ALL LEVELS reply too short: {data.hex(' ')}")
            out.append({"level": int.from_bytes(block[0:2], "little"),
                        "value": int.from_bytes(block[2:6], "little"),
                        "currency": _ascii(block[6:9])})
        return out
