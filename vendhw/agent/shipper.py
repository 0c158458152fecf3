"""The agent's shipping loop: backend ship instructions become vends, exactly once.

Each instruction is journaled (SQLite, ``synchronous=FULL``) before it is acknowledged to the
backend, and each vend uses a ``vend_id`` derived from the order, so:

* a redelivered instruction (the backend did not hear the ACK) finds its row and is only
  acknowledged again;
* a restart after a crash or power cut calls :meth:`Machine.dispense` with the same
  ``vend_id``, which returns the journaled outcome (reconciled with the board where the
  protocol allows, ``unknown`` otherwise) and never turns the motor a second time;
* the result report carries an idempotency key derived from the instruction, and the
  client queues it durably when the backend is unreachable.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from vendhw.errors import JournalError
from vendhw.machine.journal import crash_point
from vendhw.store import DurableStore

log = logging.getLogger(__name__)

LONG_POLL_WAIT = 25.0
"""Seconds one long-poll for instructions may wait at the backend."""
RETRY_AFTER = 1.0
"""Seconds before asking again after the backend could not be reached."""
NOT_VENDED_OUTCOME = "motor_fault"
"""The outcome reported when the ship path failed before the board was commanded (an unknown
slot, a silent board, a journal that cannot be written): a definite failure, so the backend
refunds the customer."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ships (
    instruction_id TEXT PRIMARY KEY,
    order_id TEXT NOT NULL,
    slot TEXT NOT NULL,
    vend_id TEXT NOT NULL,
    state TEXT NOT NULL,
    outcome TEXT,
    received_at REAL NOT NULL,
    done_at REAL
);
"""


class InstructionLike(Protocol):
    """What the shipper reads of a ship instruction (``vendhw.client.Instruction``)."""

    @property
    def id(self) -> str: ...

    @property
    def order_id(self) -> str: ...

    @property
    def slot(self) -> str: ...


@dataclass(frozen=True)
class Shipped:
    """What became of one instruction."""

    instruction_id: str
    order_id: str
    slot: str
    outcome: str
    replayed: bool
    """True when the instruction had been seen before (a redelivery or a restart)."""
    result: dict[str, Any]


def vend_id_for(order_id: str) -> str:
    """The one vend an order may cause."""
    return f"order-{order_id}"


class Shipper:
    """Ship instructions to vends, with the journal that makes them happen at most once.

    :param client: a :class:`vendhw.client.BackendClient` (``next_instructions``, ``ack``,
        ``report_result``).
    :param machine: a :class:`vendhw.machine.Machine` (``dispense(slot, vend_id=...)``).
    """

    def __init__(self, client: Any, machine: Any, journal: str | Path, *,
                 on_event: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self.client = client
        self.machine = machine
        self.on_event = on_event or (lambda kind, data: None)
        self._store = DurableStore(journal, name="ship journal", schema=_SCHEMA)
        self.path = self._store.path
        self.fault: str | None = None
        """Why the last instruction could not be journaled (a full disk, a read-only file);
        None once one could. The agent stops selling while it is set."""
        self._lock = threading.Lock()
        self._shipping = threading.Lock()
        """Held while :meth:`run` ships one instruction, so a shutdown waits for that vend."""

    def _write(self, sql: str, args: tuple[Any, ...]) -> None:
        try:
            self._store.db.execute(sql, args)
        except sqlite3.DatabaseError as exc:
            self.fault = (f"ship journal {self.path} cannot be written ({exc}): free disk "
                          "space or make it writable")
            log.error("%s", self.fault)
            raise JournalError(self.fault) from exc

    def _row(self, instruction_id: str) -> tuple[str, str | None] | None:
        row = self._store.row("SELECT state, outcome FROM ships WHERE instruction_id = ?",
                              (instruction_id,))
        return None if row is None else (row[0], row[1])

    def process(self, instruction: InstructionLike) -> Shipped:
        """Handle one instruction; safe to call again with the same one."""
        with self._lock:
            seen = self._row(instruction.id)
            if seen is None:
                self._write(
                    "INSERT INTO ships VALUES (?,?,?,?,?,?,?,?)",
                    (instruction.id, instruction.order_id, instruction.slot,
                     vend_id_for(instruction.order_id), "received", None, time.time(), None))
                crash_point("ship:received")
            try:
                self.client.ack(instruction.id, instruction.order_id)
            except Exception as exc:
                if getattr(exc, "code", "") != "instruction_cancelled":
                    raise
                # An operator refunded or cancelled the order: it must not ship.
                self._write("UPDATE ships SET state = 'reported', outcome = 'cancelled', "
                                 "done_at = ? WHERE instruction_id = ?",
                                 (time.time(), instruction.id))
                self.on_event("cancelled", {"instruction": instruction.id,
                                            "order": instruction.order_id})
                return Shipped(instruction.id, instruction.order_id, instruction.slot,
                               "cancelled", seen is not None, {})
            crash_point("ship:acked")
            self.on_event("instruction", {"instruction": instruction.id,
                                          "order": instruction.order_id,
                                          "slot": instruction.slot, "replayed": bool(seen)})
            if seen is not None and seen[0] == "reported":
                return Shipped(instruction.id, instruction.order_id, instruction.slot,
                               seen[1] or "unknown", True, {})
            self.on_event("dispensing", {"order": instruction.order_id,
                                         "slot": instruction.slot})
            try:
                result = self.machine.dispense(instruction.slot,
                                               vend_id=vend_id_for(instruction.order_id))
            except Exception as exc:
                # The ship path failed (a slot the board profile does not have, a silent
                # board, a full disk...): the order must still end, and this instruction
                # must never block the shipping thread or a restart.
                outcome, details = self._failed(instruction, exc)
            else:
                outcome = getattr(result.outcome, "value", str(result.outcome))
                details = result.to_dict()
            self.on_event("dispensed", {"order": instruction.order_id, **details})
            crash_point("ship:dispensed")
            self.client.report_result(instruction.order_id, outcome, details,
                                      instruction_id=instruction.id,
                                      idempotency_key=f"result-{instruction.id}")
            self._write(
                "UPDATE ships SET state = 'reported', outcome = ?, done_at = ? "
                "WHERE instruction_id = ?", (outcome, time.time(), instruction.id))
            if not isinstance(details.get("journal_error"), str):
                self.fault = None
            crash_point("ship:reported")
            self.on_event("reported", {"order": instruction.order_id, "outcome": outcome})
            return Shipped(instruction.id, instruction.order_id, instruction.slot, outcome,
                           seen is not None, details)

    def _failed(self, instruction: InstructionLike, exc: Exception) -> tuple[str, dict[str, Any]]:
        """The outcome to report when ``dispense`` raised: a failure (the backend refunds)
        when the vend journal shows the motor was never commanded, ``unknown`` (the backend
        asks an operator) when it may have been, or when the journal cannot tell."""
        vend_id = vend_id_for(instruction.order_id)
        error = f"{type(exc).__name__}: {exc}"
        state = self._vend_state(vend_id)
        if state in (None, "aborted"):
            outcome = NOT_VENDED_OUTCOME
            why = "nothing was sent to the board"
        else:
            outcome = "unknown"
            why = f"the vend is {state} in the journal: the motor may have turned"
        log.error("order %s slot %r: ship failed (%s); %s: reporting %s", instruction.order_id,
                  instruction.slot, error, why, outcome)
        extra: dict[str, Any] = {}
        if isinstance(exc, JournalError):
            self.fault = str(exc)
            extra["journal_error"] = str(exc)
        self.on_event("ship_failed", {"order": instruction.order_id, "slot": instruction.slot,
                                      "error": error, "outcome": outcome})
        return outcome, {"outcome": outcome, "slot": instruction.slot, "vend_id": vend_id,
                         "detail": f"ship failed: {error}; {why}", "error": error, **extra}

    def _vend_state(self, vend_id: str) -> str | None:
        """The machine journal's state of ``vend_id``: ``None`` when it was never journaled;
        ``"unreadable"`` when the journal cannot be read (then the vend counts as started)."""
        journal = getattr(self.machine, "journal", None)
        if journal is None or not callable(getattr(journal, "get", None)):
            return "unreadable"
        try:
            record = journal.get(vend_id)
        except Exception as exc:
            log.error("vend journal unreadable for %s: %s", vend_id, exc)
            return "unreadable"
        if record is None:
            return None
        if getattr(record, "outcome", None) is not None and str(
                getattr(record.state, "value", record.state)) == "result":
            return f"finished as {record.outcome}"
        return str(getattr(record.state, "value", record.state))

    def unfinished(self) -> list[tuple[str, str, str]]:
        """Instructions received but not reported: (instruction id, order id, slot)."""
        rows = self._store.rows("SELECT instruction_id, order_id, slot FROM ships "
                                "WHERE state != 'reported' ORDER BY rowid")
        return [(r[0], r[1], r[2]) for r in rows]

    def recover(self) -> list[Shipped]:
        """On start-up: finish instructions a crash interrupted, before selling again.

        The machine's journal decides what each vend became (never a second vend); the
        outcome is reported like any other.
        """
        done = []
        for instruction_id, order_id, slot in self.unfinished():
            try:
                done.append(self.process(_Recorded(instruction_id, order_id, slot)))
            except Exception as exc:  # e.g. the backend is down: the shipping loop retries
                log.error("could not finish instruction %s for order %s yet: %s: %s",
                          instruction_id, order_id, type(exc).__name__, exc)
        flush = getattr(self.client, "flush", None)
        if callable(flush):
            flush()
        return done

    def run(self, stop: threading.Event, wait: float = LONG_POLL_WAIT) -> None:
        """Long-poll for instructions and ship them until ``stop`` is set.

        After ``stop`` no new instruction starts (it is not acknowledged, so the backend
        delivers it again after a restart); see :meth:`wait_idle`.
        """
        while not stop.is_set():
            try:
                instructions = self.client.next_instructions(wait=wait)
            except Exception as exc:  # the link is down: wait, then ask again
                if stop.is_set():
                    return  # shutting down: the client was closed under the long poll
                log.warning("instructions unavailable: %s", exc)
                stop.wait(RETRY_AFTER)
                continue
            for instruction in instructions:
                with self._shipping:
                    if stop.is_set():
                        return
                    try:
                        self.process(instruction)
                    except Exception as exc:  # never lose the shipping thread
                        log.error("instruction %s for order %s: %s: %s (asked again later)",
                                  instruction.id, instruction.order_id, type(exc).__name__,
                                  exc)
                        stop.wait(RETRY_AFTER)

    def wait_idle(self) -> None:
        """Return once no instruction is being shipped. With ``stop`` set first, none starts
        after this, so a shutdown need not wait out a long poll that is still open."""
        with self._shipping:
            pass

    def close(self) -> None:
        self._store.close()


@dataclass(frozen=True)
class _Recorded:
    id: str
    order_id: str
    slot: str
