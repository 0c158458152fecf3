"""The vend journal: every vend is on disk before the board hears of it.

One SQLite row per vend, keyed by its ``vend_id``, moving only forward through
``intent -> sent -> acknowledged -> result``. The intent row carries the board sequence number
(FA FB PackNO, Easivend SN) chosen for the vend, committed *before the first byte is written*,
so a retry or a reconciliation after a crash uses the same number and the board itself refuses
to vend twice. SQLite runs with ``journal_mode=WAL`` and ``synchronous=FULL``: a committed
step survives a power cut, not only a process crash.

A vend that may or may not have happened ends as outcome ``unknown``: never retried and never
refunded automatically; an operator looks at the slot and settles it with :meth:`resolve`.

``VENDHW_CRASH_AT`` (tests only): set it to ``intent``, ``sent``, ``acknowledged`` or
``result`` and the process calls ``os._exit(137)`` right after that step is committed, which
is how the kill-and-restart tests cut a vend at each step. Never set it in production.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from vendhw.crash import CRASH_ENV, CRASH_EXIT_CODE, crash_point
from vendhw.errors import ConfigurationError, SequenceError
from vendhw.store import DurableStore

"""How long a writer waits for another process holding the journal (an operator's CLI)."""


class VendState(str, Enum):
    """Where a vend is in its life; the order of the members is the only allowed order."""

    INTENT = "intent"
    """Journaled with its slot, motor and sequence number; nothing written to the board yet."""
    SENT = "sent"
    """The vend command was written to the wire at least once."""
    ACKNOWLEDGED = "acknowledged"
    """The board acknowledged the command."""
    RESULT = "result"
    """The outcome is known (which may be ``unknown``: settled, but by nobody's knowledge)."""
    ABORTED = "aborted"
    """Nothing was ever written (the board was silent before the send): safe to try again."""


IN_FLIGHT = (VendState.INTENT, VendState.SENT, VendState.ACKNOWLEDGED)
_RANK = {VendState.INTENT: 0, VendState.SENT: 1, VendState.ACKNOWLEDGED: 2,
         VendState.RESULT: 3, VendState.ABORTED: 3}

UNKNOWN = "unknown"
"""The outcome value of a vend the board may or may not have made."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS vends (
    vend_id      TEXT PRIMARY KEY,
    board        TEXT NOT NULL,
    slot         TEXT NOT NULL,
    motor        INTEGER NOT NULL,
    seq          INTEGER,
    drop_sensor  INTEGER NOT NULL,
    state        TEXT NOT NULL,
    outcome      TEXT,
    raw_code     INTEGER,
    drop_time_ms INTEGER,
    duration_ms  INTEGER,
    detail       TEXT NOT NULL DEFAULT '',
    resolved_by  TEXT,
    created_at   REAL NOT NULL,
    updated_at   REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS vends_board_state ON vends (board, state);
CREATE TABLE IF NOT EXISTS vend_log (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    vend_id  TEXT NOT NULL,
    at       REAL NOT NULL,
    state    TEXT NOT NULL,
    outcome  TEXT,
    note     TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS sequences (
    board TEXT PRIMARY KEY,
    last  INTEGER NOT NULL
);
"""

_COLUMNS = ("vend_id", "board", "slot", "motor", "seq", "drop_sensor", "state", "outcome",
            "raw_code", "drop_time_ms", "duration_ms", "detail", "resolved_by", "created_at",
            "updated_at")


@dataclass(frozen=True)
class VendRecord:
    """One journaled vend, as an operator or the Machine reads it back."""

    vend_id: str
    board: str
    slot: str | int
    """The slot as the caller gave it (operator label or board number)."""
    motor: int
    seq: int | None
    drop_sensor: bool
    state: VendState
    outcome: str | None
    raw_code: int | None
    drop_time_ms: int | None
    duration_ms: int | None
    detail: str
    resolved_by: str | None
    """``board`` (it reported), ``reconcile`` (asked after a restart), ``host`` (the
    link died), ``operator`` (settled by hand)."""
    created_at: float
    updated_at: float

    @property
    def in_flight(self) -> bool:
        return self.state in IN_FLIGHT

    @property
    def unresolved(self) -> bool:
        """In flight, or ``unknown`` and not yet settled by an operator."""
        return self.in_flight or (self.outcome == UNKNOWN and self.resolved_by != "operator")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["state"] = self.state.value
        return out

    @classmethod
    def _from_row(cls, row: tuple[Any, ...]) -> VendRecord:
        values = dict(zip(_COLUMNS, row, strict=True))
        values["slot"] = json.loads(values["slot"])
        values["drop_sensor"] = bool(values["drop_sensor"])
        values["state"] = VendState(values["state"])
        return cls(**values)


class VendJournal:
    """SQLite journal of vends; every method that changes a row has committed when it returns.

    :param path: the database file; ``None`` or ``":memory:"`` keeps it in memory (no crash
        safety: for one-off CLI runs and tests only).
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self._store = DurableStore(path, name="vend journal", schema=_SCHEMA)
        self.path = self._store.path
        self._crash_at = os.environ.get(CRASH_ENV, "").strip().lower() or None

    # -- crash hook (tests) ----------------------------------------------------------------

    def _crash_point(self, step: str) -> None:
        """Die like a power cut right after ``step`` was committed, if a test asked for it."""
        if self._crash_at == step:
            os._exit(CRASH_EXIT_CODE)

    # -- reading -----------------------------------------------------------------------------

    def get(self, vend_id: str) -> VendRecord | None:
        row = self._store.row(f"SELECT {', '.join(_COLUMNS)} FROM vends WHERE vend_id = ?",
                              (vend_id,))
        return None if row is None else VendRecord._from_row(row)

    def _select(self, where: str, args: Iterable[Any], limit: int | None = None
                ) -> list[VendRecord]:
        # Newest first by insertion (rowid), never by wall clock: a controller without an RTC
        # battery boots in 1970, and NTP moves the clock either way.
        sql = f"SELECT {', '.join(_COLUMNS)} FROM vends WHERE {where} ORDER BY rowid DESC"
        params = list(args)
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        rows = self._store.rows(sql, params)
        return [VendRecord._from_row(row) for row in rows]

    def in_flight(self, board: str | None = None) -> list[VendRecord]:
        """Vends that were started and never finished (a crash or power cut), oldest first."""
        where = "state IN ('intent', 'sent', 'acknowledged')"
        args: list[Any] = []
        if board is not None:
            where += " AND board = ?"
            args.append(board)
        return list(reversed(self._select(where, args)))

    def pending(self, board: str | None = None) -> list[VendRecord]:
        """What needs an operator: vends in flight and ``unknown`` ones not yet settled."""
        where = ("(state IN ('intent', 'sent', 'acknowledged') OR "
                 "(outcome = 'unknown' AND COALESCE(resolved_by, '') != 'operator'))")
        args: list[Any] = []
        if board is not None:
            where += " AND board = ?"
            args.append(board)
        return list(reversed(self._select(where, args)))

    def history(self, limit: int = 100, board: str | None = None) -> list[VendRecord]:
        """The latest vends, newest first."""
        if board is None:
            return self._select("1", (), limit)
        return self._select("board = ?", (board,), limit)

    def log(self, vend_id: str) -> list[dict[str, Any]]:
        """Every step of one vend, in order (what an operator reads to settle an unknown)."""
        rows = self._store.rows(
            "SELECT at, state, outcome, note FROM vend_log WHERE vend_id = ? ORDER BY id",
            (vend_id,))
        return [dict(zip(("at", "state", "outcome", "note"), row, strict=True)) for row in rows]

    # -- writing -----------------------------------------------------------------------------

    def _write(self, sql: str, args: tuple[Any, ...], vend_id: str, state: str,
               outcome: str | None, note: str) -> int:
        """One committed transaction: the row change and its log line together."""
        with self._store.transaction(f"{vend_id} as {state}") as db:
            changed: int = db.execute(sql, args).rowcount
            if changed:
                db.execute("INSERT INTO vend_log (vend_id, at, state, outcome, note) "
                           "VALUES (?,?,?,?,?)", (vend_id, time.time(), state, outcome, note))
        return changed

    def begin(self, vend_id: str, *, board: str, slot: str | int, motor: int,
              drop_sensor: bool, sequence_range: tuple[int, int] | None) -> VendRecord:
        """Journal a new vend as ``intent`` with the next free board sequence number.

        The number and the intent are one transaction: whatever happens next, the retry and
        the reconciliation after a crash use the number the board may already have seen.
        A row of this ``vend_id`` that was ``aborted`` (never sent) is started again.
        """
        now = time.time()
        not_started = ("the vend was not started and nothing was sent to the board; "
                       "free disk space or make it writable")
        with self._store.transaction(vend_id, failed=not_started) as db:
            existing = db.execute("SELECT state FROM vends WHERE vend_id = ?",
                                  (vend_id,)).fetchone()
            if existing is not None and existing[0] != VendState.ABORTED.value:
                raise SequenceError(f"vend {vend_id!r} is already journaled "
                                    f"(state {existing[0]})")
            seq = (None if sequence_range is None
                   else self._next_seq(board, sequence_range))
            values = (vend_id, board, json.dumps(slot), motor, seq, int(drop_sensor),
                      VendState.INTENT.value, None, None, None, None, "", None, now, now)
            db.execute(
                f"INSERT OR REPLACE INTO vends ({', '.join(_COLUMNS)}) VALUES "
                f"({', '.join('?' * len(_COLUMNS))})", values)
            db.execute(
                "INSERT INTO vend_log (vend_id, at, state, outcome, note) VALUES (?,?,?,?,?)",
                (vend_id, now, VendState.INTENT.value, None,
                 f"slot {slot!r} motor {motor} seq {seq}"))
        self._crash_point(VendState.INTENT.value)
        record = self.get(vend_id)
        assert record is not None
        return record

    def _next_seq(self, board: str, sequence_range: tuple[int, int]) -> int:
        """Next number after the board's last one, wrapping, skipping unresolved vends' numbers.

        The last number itself is never handed out twice in a row (FA FB and Easivend boards
        answer a repeat of the last number with the last result instead of vending).
        A fresh journal starts at a random number: the board may remember the last number
        another program used, and a repeat would be taken as a retry, not a new vend.
        """
        low, high = sequence_range
        if high < low:
            raise ConfigurationError(f"bad sequence range {sequence_range!r}")
        size = high - low + 1
        busy = {row[0] for row in self._store.db.execute(
            "SELECT seq FROM vends WHERE board = ? AND seq IS NOT NULL AND "
            "(state IN ('intent', 'sent', 'acknowledged') OR "
            "(outcome = 'unknown' AND COALESCE(resolved_by, '') != 'operator'))", (board,))}
        row = self._store.db.execute("SELECT last FROM sequences WHERE board = ?",
                                     (board,)).fetchone()
        if row is None:
            last, steps = low + secrets.randbelow(size) - 1, range(1, size + 1)
        else:
            # Never the last number again: the board takes a repeat of it as a retry.
            last, steps = int(row[0]), range(1, size)
        for step in steps:
            candidate = low + (last - low + step) % size
            if candidate not in busy:
                self._store.db.execute(
                    "INSERT INTO sequences (board, last) VALUES (?, ?) "
                    "ON CONFLICT (board) DO UPDATE SET last = excluded.last", (board, candidate))
                return candidate
        raise SequenceError(
            f"{board}: no free sequence number in {low}..{high}: the others belong to "
            f"unresolved vends; settle them with Machine.resolve() before vending again")

    def mark(self, vend_id: str, state: VendState, note: str = "") -> None:
        """Move an in-flight vend forward to ``sent`` or ``acknowledged`` (never backward)."""
        if state not in (VendState.SENT, VendState.ACKNOWLEDGED):
            raise ValueError(f"mark() takes sent or acknowledged, not {state.value}")
        lower = [s.value for s in IN_FLIGHT if _RANK[s] < _RANK[state]]
        marks = ", ".join("?" * len(lower))
        changed = self._write(
            f"UPDATE vends SET state = ?, updated_at = ? WHERE vend_id = ? "
            f"AND state IN ({marks})",
            (state.value, time.time(), vend_id, *lower), vend_id, state.value, None, note)
        if changed:
            self._crash_point(state.value)

    def finish(self, vend_id: str, outcome: str, *, raw_code: int | None = None,
               drop_time_ms: int | None = None, duration_ms: int | None = None,
               detail: str = "", resolved_by: str = "board") -> bool:
        """Record the outcome of an in-flight vend; False if it was already finished."""
        changed = self._write(
            "UPDATE vends SET state = 'result', outcome = ?, raw_code = ?, drop_time_ms = ?, "
            "duration_ms = COALESCE(?, duration_ms), detail = ?, resolved_by = ?, "
            "updated_at = ? WHERE vend_id = ? AND state IN ('intent', 'sent', 'acknowledged')",
            (outcome, raw_code, drop_time_ms, duration_ms, detail, resolved_by, time.time(),
             vend_id), vend_id, VendState.RESULT.value, outcome, f"{resolved_by}: {detail}")
        if changed:
            self._crash_point(VendState.RESULT.value)
        return bool(changed)

    def abort(self, vend_id: str, detail: str) -> bool:
        """An ``intent`` that was never written to the wire: the vend can be tried again."""
        changed = self._write(
            "UPDATE vends SET state = 'aborted', detail = ?, updated_at = ? "
            "WHERE vend_id = ? AND state = 'intent'",
            (detail, time.time(), vend_id), vend_id, VendState.ABORTED.value, None, detail)
        return bool(changed)

    def resolve(self, vend_id: str, outcome: str, note: str = "", *,
                by: str = "operator") -> VendRecord:
        """An operator's decision on an ``unknown`` (or stuck in-flight) vend.

        Only unresolved vends can be settled; a board-reported result is never overwritten.
        ``by`` is ``reconcile`` when a later query of the board settled it.
        """
        record = self.get(vend_id)
        if record is None:
            raise ConfigurationError(f"no vend {vend_id!r} in the journal {self.path}")
        if not record.unresolved:
            raise ConfigurationError(
                f"vend {vend_id!r} is already settled ({record.outcome}, by "
                f"{record.resolved_by}); only unknown or in-flight vends can be resolved")
        detail = f"{by}: {note}" if note else f"settled by {by}"
        if record.outcome == UNKNOWN and record.detail:
            detail += f" (was unknown: {record.detail})"
        self._write(
            "UPDATE vends SET state = 'result', outcome = ?, detail = ?, "
            "resolved_by = ?, updated_at = ? WHERE vend_id = ?",
            (outcome, detail, by, time.time(), vend_id), vend_id, VendState.RESULT.value,
            outcome, detail)
        settled = self.get(vend_id)
        assert settled is not None
        return settled

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> VendJournal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["CRASH_ENV", "IN_FLIGHT", "UNKNOWN", "VendJournal", "VendRecord", "VendState",
           "crash_point"]
