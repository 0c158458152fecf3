"""Sales paid by card at the machine's own MDB cashless reader.

The workflow (:meth:`CardSales.sell`), on :class:`~vendhw.devices.mdb_cashless.MdbCashlessReader`:

1. wait for BEGIN SESSION (the customer taps a card), VEND REQUEST with the catalogue price;
2. only after VEND APPROVED (and its ACK) does the motor turn:
   :meth:`Machine.dispense <vendhw.machine.Machine.dispense>` with ``card:<slot>:<id>`` as the
   ``vend_id`` (so the vend journal, and the DEX report, know it as a card sale);
3. delivered -> VEND SUCCESS; a definite failure (jam, empty, no drop, never started) ->
   VEND FAILURE, and the reader refunds the card; ``unknown`` -> VEND SUCCESS and
   ``needs_review`` for an operator (never a refund automatically); then SESSION COMPLETE;
4. the sale is booked with the backend through the outbox, as a cash sale is
   (``POST /machine/v1/sales/cash`` with ``"method": "card"``).

Configured in ``machine.toml``::

    [[cashless]]
    port = "mdb9:///dev/ttyUSB0"   # or sim://mdb-cashless
    address = 16                   # 0x10 cashless #1 (default) or 96 = 0x60 cashless #2
    options = {}                   # transport / simulator options
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vendhw.devices.mdb_cashless import (
    ADDRESSES,
    CASHLESS_1,
    POLL_INTERVAL,
    SESSION_CANCEL_REQUEST,
    SESSION_COMPLETE,
    CardSale,
    CashlessEvent,
    MdbCashlessReader,
)
from vendhw.errors import ConfigurationError, NoResponseError, VendhwError

log = logging.getLogger(__name__)

CARD_PREFIX = "card:"
METHOD = "card"
SESSION_TIMEOUT = 60.0
"""Seconds a customer has to tap a card once a product is chosen."""


@dataclass(frozen=True)
class CardConfig:
    """One ``[[cashless]]`` entry of ``machine.toml``."""

    port: str
    address: int = CASHLESS_1
    options: dict[str, Any] = field(default_factory=dict)


def load_cashless(entries: Any, file: str | Path = "machine.toml") -> tuple[CardConfig, ...]:
    """Check the ``[[cashless]]`` entries; every mistake is one clear ConfigurationError."""
    if not isinstance(entries, list):
        raise ConfigurationError(f"{file}: [[cashless]] must be an array of tables")
    out = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("port"), str):
            raise ConfigurationError(f"{file}: [[cashless]] entry {i + 1} needs a port")
        address = entry.get("address", CASHLESS_1)
        if address not in ADDRESSES:
            raise ConfigurationError(f"{file}: [[cashless]] entry {i + 1}: address must be "
                                     f"16 (0x10) or 96 (0x60), not {address!r}")
        options = entry.get("options", {})
        if not isinstance(options, dict):
            raise ConfigurationError(f"{file}: [[cashless]] entry {i + 1}: options must be a "
                                     "table")
        out.append(CardConfig(entry["port"], int(address), dict(options)))
    return tuple(out)


def open_reader(config: CardConfig) -> MdbCashlessReader:
    from vendhw.devices.mdb_cashless import open_cashless

    return open_cashless(config.port, address=config.address, **config.options)


@dataclass(frozen=True)
class CardSaleResult:
    """What became of one card sale, as the screen and the demo report it."""

    reference: str
    slot: str
    amount: int
    state: str
    """``delivered``, ``refunded`` (VEND FAILURE: the reader refunded), ``needs_review``,
    ``denied``, ``cancelled`` or ``no_card`` (the last three: nothing taken, nothing vended)."""
    outcome: str | None
    order_id: str | None = None
    sale: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"reference": self.reference, "slot": self.slot, "amount": self.amount,
                "state": self.state, "outcome": self.outcome, "order": self.order_id,
                "sale": self.sale}


_STATES = {"delivered": "delivered", "failed": "refunded", "needs_review": "needs_review"}


class CardSales:
    """One card sale at a time on one reader, booked with the backend afterwards."""

    def __init__(self, reader: MdbCashlessReader, machine: Any, client: Any) -> None:
        self.reader = reader
        self.machine = machine
        self.client = client
        self.listeners: list[Callable[[CashlessEvent], None]] = []
        """Called with every event the reader reports between sales (a card tapped before a
        product was chosen, a malfunction...), from the poller thread."""
        self._lock = threading.RLock()  # one conversation with the reader at a time
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    def start(self, *, poll: bool = False) -> None:
        """RESET and set up the reader (levels, prices, id), then enable it.

        ``poll``: keep POLLing it between sales from a background thread, as readers expect
        (they may go out of service when the VMC stops polling); until :meth:`close`.
        """
        with self._lock:
            self.reader.start()
            self.reader.enable()
        if poll and self._poller is None:
            self._stop.clear()
            self._poller = threading.Thread(target=self._poll_between_sales,
                                            name="card-poller", daemon=True)
            self._poller.start()

    def _poll_between_sales(self) -> None:
        while not self._stop.wait(POLL_INTERVAL):  # the POLL cadence, not a reply wait
            with self._lock:
                try:
                    events = self.reader.poll()
                    if any(e.code == SESSION_CANCEL_REQUEST for e in events):
                        # The customer cancelled on the reader before choosing: end it.
                        self.reader.run(self.reader.core.vend_op(SESSION_COMPLETE))
                except VendhwError as exc:
                    log.warning("%s: poll between sales failed: %s", self.reader.name, exc)
                    continue
            for event in events:
                for listener in self.listeners:
                    try:
                        listener(event)
                    except Exception:  # a screen bug must not stop the reader's polling
                        log.exception("card listener failed on %s", event)

    def sell(self, slot: str, price: int, *,
             session_timeout: float = SESSION_TIMEOUT) -> CardSaleResult:
        """Wait for a card, have the vend approved, dispense, settle, book (see the module)."""
        reference = f"{CARD_PREFIX}{slot}:{secrets.token_hex(8)}"
        details: dict[str, Any] = {}
        with self._lock:  # the reader's part; the booking below needs no reader
            sale = self._on_the_reader(reference, slot, price, session_timeout, details)
        state = _STATES.get(sale.state, sale.state)
        order_id = None
        if sale.outcome is not None:  # the reader approved and the machine tried to vend
            order_id = self._book(reference, slot, sale, details)
        return CardSaleResult(reference, slot, price, state, sale.outcome, order_id,
                              sale.to_dict())

    def _on_the_reader(self, reference: str, slot: str, price: int, session_timeout: float,
                       details: dict[str, Any]) -> CardSale:
        item = int(slot) if str(slot).isdigit() and int(slot) <= 0xFFFF else 0

        def dispense() -> str:
            try:
                result = self.machine.dispense(slot, vend_id=reference)
            except NoResponseError as exc:
                # Silent before the command was written: the vend is aborted, nothing moved.
                details["error"] = str(exc)
                return "not_started"
            details.update(result.to_dict())
            outcome = result.outcome
            return str(getattr(outcome, "value", outcome))

        motor: dict[str, str] = {}

        def dispense_once() -> str:
            motor["outcome"] = dispense()
            return motor["outcome"]

        try:
            if not self.reader.core.enabled:  # a JUST RESET was seen: set the reader up again
                self.start()
            sale: CardSale = self.reader.sell(item, price, dispense_once,
                                              session_timeout=session_timeout)
            if sale.state == "reader_reset":  # it restarted while we waited: once more
                self.start()
                sale = self.reader.sell(item, price, dispense_once,
                                        session_timeout=session_timeout)
        except VendhwError as exc:
            if "outcome" not in motor:
                raise  # nothing was vended: the reader ends the session by its own timeout
            # The vend happened but the reader did not hear how it ended: whether the card
            # is charged is for an operator to settle with the reader's own records.
            log.warning("card sale %s: reader lost after the vend (%s): needs review",
                        reference, exc)
            sale = CardSale(item, price, state="needs_review", approved=price,
                            outcome="unknown")
            details["reader_error"] = str(exc)
            details["vend_outcome"] = motor["outcome"]
        return sale

    def _book(self, reference: str, slot: str, sale: CardSale,
              details: dict[str, Any]) -> str | None:
        from vendhw.client.core import Call, cash_sale_call
        from vendhw.contract.states import OUTCOMES

        outcome = sale.outcome or "unknown"
        if outcome == "not_started":
            outcome = "timeout"  # the board was silent before the command: nothing vended
        elif outcome not in OUTCOMES:
            outcome = "unknown"
        amount = sale.approved if sale.approved is not None else sale.price
        base = cash_sale_call(reference, slot, amount, str(outcome),
                              {**details, "card": {k: v for k, v in sale.to_dict().items()
                                                   if k != "events"}})
        assert base.body is not None
        call = Call(base.method, base.path, {**base.body, "method": METHOD},
                    idempotency_key=f"{METHOD}-{reference}")
        try:
            self.client.outbox.enqueue(call)
            sent = self.client.flush()
        except VendhwError as exc:  # the outbox keeps it; the sale itself is done
            log.warning("card sale %s not booked yet: %s", reference, exc)
            return None
        body = sent.get(call.idempotency_key or "")
        return str(body["id"]) if body and "id" in body else None

    def close(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=5)
            self._poller = None
        try:
            with self._lock:
                self.reader.disable()
        except VendhwError as exc:  # closing anyway; the reader may be gone
            log.info("%s: disable failed: %s", self.reader.name, exc)
        self.reader.close()


__all__ = ["CARD_PREFIX", "CardConfig", "CardSaleResult", "CardSales", "load_cashless",
           "open_reader"]


DEMO_READER = "sim://mdb-cashless"
"""The demo's card reader: the simulator in process; the card is tapped at once."""


def card_demo_sale(client: Any, machine: Any, slot: str, price: int,
                   say: Any) -> Any:
    """``vendhw demo --card``: one sale at a simulated reader; the backend order it booked."""
    from vendhw.client.models import Order

    sales = CardSales(open_reader(CardConfig(DEMO_READER)), machine, client)
    try:
        sales.start()
        say("card_ready", reader=DEMO_READER, **sales.reader.status()["config"])
        result = sales.sell(slot, price, session_timeout=10.0)
    finally:
        sales.close()
    say("card_sale", slot=slot, amount=price, state=result.state, outcome=result.outcome,
        events=result.sale.get("events", []))
    if result.order_id is None:  # nothing vended, nothing booked: no backend order
        return Order.from_json({"id": result.reference, "state": "cancelled", "slot": slot,
                                "product_id": "", "amount": price, "currency": "",
                                "kind": METHOD})
    return client.order_status(result.order_id)
