"""Sales paid with cash inserted at the machine.

Cash needs no backend approval: the money is already in the machine. A sale is therefore
local first and booked afterwards:

1. :meth:`Machine.sell_for_cash <vendhw.machine.Machine.sell_for_cash>` spends the price
   from the customer's credit in the cash journal (``sale:<slot>:<id>``; refused with
   :class:`~vendhw.machine.cash.InsufficientCredit` when the credit is short), dispenses
   with that reference as the ``vend_id`` (a repeat is a replay, never a second vend), gives
   the credit back after a definite failure (jam, empty, no drop), keeps it spent after an
   unknown outcome (for an operator), and settles the outcome in the cash journal;
2. the sale is then booked with the backend through the outbox (so a backend that is down
   gets it later, once).

After a crash, :meth:`CashSales.recover` finishes every spend that has no outcome: a vend the
vend journal never began is refunded, one it began is replayed from the journal.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

from vendhw.contract.states import FAILURE_OUTCOMES
from vendhw.errors import VendhwError
from vendhw.machine.cash import CashAcceptor, CashJournal

log = logging.getLogger(__name__)

SALE_PREFIX = "sale:"


@dataclass(frozen=True)
class CashSale:
    """What became of one cash sale."""

    reference: str
    slot: str
    amount: int
    outcome: str
    refunded: bool
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def state(self) -> str:
        """The order state the backend books for it (``delivered``/``refunded``/...)."""
        if self.outcome == "delivered":
            return "delivered"
        return "refunded" if self.refunded else "needs_review"

    def to_dict(self) -> dict[str, Any]:
        return {"reference": self.reference, "slot": self.slot, "amount": self.amount,
                "outcome": self.outcome, "refunded": self.refunded, "state": self.state}


class CashSales:
    """Spend credit, vend, settle, book: one cash sale at a time."""

    def __init__(self, acceptor: CashAcceptor, machine: Any, client: Any) -> None:
        self.acceptor = acceptor
        self.journal: CashJournal = acceptor.journal
        self.machine = machine
        self.client = client

    def balance(self) -> int:
        return self.journal.balance()

    def sell(self, slot: str, price: int) -> CashSale:
        """Sell ``slot`` for ``price`` from the inserted credit (raises InsufficientCredit)."""
        return self._finish(f"{SALE_PREFIX}{slot}:{secrets.token_hex(8)}", slot, price)

    def _finish(self, reference: str, slot: str, amount: int) -> CashSale:
        result = self.machine.sell_for_cash(slot, amount, self.journal, reference=reference)
        outcome = getattr(result.outcome, "value", str(result.outcome))
        details = result.to_dict()
        self._book(reference, slot, amount, outcome, details)
        return CashSale(reference, slot, amount, outcome, outcome in FAILURE_OUTCOMES, details)

    def _book(self, reference: str, slot: str, amount: int, outcome: str,
              details: dict[str, Any]) -> None:
        try:
            receipt = self.client.report_cash_sale(reference, slot, amount, outcome, details)
        except Exception as exc:  # the outbox keeps it; the sale itself is done
            log.warning("cash sale %s not booked yet: %s", reference, exc)
            return
        if getattr(receipt, "queued", False):
            log.info("cash sale %s queued for the backend", reference)

    def recover(self) -> list[CashSale]:
        """Finish the spends a crash left without an outcome (before selling again), and
        settle an interrupted change payout (never paid twice)."""
        for reference, amount, outcome in self.acceptor.recover_change():
            log.warning("interrupted change payout %s (%d): %s", reference, amount, outcome)
        done = []
        for reference, amount in self.journal.unsettled(SALE_PREFIX):
            slot = reference[len(SALE_PREFIX):].rsplit(":", 1)[0]
            if self.machine.journal.get(reference) is None:
                # The vend never began: the customer keeps the credit.
                done.append(self._not_started(reference, slot, amount))
                continue
            try:
                done.append(self._finish(reference, slot, amount))
            except VendhwError as exc:
                # An aborted vend (nothing was sent) could not be tried again: the board is
                # offline (its port missing at start) or silent. Nothing left the machine,
                # so the credit is the customer's again, as for a vend never begun.
                record = self.machine.journal.get(reference)
                if record is None or getattr(record.state, "value", record.state) != "aborted":
                    raise
                log.warning("cash sale %s: its vend was never sent and cannot be tried now "
                            "(%s); the credit is the customer's again", reference, exc)
                done.append(self._not_started(reference, slot, amount))
        return done

    def _not_started(self, reference: str, slot: str, amount: int) -> CashSale:
        self.journal.refund(reference)
        self.journal.settle(reference, "not_started")
        return CashSale(reference, slot, amount, "not_started", True)

    def return_change(self) -> int:
        """Pay the remaining credit back with the first payout device; 0 when nothing to pay."""
        for device in self.acceptor.devices:
            if _can_pay(device):
                return self.acceptor.give_change(device, f"change-{secrets.token_hex(6)}")
        return 0


def _can_pay(device: Any) -> bool:
    from vendhw.devices.cash import CashDevice

    return type(device).payout is not CashDevice.payout


__all__ = ["SALE_PREFIX", "CashSale", "CashSales"]
