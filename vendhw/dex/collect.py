"""Build an :class:`~vendhw.dex.report.Audit` from the machine's journals.

Read-only over the vend journal (``vends.db``, :mod:`vendhw.machine.journal`) and the cash
journal (``cash.db``, :mod:`vendhw.machine.cash`); the only thing written is the audit's own
read log (``dex.db`` next to the vend journal), which holds the reads and resets that
``EA3`` reports and that separate "since reset" (interim) figures from "since
initialisation" ones.

How a vend is classified, by its ``vend_id``:

* ``sale:<slot>:<id>`` — a cash sale (:mod:`vendhw.agent.cash`); its value is the amount
  spent in the cash journal under the same reference;
* ``card:<slot>:<id>`` — a cashless 1 sale (an MDB card reader); value from the price map;
* ``order-<id>`` — a backend order (QR / mobile payment), booked as cashless 2;
  value from the price map;
* anything else — a test vend (``vendhw dispense``, service mode).

Only vends with outcome ``delivered`` are sales. Definite failures become events
(``not_dropped`` -> ``EJL``, the rest -> ``ELA``); ``unknown`` vends are counted apart for
an operator and never as sales.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path

from vendhw.dex.report import (
    EVENT_BILL_FAULT,
    EVENT_COIN_FAULT,
    EVENT_FAILED_DROP,
    EVENT_FAILED_VEND,
    Audit,
    Reads,
)
from vendhw.errors import ConfigurationError
from vendhw.store import DurableStore

CASH_PREFIX = "sale:"
CARD_PREFIX = "card:"
ORDER_PREFIX = "order-"
DELIVERED = "delivered"
UNKNOWN = "unknown"
FAILED_DROP_OUTCOMES = frozenset({"not_dropped"})
FAILED_VEND_OUTCOMES = frozenset({"jammed", "motor_fault", "sensor_fault", "timeout", "empty"})
CASH_FAULT_KINDS = frozenset({"jam", "fault", "fraud"})
BILL_DEVICE_HINTS = ("bill", "ssp", "id003", "note")

_READS_SCHEMA = """
CREATE TABLE IF NOT EXISTS dex_reads (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at       REAL NOT NULL,
    reset    INTEGER NOT NULL,
    reader   TEXT NOT NULL DEFAULT ''
);
"""


def _stamp(at: float) -> tuple[str, str]:
    """``(YYMMDD, HHMM)`` in UTC, the resolution EVA-DTS dates and times have."""
    moment = time.gmtime(at)
    return time.strftime("%y%m%d", moment), time.strftime("%H%M", moment)


def _open_ro(path: Path, what: str) -> sqlite3.Connection:
    if not path.is_file():
        raise ConfigurationError(f"{what} {path} does not exist")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        db.execute("SELECT 1 FROM sqlite_master").fetchall()
    except sqlite3.DatabaseError as exc:
        raise ConfigurationError(f"cannot read {what} {path}: {exc}") from None
    return db


class ReadLog:
    """The audit reads of one machine (``dex.db``): what ``EA3`` and the reset split need."""

    def __init__(self, path: str | Path | None) -> None:
        self._store = DurableStore(path, name="DEX read log", schema=_READS_SCHEMA)
        self.path = self._store.path

    def last_reset(self) -> float:
        row = self._store.row("SELECT MAX(at) FROM dex_reads WHERE reset = 1")
        return float(row[0]) if row and row[0] is not None else 0.0

    def reads(self) -> Reads:
        """The counters before the read now being made (which :meth:`record` adds)."""
        [(total, resets, last)] = self._store.rows(
            "SELECT COUNT(*), COALESCE(SUM(reset), 0), MAX(at) FROM dex_reads")
        last_date, last_time = _stamp(float(last)) if last is not None else ("", "")
        return Reads(with_reset=int(resets), total=int(total), resets=int(resets),
                     last_date=last_date, last_time=last_time)

    def record(self, at: float, *, reset: bool, reader: str = "") -> None:
        self._store.write("INSERT INTO dex_reads (at, reset, reader) VALUES (?,?,?)",
                          (at, int(reset), reader), what="an audit read")

    def close(self) -> None:
        self._store.close()


def collect(vend_journal: str | Path, *, cash_journal: str | Path | None = None,
            prices: Mapping[str, int] | None = None, machine_id: str = "",
            currency: str = "EUR", decimals: int = 2, read_log: ReadLog | None = None,
            reset: bool = False, now: float | None = None) -> Audit:
    """The audit figures of the journals as they are now.

    :param cash_journal: the cash journal; by default ``cash.db`` beside the vend journal
        when it exists.
    :param prices: slot -> price in minor units, for ``PA1`` and for sales whose value no
        journal holds (card and backend orders).
    :param read_log: where reads are logged; this read is recorded in it (with ``reset``
        when asked), so the next report's "since reset" figures start after it.
    """
    vend_path = Path(vend_journal).expanduser()
    prices = dict(prices or {})
    now = time.time() if now is None else now
    log = read_log if read_log is not None else ReadLog(None)
    since = log.last_reset()
    audit = Audit(machine_id=machine_id or "vendhw", currency=currency, decimals=decimals)
    for slot in sorted(prices, key=_slot_key):
        audit.product(slot).price = prices[slot]

    cash_path = (Path(cash_journal).expanduser() if cash_journal is not None
                 else vend_path.with_name("cash.db"))
    cash_amounts: dict[str, int] = {}
    cash_db = None
    if cash_journal is not None or cash_path.is_file():
        cash_db = _open_ro(cash_path, "cash journal")
        cash_amounts = {str(r): int(a) for r, a in cash_db.execute(
            "SELECT reference, amount FROM cash_spent WHERE amount > 0")}

    vends = _open_ro(vend_path, "vend journal")
    try:
        rows = vends.execute(
            "SELECT vend_id, slot, state, outcome, updated_at FROM vends "
            "WHERE state = 'result' ORDER BY updated_at").fetchall()
    except sqlite3.DatabaseError as exc:
        raise ConfigurationError(f"{vend_path} is not a vend journal: {exc}") from None
    finally:
        vends.close()
    for vend_id, slot_json, _state, outcome, at in rows:
        slot = _slot_text(slot_json)
        recent = float(at) > since
        if outcome == DELIVERED:
            _book_sale(audit, str(vend_id), slot, recent, cash_amounts, prices)
        elif outcome == UNKNOWN:
            audit.unknown_vends += 1
        elif outcome is not None:
            code = EVENT_FAILED_DROP if outcome in FAILED_DROP_OUTCOMES else EVENT_FAILED_VEND
            _book_event(audit, code, float(at), recent)

    if cash_db is not None:
        try:
            _cash_flow(audit, cash_db, since)
        finally:
            cash_db.close()

    audit.reads = log.reads()
    audit.reads.date, audit.reads.time = _stamp(now)
    audit.reads.total += 1
    if reset:
        audit.reads.with_reset += 1
        audit.reads.resets += 1
    log.record(now, reset=reset)
    if read_log is None:
        log.close()
    return audit


def _slot_key(slot: str) -> tuple[int, str]:
    return (int(slot), "") if slot.isdigit() else (1 << 30, slot)


def _slot_text(slot_json: str) -> str:
    try:
        return str(json.loads(slot_json))
    except (TypeError, ValueError):
        return str(slot_json)


def _book_sale(audit: Audit, vend_id: str, slot: str, recent: bool,
               cash_amounts: Mapping[str, int], prices: Mapping[str, int]) -> None:
    product = audit.product(slot)
    if vend_id.startswith(CASH_PREFIX):
        value = cash_amounts.get(vend_id, prices.get(slot, 0))
        audit.cash.add(value, since_reset=recent)
    elif vend_id.startswith(CARD_PREFIX):
        value = prices.get(slot, 0)
        audit.cashless1.add(value, since_reset=recent)
    elif vend_id.startswith(ORDER_PREFIX):
        value = prices.get(slot, 0)
        audit.cashless2.add(value, since_reset=recent)
    else:
        audit.test.add(prices.get(slot, 0), since_reset=recent)
        return
    audit.paid.add(value, since_reset=recent)
    product.paid.add(value, since_reset=recent)
    if product.price is None:
        product.price = value


def _book_event(audit: Audit, code: str, at: float, recent: bool) -> None:
    event = audit.event(code)
    event.count += 1
    if recent:
        event.count_reset += 1
    event.date, event.time = _stamp(at)


def _cash_flow(audit: Audit, db: sqlite3.Connection, since: float) -> None:
    flow = audit.cash_flow
    try:
        rows = db.execute("SELECT device, kind, value, route, at FROM cash_events "
                          "ORDER BY at").fetchall()
    except sqlite3.DatabaseError as exc:
        raise ConfigurationError(f"not a cash journal: {exc}") from None
    for device, kind, value, route, at in rows:
        recent = float(at) > since
        value = int(value)
        bill = any(hint in str(device).lower() for hint in BILL_DEVICE_HINTS)
        if kind == "credit":
            flow.cash_in += value
            flow.cash_in_reset += value if recent else 0
            if bill:
                flow.bills_in += value
                flow.bills_in_reset += value if recent else 0
            if route == "tubes":
                flow.to_tubes += value
                flow.to_tubes_reset += value if recent else 0
            elif route in ("cashbox", None) or route == "":
                flow.to_box += value
                flow.to_box_reset += value if recent else 0
        elif kind in ("payout_done", "payout_incomplete"):
            flow.dispensed += value
            flow.dispensed_reset += value if recent else 0
        elif kind in CASH_FAULT_KINDS:
            _book_event(audit, EVENT_BILL_FAULT if bill else EVENT_COIN_FAULT, float(at),
                        recent)


def catalogue_prices(catalogue: Mapping[str, object]) -> tuple[dict[str, int], str]:
    """``(slot -> price, currency)`` from a backend catalogue (``BackendClient.catalogue()``)."""
    prices: dict[str, int] = {}
    slots = catalogue.get("slots", [])
    for entry in slots if isinstance(slots, list) else []:
        if isinstance(entry, dict) and "slot" in entry and isinstance(entry.get("price"), int):
            prices[str(entry["slot"])] = int(entry["price"])
    return prices, str(catalogue.get("currency") or "")


__all__ = ["ReadLog", "catalogue_prices", "collect"]
