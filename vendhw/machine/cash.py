"""Cash on the machine: a crash-safe credit journal and one acceptor for every cash device.

:class:`CashJournal` records every :class:`~vendhw.devices.cash.CashEvent` in SQLite (WAL,
``synchronous=FULL``) keyed by its ``event_id``, *before* the driver acknowledges the event to
the device, so a credit is never lost (a crash before the commit means no ACK, and the device
repeats it) and never counted twice (a repeat finds its ``event_id`` already there). MDB is
the exception: its ACK must come within 5 ms, less than a commit, so the MDB host ACKs first
and journals right after (crash window in ``protocols/mdb/README.md``). The
balance is derived from the journal, and spending it is journaled too, keyed by the order.

:class:`CashAcceptor` polls any mix of devices (ccTalk, SSP, ID-003, MDB) through that journal
without knowing their protocols, and decides escrowed notes by the configured policy.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from vendhw.devices.cash import CashDevice, CashEvent, CashEventKind
from vendhw.errors import ConfigurationError, VendhwError
from vendhw.machine.journal import crash_point
from vendhw.store import DurableStore

log = logging.getLogger(__name__)

ESCROW_TRIES = 3
"""Polls at which a stack/return the device did not confirm is sent again (a command that
was executed with its reply lost is refused harmlessly: there is no note in escrow)."""
POLL_INTERVAL = 0.2
"""Seconds between poll cycles: ccTalk coin acceptors want 200 ms, SSP 200-1000 ms,
ID-003 100-200 ms, MDB 100-200 ms (see each protocol's README)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cash_events (
    event_id TEXT PRIMARY KEY,
    device TEXT NOT NULL,
    kind TEXT NOT NULL,
    value INTEGER NOT NULL,
    currency TEXT NOT NULL,
    channel INTEGER,
    route TEXT,
    reason TEXT,
    detail TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS cash_spent (
    reference TEXT PRIMARY KEY,
    amount INTEGER NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS cash_settled (
    reference TEXT PRIMARY KEY,
    outcome TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS cash_checkpoints (
    device TEXT PRIMARY KEY,
    data TEXT NOT NULL,
    at REAL NOT NULL
);
"""
REFUND_PREFIX = "refund:"
CHANGE_PREFIX = "change:"
SENT_SUFFIX = "#sent"
"""Settled under ``<change reference>#sent`` just before the payout command is sent."""


class InsufficientCredit(VendhwError):
    """A spend larger than the credit the customer has inserted."""


class CashJournal:
    """SQLite journal of cash events and spends; every write is committed before it returns."""

    def __init__(self, path: str | Path) -> None:
        self._store = DurableStore(path, name="cash journal", schema=_SCHEMA)
        self.path = self._store.path

    def record(self, event: CashEvent) -> bool:
        """Journal ``event``; False when its ``event_id`` was already journaled (a repeat)."""
        if not event.event_id:
            raise ValueError(f"cash event without event_id from {event.device}")
        with self._store.writing(f"{event.kind.value} {event.event_id}") as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO cash_events VALUES (?,?,?,?,?,?,?,?,?,?)",
                (event.event_id, event.device, event.kind.value, event.value, event.currency,
                 event.channel, event.route, event.reason, json.dumps(event.detail),
                 time.time()),
            )
            return cur.rowcount == 1

    def save_checkpoint(self, device: str, data: dict[str, Any]) -> None:
        """Store a device driver's checkpoint (after a poll it acknowledged)."""
        self._store.write("INSERT INTO cash_checkpoints VALUES (?,?,?) ON CONFLICT(device) DO "
                          "UPDATE SET data = excluded.data, at = excluded.at",
                          (device, json.dumps(data, sort_keys=True), time.time()),
                          what=f"the checkpoint of {device}")

    def checkpoint(self, device: str) -> dict[str, Any] | None:
        """The last stored checkpoint of ``device`` (its driver's ``name``), or None."""
        row = self._store.row("SELECT data FROM cash_checkpoints WHERE device = ?", (device,))
        return None if row is None else dict(json.loads(row[0]))

    def credited(self) -> int:
        """Every credit ever journaled, in minor units."""
        [(total,)] = self._store.rows(
            "SELECT COALESCE(SUM(value), 0) FROM cash_events WHERE kind = ?",
            (CashEventKind.CREDIT.value,))
        return int(total)

    def spent(self) -> int:
        [(total,)] = self._store.rows("SELECT COALESCE(SUM(amount), 0) FROM cash_spent")
        return int(total)

    def balance(self) -> int:
        """Credit the customer still has: credited minus spent (and minus change paid)."""
        return self.credited() - self.spent()

    def spend(self, amount: int, reference: str) -> bool:
        """Take ``amount`` from the balance for ``reference`` (an order); idempotent.

        Returns False when ``reference`` was already spent (a retry), raises
        :class:`InsufficientCredit` when the balance is short.
        """
        if amount < 0:
            raise ValueError("amount must not be negative")
        with self._store.transaction(f"the spend {reference}") as db:
            if db.execute("SELECT 1 FROM cash_spent WHERE reference = ?",
                          (reference,)).fetchone():
                return False
            (credited,) = db.execute(
                "SELECT COALESCE(SUM(value), 0) FROM cash_events WHERE kind = ?",
                (CashEventKind.CREDIT.value,)).fetchone()
            (spent,) = db.execute("SELECT COALESCE(SUM(amount), 0) FROM cash_spent").fetchone()
            if credited - spent < amount:
                raise InsufficientCredit(
                    f"balance {credited - spent} is less than {amount} for {reference}")
            db.execute("INSERT INTO cash_spent VALUES (?,?,?)", (reference, amount, time.time()))
        crash_point("cash:spent")
        return True

    def refund(self, reference: str) -> bool:
        """Give the amount spent under ``reference`` back to the balance; idempotent.

        Used when what the money bought could not be delivered (a jammed vend): the credit
        is the customer's again, to buy something else or to take back as change.
        """
        with self._store.writing(f"the refund of {reference}") as db:
            row = db.execute("SELECT amount FROM cash_spent WHERE reference = ?",
                                   (reference,)).fetchone()
            if row is None:
                raise ValueError(f"nothing was spent under {reference!r}")
            cur = db.execute("INSERT OR IGNORE INTO cash_spent VALUES (?,?,?)",
                             (REFUND_PREFIX + reference, -int(row[0]), time.time()))
            return cur.rowcount == 1

    def settle(self, reference: str, outcome: str) -> None:
        """Record what became of a spend (``delivered``, ``jammed``...); first record wins."""
        self._store.write("INSERT OR IGNORE INTO cash_settled VALUES (?,?,?)",
                          (reference, outcome, time.time()), what=f"the outcome of {reference}")
        crash_point("cash:settled")

    def settled(self, reference: str) -> str | None:
        row = self._store.row("SELECT outcome FROM cash_settled WHERE reference = ?",
                              (reference,))
        return None if row is None else str(row[0])

    def unsettled(self, prefix: str = "") -> list[tuple[str, int]]:
        """Spends under ``prefix`` with no outcome yet (a crash between spend and settle)."""
        rows = self._store.rows(
            "SELECT s.reference, s.amount FROM cash_spent s LEFT JOIN cash_settled t "
            "ON t.reference = s.reference WHERE t.reference IS NULL AND s.amount > 0 "
            "AND s.reference LIKE ? ORDER BY s.rowid", (prefix + "%",))
        return [(str(r[0]), int(r[1])) for r in rows]

    def events(self, limit: int = 100) -> list[dict[str, Any]]:
        """The latest journaled events, newest first (for operators)."""
        rows = self._store.rows(
            "SELECT event_id, device, kind, value, currency, route, reason, at "
            "FROM cash_events ORDER BY rowid DESC LIMIT ?", (limit,))
        keys = ("event_id", "device", "kind", "value", "currency", "route", "reason", "at")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def close(self) -> None:
        self._store.close()


EscrowPolicy = Callable[[CashEvent], bool]
"""Decides a note held in escrow: True stacks it, False returns it."""


def accept_all(event: CashEvent) -> bool:
    return True


class CashAcceptor:
    """Accept money from any cash devices, journaling every event before it is acknowledged.

    ``listeners`` get every new (non-repeated) event after it is journaled; use them to update
    a screen. Run :meth:`poll_once` from your own loop, or :meth:`start` a poller thread.

    A device whose port goes away (a USB adapter unplugged) is taken offline: it is no longer
    polled, and what it credited stays journaled. :meth:`reopen` brings it back through
    ``openers[device name]`` (a new driver on the port found again), resumed from its
    checkpoint so an event it repeats keeps its id and is counted once.
    """

    def __init__(self, devices: Iterable[CashDevice], journal: CashJournal, *,
                 escrow_policy: EscrowPolicy = accept_all,
                 poll_interval: float = POLL_INTERVAL,
                 openers: Mapping[str, Callable[[], CashDevice]] | None = None) -> None:
        self.devices = list(devices)
        self.openers: dict[str, Callable[[], CashDevice]] = dict(openers or {})
        """Device name -> a function opening a new driver for it (its port found again)."""
        self.offline: dict[str, str] = {}
        """Devices whose port went away, and why; not polled until :meth:`reopen`."""
        self.state_listeners: list[Callable[[str, bool, str], None]] = []
        """Called with ``(device name, online, why)`` when a device's port goes away and
        when :meth:`reopen` brought it back (the agent's reconnect loop waits on it)."""
        self._lock = threading.RLock()
        """One poll, enable or reopen at a time (the poller and the reconnect loop)."""
        self.journal = journal
        self.escrow_policy = escrow_policy
        self.poll_interval = poll_interval
        self.listeners: list[Callable[[CashEvent], None]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._credit = threading.Condition()
        self._saved: dict[str, dict[str, Any]] = {}
        self._enabled = False
        self._fresh: set[str] = set()
        self._undecided: dict[str, list[list[Any]]] = {}
        """Escrowed notes whose stack/return the device did not confirm: [event, tries]."""
        """Event ids journaled for the first time in this poll (a repeat is not news)."""
        for device in self.devices:
            self._resume(device)

    def _resume(self, device: CashDevice) -> None:
        """Give ``device`` the checkpoint its driver left in the journal before a restart, so
        an event journaled just before a crash (and repeated by the device because its
        acknowledgement never left) keeps its ``event_id`` and is not credited again."""
        if device.checkpoint() is None:
            return  # a driver without state to resume
        saved = self.journal.checkpoint(device.name)
        if saved is not None:
            self._saved[device.name] = saved
        for former in device.former_names if saved is None else ():
            saved = self.journal.checkpoint(former)
            if saved is not None:  # not in _saved: the next save writes it under the name
                log.warning("%s: resuming from the checkpoint stored under its former name "
                            "%s (saved under the new name from now on)", device.name, former)
                break
        if saved is None:
            return
        device.restore(saved)
        log.info("%s: resumed from the cash journal's checkpoint %s", device.name, saved)

    def start_devices(self, *, offline_ok: bool = False) -> None:
        """Start every device (call once, before :meth:`enable`). What a resumed device still
        held from before the restart (an ID-003 VEND VALID, MDB data never ACKed) is
        journaled before the reset that drops it. A start that fails raises; with
        ``offline_ok`` a device that has an opener is left **offline** instead (its port
        silent or pulled during the start: :meth:`reopen` tries again), so one bad device
        does not stop the machine. A configuration error always raises."""
        with self._lock:
            for device in self.devices:
                if device.name in self.offline:
                    continue
                try:
                    self._start(device)
                except ConfigurationError:
                    raise
                except VendhwError as exc:
                    if not offline_ok or device.name not in self.openers:
                        raise
                    why = f"start failed: {exc}"
                    self.offline[device.name] = why
                    log.warning("%s: cash device offline, %s (retried by reopening it)",
                                device.name, why)
                    self._tell_state(device.name, False, why)

    def _start(self, device: CashDevice) -> None:
        """``device.start`` with this journal as its sink, then its checkpoint saved (also
        when the start failed: what it delivered and what it left unsure are kept)."""
        try:
            device.start(functools.partial(self._sink, device=device))
        except BaseException:
            self._keep_checkpoint(device)
            raise
        finally:
            self._fresh.clear()  # events journaled at start are no escrow to decide
        self._save_checkpoint(device)

    def _keep_checkpoint(self, device: CashDevice) -> None:
        """After a failed start or poll: save what the driver knows now (an SSP EVENT ACK
        it is unsure of, an MDB RESET that may not have dropped what it held); a failing
        journal is logged, the caller raises its own error."""
        try:
            self._save_checkpoint(device)
        except VendhwError as journal:
            log.warning("%s: checkpoint not saved: %s", device.name, journal)

    def _save_checkpoint(self, device: CashDevice) -> None:
        """After a poll (its acknowledgements sent): store the driver's counters if they
        moved, so a restart continues from them."""
        data = device.checkpoint()
        if data is not None and self._saved.get(device.name) != data:
            self.journal.save_checkpoint(device.name, data)
            self._saved[device.name] = data

    def _sink(self, event: CashEvent, device: CashDevice | None = None) -> None:
        if device is not None:
            # The driver's counters as this event is delivered, committed before the event:
            # they name it (and its repeat, if the device never hears the acknowledgement).
            self._save_checkpoint(device)
        if self.journal.record(event):
            self._fresh.add(event.event_id)
            for listener in self.listeners:
                try:
                    listener(event)
                except Exception:  # a screen bug must not stop the money path
                    log.exception("cash listener failed on %s", event)
            if event.kind is CashEventKind.CREDIT:
                with self._credit:
                    self._credit.notify_all()

    def poll_once(self) -> list[CashEvent]:
        """One poll of every device; escrowed notes are decided by the policy."""
        with self._lock:
            return self._poll_all()

    def _poll_all(self) -> list[CashEvent]:
        seen: list[CashEvent] = []
        for device in list(self.devices):
            if device.name in self.offline:
                continue
            try:
                events = device.poll(functools.partial(self._sink, device=device))
            except VendhwError as exc:
                if not self._went_away(device):
                    log.warning("%s: poll failed: %s", device.name, exc)
                # A poll cut short may have left the driver unsure of what the device heard
                # (an SSP EVENT ACK): keep that for a restart or a reopen.
                self._keep_checkpoint(device)
                continue
            self._save_checkpoint(device)
            if self._enabled and any(e.kind is CashEventKind.DEVICE_RESET for e in events):
                # A reset device is inhibited again: take money again, as before the glitch
                # (drivers that restore their own state make this a repeat, which is harmless).
                try:
                    device.enable()
                except VendhwError as exc:
                    if not self._went_away(device):
                        log.warning("%s: enabling again after its reset failed: %s (next "
                                    "poll)", device.name, exc)
            seen += events
            fresh, self._fresh = self._fresh, set()
            # A repeated escrow (the device did not hear our ACK) was decided already:
            # deciding it again could stack the next customer's note unasked. A decision
            # the device did not confirm is tried again at the next polls.
            undecided = self._undecided.pop(device.name, [])
            undecided += [[e, 0] for e in events
                          if e.kind is CashEventKind.ESCROW and e.event_id in fresh]
            for item in undecided:
                event, tries = item
                decide = device.stack if self.escrow_policy(event) else device.reject
                try:
                    decide()
                except VendhwError as exc:
                    if self._went_away(device):
                        break
                    if tries + 1 < ESCROW_TRIES:
                        item[1] = tries + 1
                        self._undecided.setdefault(device.name, []).append(item)
                    log.warning("%s: %s of the escrowed note %s failed (%d/%d): %s",
                                device.name, decide.__name__, event.event_id, tries + 1,
                                ESCROW_TRIES, exc)
        return seen

    def enable(self) -> None:
        with self._lock:
            self._enabled = True
            for device in self.devices:
                if device.name not in self.offline:
                    self._guarded(device, device.enable)

    def disable(self) -> None:
        with self._lock:
            self._enabled = False
            for device in self.devices:
                if device.name not in self.offline:
                    self._guarded(device, device.disable)

    def _guarded(self, device: CashDevice, action: Callable[[], None]) -> None:
        """Run ``action``; a port that went away takes the device offline instead of
        failing the call (any other error is raised as before)."""
        try:
            action()
        except VendhwError:
            if not self._went_away(device):
                raise

    # -- a port going away and coming back ------------------------------------------------

    def _went_away(self, device: CashDevice) -> bool:
        """True (and the device offline) when its port is gone, not just silent."""
        lost = device.port_lost()
        if lost is None:
            return False
        if device.name not in self.offline:
            self.offline[device.name] = str(lost)
            dropped = self._undecided.pop(device.name, [])
            log.warning("%s: cash device offline, its port went away: %s (credit journaled so "
                        "far is kept%s)", device.name, lost,
                        f"; {len(dropped)} escrow decision(s) dropped: the device decides a "
                        "note it holds by itself" if dropped else "")
            self._tell_state(device.name, False, str(lost))
        return True

    def _tell_state(self, name: str, online: bool, why: str) -> None:
        for listener in list(self.state_listeners):
            try:
                listener(name, online, why)
            except Exception:  # a listener's bug must not stop the money path
                log.exception("cash state listener failed on %s", name)

    def reopen(self, name: str) -> CashDevice:
        """Open the device ``name`` again with its opener (its port found again, perhaps at
        another path), resume it from the journal's checkpoint, start it and, if the
        acceptor was taking money, enable it. Raises the open's error and stays offline."""
        opener = self.openers.get(name)
        if opener is None:
            raise ConfigurationError(f"cash device {name!r} has no opener to reopen it with "
                                     "(CashAcceptor(..., openers={name: ...}))")
        with self._lock:
            index = next((i for i, d in enumerate(self.devices) if d.name == name), None)
            if index is None:
                raise ConfigurationError(f"no cash device {name!r} here")
            try:
                self.devices[index].close()
            except Exception as exc:  # the old port is gone anyway
                log.info("%s: closing the lost port: %s", name, exc)
            device = opener()
            if device.name != name:
                device.close()
                raise ConfigurationError(f"the opener of {name!r} opened {device.name!r}")
            self._bring_up(device)
            self.devices[index] = device
            was = self.offline.pop(name, None)
        if was is not None:
            log.warning("%s: cash device back online", name)
            self._tell_state(name, True, "reopened")
        return device

    def _bring_up(self, device: CashDevice) -> None:
        """A newly opened driver: resumed from the journal's checkpoint, started through the
        journal's sink (held credits journaled before its reset) and, if the acceptor is
        taking money, enabled; closed again if any of that fails."""
        try:
            self._resume(device)
            self._start(device)
            if self._enabled:
                device.enable()
        except BaseException:
            device.close()
            raise

    def add(self, device: CashDevice, opener: Callable[[], CashDevice] | None = None) -> None:
        """Take on a device opened after this acceptor was made (its port was missing then):
        resumed from the journal's checkpoint, started and, if the acceptor is taking money,
        enabled; ``opener`` reopens it after an unplug. Raises the start's error with the
        device closed and not added."""
        with self._lock:
            if any(d.name == device.name for d in self.devices):
                device.close()
                raise ConfigurationError(f"cash device {device.name!r} is here already")
            self._bring_up(device)
            self.devices.append(device)
            if opener is not None:
                self.openers[device.name] = opener
        log.warning("%s: cash device online", device.name)
        self._tell_state(device.name, True, "opened")

    def wait_for_balance(self, amount: int, timeout: float) -> bool:
        """Block until the balance reaches ``amount`` or ``timeout`` passes (poller running)."""
        deadline = time.monotonic() + timeout
        with self._credit:
            while self.journal.balance() < amount:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._credit.wait(remaining)
        return True

    def give_change(self, device: CashDevice, reference: str) -> int:
        """Pay the remaining balance back with ``device``; journaled before any coin moves.

        The spend is recorded first under ``change:<reference>``, so a retry never pays twice;
        what the device really paid arrives as payout events (an incomplete payout is for an
        operator to settle, never retried blindly).
        """
        amount = self.journal.balance()
        if amount <= 0:
            return 0
        key = f"{CHANGE_PREFIX}{reference}"
        if self.journal.spend(amount, key):
            # Marked before the command: after a crash, a change spend without this mark was
            # never paid (its credit is given back), one with it may have been (an operator).
            self.journal.settle(key + SENT_SUFFIX, "sent")
            crash_point("cash:payout-sent")
            device.payout(amount)
            self.journal.settle(key, "paid")
        return amount

    def recover_change(self) -> list[tuple[str, int, str]]:
        """After a crash: settle change payouts it interrupted, never paying twice.

        Returns ``(reference, amount, outcome)``: ``not_started`` (the credit is the
        customer's again) or ``unknown`` (the payout command may have left: an operator
        counts the coins; the amount stays spent)."""
        done = []
        for reference, amount in self.journal.unsettled(CHANGE_PREFIX):
            if reference.endswith(SENT_SUFFIX):
                continue
            if self.journal.settled(reference + SENT_SUFFIX) is None:
                self.journal.refund(reference)
                self.journal.settle(reference, "not_started")
                done.append((reference, amount, "not_started"))
            else:
                self.journal.settle(reference, "unknown")
                log.error("change payout %s of %d was interrupted after its command: check "
                          "the payout device's counters (not paid again)", reference, amount)
                done.append((reference, amount, "unknown"))
        return done

    def start(self) -> None:
        """Poll every device from a background thread until :meth:`stop`."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="cash-poller", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll_once()
            self._stop.wait(self.poll_interval)  # the protocols' poll period, not a byte wait

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
