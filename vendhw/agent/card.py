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

A reader whose port goes away (its USB MDB interface unplugged) or cannot be opened at start
is **offline**: sales are refused before anything is taken, the poller leaves it alone, and
:meth:`CardSales.reopen` opens it again (the port found again through its
``usb-serial://`` identity), sets it up and enables it. A sale the unplug cut before the
motor turned vended nothing and the reader heard no VEND SUCCESS, so nothing is charged; one
cut after the motor turned is booked ``needs_review`` (the reader may or may not have
charged): never refunded or vended again automatically.

Configured in ``machine.toml``::

    [[cashless]]
    port = "mdb9:///dev/ttyUSB0"   # or sim://mdb-cashless
    address = 16                   # 0x10 cashless #1 (default) or 96 = 0x60 cashless #2
    options = {}                   # transport / simulator options
"""

from __future__ import annotations

import functools
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
    CardSale,
    CashlessEvent,
    MdbCashlessReader,
)
from vendhw.errors import ConfigurationError, DisconnectedError, NoResponseError, VendhwError
from vendhw.framing.mdb import CashlessPoll, CashlessVend
from vendhw.machine.journal import crash_point
from vendhw.store import DurableStore

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
    """One card sale at a time on one reader, booked with the backend afterwards.

    ``opener`` opens the reader again for :meth:`reopen` (after its port went away);
    ``reader`` may be None only with ``offline`` set (its port could not be opened yet).
    """

    def __init__(self, reader: MdbCashlessReader | None, machine: Any, client: Any, *,
                 journal: str | Path | None = None,
                 opener: Callable[[], MdbCashlessReader] | None = None,
                 offline: str | None = None) -> None:
        if reader is None and offline is None:
            raise ValueError("CardSales without a reader needs the reason it is offline")
        self._reader = reader
        self.opener = opener
        self.offline_reason = offline
        """Why the reader is offline (its port went away or could not be opened), or None."""
        self.state_listeners: list[Callable[[bool, str], None]] = []
        """Called with ``(online, why)`` when the reader's port goes away and when
        :meth:`reopen` brought it back (the agent's reconnect loop waits on it)."""
        self.machine = machine
        self.client = client
        self.journal = CardJournal(journal)
        """Approved card sales until booked: :meth:`recover` books what a crash left."""
        self.listeners: list[Callable[[CashlessEvent], None]] = []
        """Called with every event the reader reports between sales (a card tapped before a
        product was chosen, a malfunction...), from the poller thread."""
        self._lock = threading.RLock()  # one conversation with the reader at a time
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    @classmethod
    def open(cls, config: CardConfig, machine: Any, client: Any, *,
             journal: str | Path | None = None) -> CardSales:
        """The reader ``config`` names, with its opener; **offline** when its port cannot be
        opened now for a reason a reconnect may cure (the port missing, e.g. a USB MDB
        interface not enumerated yet): :meth:`reopen` brings it up. A port that can never
        open (a bad URL, an unknown scheme) raises :class:`ConfigurationError`."""
        from vendhw.transport import check_url

        check_url(config.port)
        opener = functools.partial(open_reader, config)
        try:
            reader = opener()
        except ConfigurationError:
            raise
        except VendhwError as exc:
            why = f"{type(exc).__name__}: {exc}"
            log.warning("card reader on %s offline, its port could not be opened: %s "
                        "(reopen() brings it up)", config.port, why)
            return cls(None, machine, client, journal=journal, opener=opener, offline=why)
        return cls(reader, machine, client, journal=journal, opener=opener)

    @property
    def reader(self) -> MdbCashlessReader:
        """The reader's driver (DisconnectedError while its port could not be opened)."""
        if self._reader is None:
            raise DisconnectedError(f"the card reader is not open ({self.offline_reason})")
        return self._reader

    @property
    def online(self) -> bool:
        """False from the moment the reader's port went away until :meth:`reopen` succeeds."""
        return self.offline_reason is None

    @property
    def name(self) -> str:
        return self._reader.name if self._reader is not None else "card reader"

    def start(self, *, poll: bool = False, offline_ok: bool = False) -> None:
        """RESET and set up the reader (levels, prices, id), then enable it.

        ``poll``: keep POLLing it between sales from a background thread, as readers expect
        (they may go out of service when the VMC stops polling); until :meth:`close`.
        ``offline_ok``: a reader that is offline, or fails to start for a reason a reconnect
        may cure (its port gone, silent), stays or goes offline instead of raising.
        """
        with self._lock:
            if self.online:
                try:
                    self._set_up()
                except ConfigurationError:
                    raise
                except VendhwError as exc:
                    if not offline_ok:
                        raise
                    if not self._went_away():
                        self._set_offline(f"start failed: {type(exc).__name__}: {exc}")
            elif not offline_ok:
                raise DisconnectedError(f"{self.name} is offline: {self.offline_reason}")
        if poll and self._poller is None:
            self._stop.clear()
            self._poller = threading.Thread(target=self._poll_between_sales,
                                            name="card-poller", daemon=True)
            self._poller.start()

    def _set_up(self) -> None:
        self.reader.start()
        self.reader.enable()

    def _poll_between_sales(self) -> None:
        while not self._stop.wait(POLL_INTERVAL):  # the POLL cadence, not a reply wait
            if not self.online:
                continue  # its port went away: the reconnect loop reopens it
            with self._lock:
                if not self.online:
                    continue
                try:
                    events = self.reader.poll()
                    if any(e.code == CashlessPoll.SESSION_CANCEL_REQUEST for e in events):
                        # The customer cancelled on the reader before choosing: end it.
                        self.reader.run(self.reader.core.vend_op(CashlessVend.SESSION_COMPLETE))
                except VendhwError as exc:
                    if not self._went_away():
                        log.warning("%s: poll between sales failed: %s", self.name, exc)
                    continue
            for event in events:
                for listener in self.listeners:
                    try:
                        listener(event)
                    except Exception:  # a screen bug must not stop the reader's polling
                        log.exception("card listener failed on %s", event)

    def sell(self, slot: str, price: int, *,
             session_timeout: float = SESSION_TIMEOUT,
             on_approved: Callable[[], None] | None = None) -> CardSaleResult:
        """Wait for a card, have the vend approved, dispense, settle, book (see the module).

        ``on_approved``: called once the reader approved the vend, just before the motor
        turns (the screen shows "dispensing" from then on)."""
        reference = f"{CARD_PREFIX}{slot}:{secrets.token_hex(8)}"
        details: dict[str, Any] = {}
        with self._lock:  # the reader's part; the booking below needs no reader
            self._refuse_offline()
            try:
                sale = self._on_the_reader(reference, slot, price, session_timeout, details,
                                           on_approved)
            finally:
                self._went_away()  # an unplug during the sale takes the reader offline
        state = _STATES.get(sale.state, sale.state)
        order_id = None
        if sale.outcome is not None:  # the reader approved and the machine tried to vend
            order_id = self._book(reference, slot, sale, details)
        return CardSaleResult(reference, slot, price, state, sale.outcome, order_id,
                              sale.to_dict())

    def _on_the_reader(self, reference: str, slot: str, price: int, session_timeout: float,
                       details: dict[str, Any],
                       on_approved: Callable[[], None] | None = None) -> CardSale:
        item = int(slot) if str(slot).isdigit() and int(slot) <= 0xFFFF else 0

        def dispense() -> str:
            self.journal.approved(reference, slot, price)
            crash_point("card:approved")
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
            if on_approved is not None:
                try:
                    on_approved()
                except Exception:  # a screen bug must not stop an approved vend
                    log.exception("card sale %s: on_approved failed", reference)
            motor["outcome"] = dispense()
            return motor["outcome"]

        try:
            if not self.reader.core.enabled:  # a JUST RESET was seen: set the reader up again
                self._set_up()
            sale: CardSale = self.reader.sell(item, price, dispense_once,
                                              session_timeout=session_timeout)
            if sale.state == "reader_reset":  # it restarted while we waited: once more
                self._set_up()
                sale = self.reader.sell(item, price, dispense_once,
                                        session_timeout=session_timeout)
            if "outcome" in motor:
                self.journal.told(reference, str(sale.outcome or "unknown"))
                crash_point("card:told")
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
        self.client.outbox.enqueue(call)
        self.journal.queued(reference, str(outcome), amount)
        crash_point("card:queued")
        return self._flush(reference, call.idempotency_key or "")

    def _flush(self, reference: str, key: str) -> str | None:
        try:
            sent = self.client.flush()
        except VendhwError as exc:  # the outbox keeps it; the sale itself is done
            log.warning("card sale %s not booked yet: %s", reference, exc)
            return None
        body = sent.get(key)
        order_id = str(body["id"]) if body and "id" in body else None
        if order_id is not None:
            self.journal.booked(reference, order_id)
        return order_id

    def recover(self) -> list[str]:
        """Book the card sales a crash (a power cut) left approved but not queued; run after
        the machine reconciled its vends and before selling. Never vends, never tells the
        reader anything (its session died with the power): a vend that began and whose
        outcome the reader never heard is booked ``unknown`` (``needs_review``); one that
        never began is not booked (the reader never saw VEND SUCCESS, nothing is charged).
        Returns the references it booked."""
        booked = []
        for reference, slot, price, told in self.journal.unqueued():
            record = self.machine.journal.get(reference)
            if record is None or record.state == "aborted":
                log.warning("card sale %s: nothing vended before the cut; not booked",
                            reference)
                self.journal.queued(reference, None, 0)
                self.journal.booked(reference, "")  # settled: nothing to book
                continue
            outcome = told or "unknown"
            state = {"delivered": "delivered", "unknown": "needs_review"}.get(outcome,
                                                                              "failed")
            if told is None:
                log.warning("card sale %s: the reader never heard the vend's outcome (%s): "
                            "needs review", reference, record.outcome)
            sale = CardSale(0, price, state=state, approved=price, outcome=outcome)
            self._book(reference, slot, sale, {"recovered": True,
                                               "vend_outcome": record.outcome})
            booked.append(reference)
        for reference in self.journal.unbooked():  # queued before the cut, sent now
            key = f"{METHOD}-{reference}"
            if self._flush(reference, key) is None and self.client.outbox.state(key) is None:
                self._order_of(reference, key)  # another flush sent it: ask for its order
        return booked

    def _order_of(self, reference: str, key: str) -> None:
        """The backend books one order per reference: asking again returns that order."""
        from vendhw.client.core import Call, cash_sale_call

        row = self.journal.get(reference)
        if row is None or row["outcome"] is None:
            return
        base = cash_sale_call(reference, row["slot"], row["amount"], row["outcome"],
                              {"recovered": True})
        assert base.body is not None
        try:  # the same reference and outcome: the backend answers with the booked order
            body = self.client._send(Call(base.method, base.path,
                                          {**base.body, "method": METHOD},
                                          idempotency_key=f"{key}-order"))
        except VendhwError as exc:
            log.warning("card sale %s: booked, order id not known yet: %s", reference, exc)
            return
        if body and "id" in body:
            self.journal.booked(reference, str(body["id"]))

    # -- the port going away and coming back -----------------------------------------------

    def _refuse_offline(self) -> None:
        if self.offline_reason is not None:
            raise DisconnectedError(
                f"{self.name} is offline ({self.offline_reason}); nothing was taken. It is "
                "back after reopen() finds the port again")

    def _went_away(self) -> bool:
        """True (and the reader offline) when its port is gone, not just silent: the
        transport's own record decides, whatever the driver made of the error."""
        transport = getattr(getattr(self._reader, "link", None), "transport", None)
        lost = getattr(transport, "lost", None)
        if lost is None:
            return False
        self._set_offline(str(lost))
        return True

    def _set_offline(self, why: str) -> None:
        if self.offline_reason is not None:
            return
        self.offline_reason = why
        log.warning("%s: card reader offline: %s", self.name, why)
        self._tell_state(False, why)

    def _tell_state(self, online: bool, why: str) -> None:
        for listener in list(self.state_listeners):
            try:
                listener(online, why)
            except Exception:  # a listener's bug must not change the reader's state
                log.exception("%s: state listener failed", self.name)

    def reopen(self) -> None:
        """Open the reader again with its opener (a ``usb-serial://`` identity is resolved
        again, so an interface plugged back at another path is found), RESET it, set it up
        and enable it, and go back online. The RESET ends whatever session the reader still
        had: a sale the unplug cut was settled already (nothing vended, or ``needs_review``);
        nothing is vended or told to the reader again. Raises the open's error and stays
        offline."""
        if self.opener is None:
            raise ConfigurationError(f"{self.name} cannot be reopened: CardSales was made "
                                     "without an opener")
        with self._lock:
            old, self._reader = self._reader, None
            if old is not None:
                try:
                    old.close()
                except Exception as exc:  # the old port is gone anyway
                    log.info("%s: closing the lost port: %s", old.name, exc)
            try:
                reader = self.opener()
                try:
                    reader.start()
                    reader.enable()
                except BaseException:
                    reader.close()
                    raise
            except BaseException as exc:
                if self.offline_reason is None:  # asked while online: the port is closed now
                    self._set_offline(f"reopen failed: {type(exc).__name__}: {exc}")
                raise
            self._reader = reader
            was, self.offline_reason = self.offline_reason, None
        if was is not None:
            log.warning("%s: card reader back online", reader.name)
            self._tell_state(True, "reopened")

    def close(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=5)
            self._poller = None
        reader = self._reader
        if reader is not None:
            try:
                with self._lock:
                    if self.online:
                        reader.disable()
            except VendhwError as exc:  # closing anyway; the reader may be gone
                log.info("%s: disable failed: %s", reader.name, exc)
            reader.close()
        self.journal.close()


_CARD_SCHEMA = """
CREATE TABLE IF NOT EXISTS card_sales (reference TEXT PRIMARY KEY, slot TEXT NOT NULL,
    price INTEGER NOT NULL, told TEXT, queued INTEGER NOT NULL DEFAULT 0, outcome TEXT,
    amount INTEGER, order_id TEXT);
"""


class CardJournal:
    """Card sales from VEND APPROVED until the backend booked them (SQLite, one row each):
    ``approved`` (before the motor), ``told`` (the reader heard the outcome), ``queued``
    (the booking is in the outbox), ``order_id`` (booked; ``""``: nothing vended, nothing to
    book). In memory without a path."""

    def __init__(self, path: str | Path | None = None) -> None:
        self._store = DurableStore(path, name="card journal", schema=_CARD_SCHEMA)
        self.path = self._store.path

    def approved(self, reference: str, slot: str, price: int) -> None:
        self._store.write("INSERT OR IGNORE INTO card_sales (reference, slot, price) "
                          "VALUES (?, ?, ?)", (reference, str(slot), price),
                          what=f"the approval of {reference}")

    def told(self, reference: str, outcome: str) -> None:
        self._store.write("UPDATE card_sales SET told = ? WHERE reference = ?",
                          (outcome, reference), what=f"the outcome of {reference}")

    def queued(self, reference: str, outcome: str | None, amount: int) -> None:
        """The booking (``outcome``, ``amount``) is in the outbox."""
        self._store.write("UPDATE card_sales SET queued = 1, outcome = ?, amount = ? "
                          "WHERE reference = ?", (outcome, amount, reference),
                          what=f"the booking of {reference}")

    def booked(self, reference: str, order_id: str) -> None:
        self._store.write("UPDATE card_sales SET order_id = ? WHERE reference = ?",
                          (order_id, reference), what=f"the order of {reference}")

    def unqueued(self) -> list[tuple[str, str, int, str | None]]:
        return [(str(r), str(s), int(p), None if t is None else str(t)) for r, s, p, t in
                self._store.rows("SELECT reference, slot, price, told FROM card_sales "
                                 "WHERE queued = 0")]

    def unbooked(self) -> list[str]:
        return [str(r) for (r,) in self._store.rows("SELECT reference FROM card_sales WHERE "
                                                    "queued = 1 AND order_id IS NULL")]

    def get(self, reference: str) -> dict[str, Any] | None:
        row = self._store.row("SELECT slot, price, told, queued, outcome, amount, order_id "
                              "FROM card_sales WHERE reference = ?", (reference,))
        if row is None:
            return None
        slot, price, told, queued, outcome, amount, order_id = row
        return {"slot": slot, "price": price, "told": told, "queued": bool(queued),
                "outcome": outcome, "amount": amount, "order_id": order_id}

    def close(self) -> None:
        self._store.close()


__all__ = ["CARD_PREFIX", "CardConfig", "CardJournal", "CardSaleResult", "CardSales",
           "load_cashless", "open_reader"]


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
