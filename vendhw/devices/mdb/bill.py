"""The bill validator (address 0x30, with escrow): its sans-I/O core and the host that
runs it."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from vendhw.devices.cash import CashEvent, EventSink
from vendhw.devices.engine import Op
from vendhw.devices.mdb.core import Request, _CashCore
from vendhw.devices.mdb.link import MdbLink
from vendhw.devices.mdb.polls import parse_bill_poll
from vendhw.devices.mdb.runner import _CoreAttr, _MdbCashDevice
from vendhw.devices.mdb.setup import (
    BillSetup,
    Identification,
    currency_of,
    parse_bill_setup,
    parse_identification,
)
from vendhw.errors import ConfigurationError
from vendhw.framing.mdb import Address, BillCommand, BillEscrow, BillExpansion


class BillCore(_CashCore):
    """A bill validator at address 0x30 with escrow, sans-I/O."""

    address = Address.BILL_VALIDATOR
    commands = BillCommand
    was_reset = 0x06

    def __init__(self, name: str = "mdb-bill") -> None:
        super().__init__(name)
        self.setup: BillSetup | None = None
        self.identity: Identification | None = None

    def require_setup(self) -> BillSetup:
        if self.setup is None:
            raise ConfigurationError(f"{self.name}: call start() first")
        return self.setup

    def parse_poll(self, data: bytes, prefix: str) -> list[CashEvent]:
        return parse_bill_poll(data, self.require_setup(), self.name, prefix)

    def read_setup_op(self, *, ack: bool = True) -> Op[None]:
        self.setup = parse_bill_setup((yield from self._setup_reply_op(ack=ack)))
        self.currency = currency_of(self.setup.country)

    def start_op(self) -> Op[None]:
        yield from self.reset_op()
        yield from self.read_setup_op()
        self.identity = yield from self.identify_op()
        yield Request(BillCommand.SECURITY, b"\x00\x00")
        yield from self.disable_op()

    def identify_op(self) -> Op[Identification | None]:
        """EXPANSION LEVEL 1 IDENTIFICATION (``37 00``); None when the validator only ACKs."""
        reply = yield Request(BillCommand.EXPANSION,
                              bytes((BillExpansion.LEVEL_1_IDENTIFICATION,)))
        return parse_identification(reply) if reply is not None else None

    def enable_op(self) -> Op[None]:
        setup = self.require_setup()
        mask = sum(1 << i for i, v in enumerate(setup.bill_values) if v).to_bytes(2, "big")
        yield Request(BillCommand.BILL_TYPE, mask + (mask if setup.escrow else b"\x00\x00"))

    def disable_op(self) -> Op[None]:
        yield Request(BillCommand.BILL_TYPE, b"\x00\x00\x00\x00")

    def stack_op(self) -> Op[None]:
        yield Request(BillCommand.ESCROW, bytes((BillEscrow.STACK_BILL,)))

    def reject_op(self) -> Op[None]:
        yield Request(BillCommand.ESCROW, bytes((BillEscrow.RETURN_BILL,)))

    def stacker_op(self) -> Op[tuple[int, bool]]:
        """Bills in the stacker and whether it is full."""
        reply = (yield Request(BillCommand.STACKER)) or b"\x00\x00"
        word = int.from_bytes(reply[:2], "big")
        return word & 0x7FFF, bool(word & 0x8000)


class MdbBillValidator(_MdbCashDevice[BillCore]):
    """A bill validator at address 0x30 with escrow."""

    address = Address.BILL_VALIDATOR
    commands = BillCommand
    setup: _CoreAttr[BillSetup | None] = _CoreAttr()
    identity: _CoreAttr[Identification | None] = _CoreAttr()

    def __init__(self, link: MdbLink, name: str = "mdb-bill") -> None:
        super().__init__(link, BillCore(name))

    def start(self, sink: EventSink | None = None) -> None:
        """RESET, SETUP, identification; left disabled. After :meth:`restore`, data the
        validator still holds goes to ``sink`` before the RESET (without a sink: to the
        first poll)."""
        self.run(self.core.start_op(), self._start_sink(sink))

    def identify(self) -> Identification | None:
        """EXPANSION LEVEL 1 IDENTIFICATION (``37 00``); None when the validator only ACKs."""
        return self.run(self.core.identify_op())

    def enable(self) -> None:
        self.run(self.core.enable_op())

    def disable(self) -> None:
        self.run(self.core.disable_op())

    def stack(self) -> None:
        self.run(self.core.stack_op())

    def reject(self) -> None:
        self.run(self.core.reject_op())

    def stacker(self) -> tuple[int, bool]:
        """Bills in the stacker and whether it is full."""
        return self.run(self.core.stacker_op())

    def status(self) -> dict[str, Any]:
        setup = self.core.require_setup()
        count, full = self.stacker()
        out = {"device": self.name, "level": setup.level, "currency": self.currency,
               "bill_values": list(setup.bill_values), "escrow": setup.escrow,
               "stacker": count, "stacker_full": full}
        if self.identity is not None:
            out["identity"] = asdict(self.identity)
        return out
