"""Machine: dispense a product through a motor board, with every vend journaled first.

The Machine is the one place where a slot becomes a motor turn. It holds no protocol code:
the board driver (:mod:`vendhw.devices.boards`, chosen by the profile) speaks the wire, the
:class:`~vendhw.machine.journal.VendJournal` remembers. The order of a vend is fixed:

1. the slot is mapped to a motor by the profile (an unknown slot fails here, nothing moves);
2. the intent, with the board sequence number, is committed to the journal;
3. the driver sends the command (the journal records ``sent``, then ``acknowledged``);
4. the board's report is committed as the result.

A crash between any two steps leaves an in-flight row; the next Machine on that journal asks
the board what became of it (where the protocol can tell) or records ``unknown``. Nothing is
ever sent again for a journaled vend, so a crash cannot make the same vend happen twice.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vendhw.devices.boards import (
    Board,
    BoardProfile,
    Outcome,
    VendReport,
    load_profile,
    open_board,
)
from vendhw.errors import (
    ConfigurationError,
    DisconnectedError,
    NoResponseError,
    NotSupportedError,
    ProtocolError,
    VendhwError,
)
from vendhw.machine.journal import VendJournal, VendRecord, VendState
from vendhw.transport import check_url
from vendhw.transport.base import Transport

if TYPE_CHECKING:
    from vendhw.machine.cash import CashJournal

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DispenseResult:
    """What became of one ``dispense`` call."""

    outcome: Outcome
    slot: str | int
    """The slot as it was asked for."""
    motor: int
    """The board's own slot (motor) number the slot mapped to."""
    vend_id: str
    raw_code: int | None = None
    """The board's own result/status code."""
    drop_time_ms: int | None = None
    """How long the product took through the drop sensor, where the board reports it."""
    duration_ms: int | None = None
    """From the command to the board's final report (host clock)."""
    detail: str = ""
    seq: int | None = None
    """The board sequence number used (PackNO, SN), ``None`` when the protocol has none."""
    slot_label: str = ""
    """The slot as the operator sees it (tray-column, lift floor)."""
    replayed: bool = False
    """True when this comes from the journal (the ``vend_id`` was seen before): no vend."""
    resolved_by: str | None = None

    @property
    def delivered(self) -> bool:
        return self.outcome is Outcome.DELIVERED

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (the last line of ``vendhw dispense --json``)."""
        return {
            "outcome": self.outcome.value, "slot": self.slot, "slot_label": self.slot_label,
            "motor": self.motor, "vend_id": self.vend_id, "raw_code": self.raw_code,
            "drop_time_ms": self.drop_time_ms, "duration_ms": self.duration_ms,
            "detail": self.detail, "seq": self.seq, "replayed": self.replayed,
            "resolved_by": self.resolved_by,
        }

    @classmethod
    def from_record(cls, record: VendRecord, label: str = "", *,
                    replayed: bool = True) -> DispenseResult:
        """The result a journaled vend stands for; an unfinished one reads as ``unknown``."""
        if record.state is VendState.RESULT and record.outcome is not None:
            outcome = Outcome(record.outcome)
            detail = record.detail
        else:
            outcome = Outcome.UNKNOWN
            detail = (f"vend is {record.state.value} in the journal and is not sent again"
                      + (f"; {record.detail}" if record.detail else ""))
        return cls(outcome=outcome, slot=record.slot, motor=record.motor,
                   vend_id=record.vend_id, raw_code=record.raw_code,
                   drop_time_ms=record.drop_time_ms, duration_ms=record.duration_ms,
                   detail=detail, seq=record.seq, slot_label=label, replayed=replayed,
                   resolved_by=record.resolved_by)


class _AbsentPort(Transport):
    """The transport of a board whose port could not be opened: nothing to read or write."""

    def __init__(self, url: str, why: str) -> None:
        super().__init__(url, trace=False)
        self.why = why

    def _read_some(self, timeout: float) -> bytes:
        raise DisconnectedError(f"{self.url}: not open ({self.why})")

    def _write(self, data: bytes) -> None:
        raise DisconnectedError(f"{self.url}: not open ({self.why})")

    def _close(self) -> None:
        pass


class AbsentBoard(Board):
    """Stands in for a board whose port could not be opened (a Machine made with
    ``offline_ok``): it has the profile and the URL, and refuses everything else. The
    Machine is offline while it holds one, so nothing reaches it."""

    family = "absent"

    def __init__(self, profile: BoardProfile, url: str, why: str) -> None:
        super().__init__(profile, _AbsentPort(url, why))
        self.why = why

    def _refuse(self) -> DisconnectedError:
        return DisconnectedError(f"board {self.profile.name!r} is not open: {self.why}")

    def vend(self, motor: int, seq: int | None, *, drop_sensor: bool = True,
             on_sent: Callable[[], None] | None = None,
             on_ack: Callable[[], None] | None = None) -> VendReport:
        raise self._refuse()

    def query_vend(self, motor: int, seq: int) -> VendReport | None:
        raise self._refuse()

    def status(self) -> dict[str, Any]:
        raise self._refuse()

    def selftest(self) -> dict[str, Any]:
        raise self._refuse()

    def probe(self) -> None:
        raise self._refuse()

    def check_port(self) -> None:
        pass


class Machine:
    """A vending machine's motor board behind one crash-safe ``dispense``.

    :param profile: a board profile name (``vendhw board profiles``) or a loaded profile.
    :param url: the board's transport: a serial port, ``sim://<profile>``, a pyserial URL.
    :param journal: the SQLite journal file (or a :class:`VendJournal`). Without one the
        journal lives in memory: ``vend_id`` idempotency holds for this object only and a crash
        forgets everything; give a path in production.
    :param offline_ok: when the board cannot be opened now for a reason a reconnect may cure
        (its port missing, e.g. a USB adapter not enumerated yet, busy, or the board silent:
        any error but a :class:`~vendhw.errors.ConfigurationError`), start **offline** with
        that reason instead of raising; :meth:`reopen` brings it up. Vends a previous run
        left in flight are then settled ``unknown`` (the board cannot be asked), never sent
        again. A wrong profile or a URL that can never open still raises.
    :param transport_options: passed to the transport (``baudrate=``, ``trace=True``...).

    Opening reconciles vends a previous run left in flight (see :meth:`reconcile`).
    Methods are thread-safe (one board command at a time); for asyncio use
    :class:`vendhw.machine.aio.AsyncMachine`.
    """

    board: Board
    profile: BoardProfile
    journal: VendJournal

    def __init__(self, profile: str | BoardProfile, url: str, *,
                 journal: str | Path | VendJournal | None = None, offline_ok: bool = False,
                 **transport_options: Any) -> None:
        own_journal = not isinstance(journal, VendJournal)
        vend_journal = journal if isinstance(journal, VendJournal) else VendJournal(journal)
        missing: str | None = None
        try:
            prof = profile if isinstance(profile, BoardProfile) else load_profile(profile)
            if offline_ok:
                check_url(url)  # a URL no waiting can fix fails now, not forever later
            try:
                board: Board = open_board(prof, url, **transport_options)
            except ConfigurationError:
                raise
            except VendhwError as exc:
                if not offline_ok:
                    raise
                missing = f"{type(exc).__name__}: {exc}"
                board = AbsentBoard(prof, url, missing)
        except BaseException:
            if own_journal:
                vend_journal.close()
            raise
        self._setup(board, vend_journal, own_journal=own_journal,
                    opener=lambda: open_board(prof, url, **transport_options), offline=missing)

    @classmethod
    def from_board(cls, board: Board, *, journal: str | Path | VendJournal | None = None,
                   opener: Callable[[], Board] | None = None) -> Machine:
        """A Machine on a board driver you opened yourself (a custom transport, a test).

        ``opener`` opens the board again for :meth:`reopen` (after its port went away)."""
        machine = cls.__new__(cls)
        own_journal = not isinstance(journal, VendJournal)
        vend_journal = journal if isinstance(journal, VendJournal) else VendJournal(journal)
        machine._setup(board, vend_journal, own_journal=own_journal, opener=opener)
        return machine

    def _setup(self, board: Board, journal: VendJournal, *, own_journal: bool,
               opener: Callable[[], Board] | None = None, offline: str | None = None) -> None:
        self.board = board
        self.profile = board.profile
        self.journal = journal
        self._own_journal = own_journal
        self._opener = opener
        self._lock = threading.RLock()
        self._closed = False
        self._offline: str | None = offline
        if offline is not None:
            log.warning("%s: board offline, its port could not be opened: %s (reopen() "
                        "brings it up)", self.name, offline)
        self.listeners: list[Callable[[DispenseResult], None]] = []
        """Called with the result of every vend this object carries out (not replays), after
        it is journaled (the agent marks a slot the board found empty as sold out)."""
        self.state_listeners: list[Callable[[bool, str], None]] = []
        """Called with ``(online, why)`` when the board's port goes away (``False``) and when
        :meth:`reopen` brought it back (``True``): the agent's reconnect loop waits on it."""
        try:
            self.reconcile()
        except BaseException:
            self.close()
            raise

    # -- properties ------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The profile name: the key of this board's rows and sequence numbers in the journal."""
        return self.profile.name

    @property
    def url(self) -> str:
        return str(getattr(self.board.transport, "url", ""))

    @property
    def online(self) -> bool:
        """False from the moment the board's port went away until :meth:`reopen` succeeds."""
        return self._offline is None

    @property
    def offline_reason(self) -> str | None:
        """Why the board is offline (the transport's error), None while online."""
        return self._offline

    # -- the port going away and coming back -----------------------------------------------

    def _check_port(self) -> None:
        """Mark the board offline when its transport found the device gone (an unplugged
        USB adapter, a closed pty), whatever the driver made of the error. The transport's
        own record decides, not the exception: a driver may report the loss as silence."""
        lost = getattr(self.board.transport, "lost", None)
        if lost is not None and self._offline is None:
            self._set_offline(str(lost))

    def _set_offline(self, why: str) -> None:
        self._offline = why
        log.warning("%s: board offline, its port went away: %s", self.name, why)
        self._tell_state(False, why)

    def _tell_state(self, online: bool, why: str) -> None:
        for listener in list(self.state_listeners):
            try:
                listener(online, why)
            except Exception:  # a listener's bug must not change the board's state
                log.exception("%s: state listener failed", self.name)

    def _refuse_offline(self) -> None:
        if self._offline is not None:
            raise DisconnectedError(
                f"board {self.name!r} is offline (its port went away: {self._offline}); "
                "nothing was sent. It is back after reopen() finds the port again")

    def check_port(self) -> bool:
        """Look at the board's port without sending anything; False once it went away.

        Why: the agent's watch notices an adapter pulled out while the machine is idle, so
        the screen goes out of service before a customer pays, not at the next vend. Waits
        for a vend in progress to end (one board command at a time)."""
        self._check_open()
        with self._lock:
            if self._offline is None:
                try:
                    self.board.check_port()
                except VendhwError as exc:  # a driver's own check failing is not a loss
                    log.debug("%s: port check: %s", self.name, exc)
                self._check_port()
            return self._offline is None

    def reopen(self) -> None:
        """Open the board again through its URL (a ``usb-serial://`` identity is resolved
        again, so an adapter plugged back at another path is found) and go back online.

        Vends that were in flight when the port went away stay as they were journaled
        (``unknown``): nothing is sent again. Raises the open's error (the port is still
        missing, the board silent) and stays offline; :class:`ConfigurationError` when this
        Machine was made from a board without an ``opener``.
        """
        self._check_open()
        if self._opener is None:
            raise ConfigurationError(
                f"machine {self.name!r} cannot reopen its board: it was made from an open "
                "board without an opener (Machine.from_board(..., opener=...))")
        with self._lock:
            try:
                self.board.close()
            except Exception as exc:  # the old port is gone anyway
                log.info("%s: closing the lost port: %s", self.name, exc)
            try:
                board = self._opener()
            except BaseException as exc:
                if self._offline is None:  # a reopen asked while online: the port is closed
                    self._set_offline(f"reopen failed: {type(exc).__name__}: {exc}")
                raise
            if board.profile.name != self.name:
                board.close()
                raise ConfigurationError(f"reopened board is {board.profile.name!r}, not "
                                         f"{self.name!r}")
            self.board = board
            was = self._offline
            self._offline = None
            self.reconcile()
        if was is not None:
            log.warning("%s: board back online on %s", self.name, self.url)
            self._tell_state(True, f"reopened on {self.url}")

    def _label(self, motor: int) -> str:
        try:
            return self.profile.slot_label(motor)
        except VendhwError:
            return str(motor)

    # -- dispensing ---------------------------------------------------------------------------

    def dispense(self, slot: str | int, vend_id: str | None = None, *,
                 drop_sensor: bool | None = None) -> DispenseResult:
        """Vend one product from ``slot`` and say what happened.

        ``slot`` is an operator label from the profile (``"3-5"``, ``"L2-04"``) or the board's
        own number 1..N. ``vend_id`` makes the call idempotent: a ``vend_id`` already in the
        journal returns its recorded result (``replayed=True``) and never vends again; without
        one a fresh id is generated (read it from the result). ``drop_sensor`` defaults to the
        profile's capability.

        Board outcomes (empty, jammed, ...) are returned, not raised. Raises
        :class:`~vendhw.errors.ConfigurationError` for an unknown slot (before anything is
        journaled or sent) and :class:`~vendhw.errors.NoResponseError` when the board was
        silent before the command was ever written (the vend is then marked ``aborted`` and
        may be tried again with the same ``vend_id``).
        """
        self._check_open()
        motor = self._motor(slot)
        if drop_sensor is None:
            drop_sensor = self.profile.supports("drop_sensor")
        elif drop_sensor and not self.profile.supports("drop_sensor"):
            raise NotSupportedError(
                f"board profile {self.name!r} has no drop sensor; dispense with "
                "drop_sensor=False (or None for the profile's default)")
        vend_id = vend_id or uuid.uuid4().hex
        with self._lock:
            previous = self.journal.get(vend_id)
            if previous is not None and previous.state is not VendState.ABORTED:
                return self._replay(previous, slot, motor)
            self._refuse_offline()
            record = self.journal.begin(vend_id, board=self.name, slot=slot, motor=motor,
                                        drop_sensor=drop_sensor,
                                        sequence_range=self.board.sequence_range)
            result = self._vend(record, drop_sensor)
        for listener in list(self.listeners):
            try:
                listener(result)
            except Exception:  # a listener's bug must not change what the vend returns
                log.exception("%s: vend listener failed on %s", self.name, vend_id)
        return result

    def sell_for_cash(self, slot: str | int, price: int, cash: CashJournal, *,
                      reference: str | None = None) -> DispenseResult:
        """Sell ``slot`` for ``price`` from the customer's cash credit, whatever protocol the
        cash devices speak (their events reach ``cash`` through the cash-event API).

        The spend is journaled before the vend and its ``reference`` is the ``vend_id``, so
        calling again with the same reference (after a crash) replays, never vends twice
        and never spends twice. A definite failure (empty, jammed...) gives the credit back;
        ``unknown`` keeps it spent, for an operator. Raises
        :class:`~vendhw.machine.cash.InsufficientCredit` when the credit is short.
        """
        reference = reference or f"sale:{slot}:{uuid.uuid4().hex[:16]}"
        cash.spend(price, reference)
        result = self.dispense(slot, vend_id=reference)
        if result.outcome not in (Outcome.DELIVERED, Outcome.UNKNOWN):
            cash.refund(reference)
        cash.settle(reference, result.outcome.value)
        return result

    def _motor(self, slot: str | int) -> int:
        """The profile's mapping, with any odd input turned into a ConfigurationError."""
        try:
            return self.profile.slot_to_motor(slot)
        except (ValueError, TypeError) as exc:  # e.g. "¹": str.isdigit() but not int()
            raise ConfigurationError(
                f"slot {slot!r} is not a slot of board profile {self.name!r} ({exc})") from None

    def _replay(self, record: VendRecord, slot: str | int, motor: int) -> DispenseResult:
        if record.board == self.name and record.motor != motor:
            raise ConfigurationError(
                f"vend_id {record.vend_id!r} was used for slot {record.slot!r} (motor "
                f"{record.motor}), not slot {slot!r} (motor {motor}); use a new vend_id")
        log.info("%s: vend %s already journaled (%s, %s): not vending again", self.name,
                 record.vend_id, record.state.value, record.outcome)
        return DispenseResult.from_record(record, self._label(record.motor))

    def _vend(self, record: VendRecord, drop_sensor: bool) -> DispenseResult:
        vend_id = record.vend_id
        started = time.monotonic()

        def on_sent() -> None:
            self.journal.mark(vend_id, VendState.SENT)

        def on_ack() -> None:
            self.journal.mark(vend_id, VendState.ACKNOWLEDGED)

        try:
            report = self.board.vend(record.motor, record.seq, drop_sensor=drop_sensor,
                                     on_sent=on_sent, on_ack=on_ack)
        except (NoResponseError, ConfigurationError, DisconnectedError) as exc:
            self._check_port()
            current = self.journal.get(vend_id)
            if current is not None and current.state is VendState.INTENT:
                # The driver's contract: these mean nothing of the vend was ever written
                # (a silent board; a motor or sequence number the driver refuses; the port
                # gone before the vend command was whole on the wire: ``on_sent`` runs
                # right after its write returned, so a half-written frame, which no board
                # executes, is the most that can have left).
                self.journal.abort(vend_id, f"not sent: {type(exc).__name__}: {exc}")
                raise
            self._finish_unknown(vend_id, started, (
                f"the board's port went away after the command was sent "
                f"({type(exc).__name__}: {exc})" if isinstance(exc, DisconnectedError)
                else f"link lost after the command was sent: {exc}"))
            return self._result(vend_id)
        except BaseException as exc:
            # Anything else may have reached the board: never guess "not vended".
            self._check_port()
            self._finish_unknown(vend_id, started,
                                 f"vend interrupted ({type(exc).__name__}: {exc})")
            if isinstance(exc, VendhwError):
                return self._result(vend_id)
            raise
        duration_ms = round((time.monotonic() - started) * 1000)
        self._check_port()
        if report.outcome is Outcome.UNKNOWN and record.seq is not None and self.online:
            report = self._ask_again(record, report)
        self.journal.finish(vend_id, report.outcome.value, raw_code=report.raw_code,
                            drop_time_ms=report.drop_time_ms, duration_ms=duration_ms,
                            detail=report.detail,
                            resolved_by="board" if report.outcome is not Outcome.UNKNOWN
                            else "host")
        result = self._result(vend_id, replayed=False)
        log.info("%s: vend %s slot %r motor %d seq %s -> %s in %d ms %s", self.name, vend_id,
                 record.slot, record.motor, record.seq, result.outcome.value, duration_ms,
                 result.detail)
        return result

    def _ask_again(self, record: VendRecord, report: VendReport) -> VendReport:
        """The driver lost track of a vend: ask the board about it once by its number."""
        assert record.seq is not None
        try:
            answer = self.board.query_vend(record.motor, record.seq)
        except VendhwError as exc:
            log.warning("%s: query of vend %s after an unknown result failed: %s", self.name,
                        record.vend_id, exc)
            return report
        if answer is None or answer.outcome is Outcome.UNKNOWN:
            return report
        return VendReport(answer.outcome, answer.raw_code, answer.drop_time_ms,
                          f"{answer.detail} (asked the board by seq {record.seq} after: "
                          f"{report.detail})")

    def _finish_unknown(self, vend_id: str, started: float, detail: str) -> None:
        try:
            self.journal.finish(vend_id, Outcome.UNKNOWN.value,
                                duration_ms=round((time.monotonic() - started) * 1000),
                                detail=detail, resolved_by="host")
        except Exception:
            log.exception("%s: could not journal the unknown outcome of %s", self.name, vend_id)
            raise

    def _result(self, vend_id: str, *, replayed: bool = False) -> DispenseResult:
        record = self.journal.get(vend_id)
        assert record is not None
        return DispenseResult.from_record(record, self._label(record.motor), replayed=replayed)

    # -- the journal for operators -----------------------------------------------------------

    def reconcile(self, *, include_unknown: bool = False) -> list[DispenseResult]:
        """Settle vends this board's journal left in flight (run on open).

        Each is asked about by its sequence number where the protocol can tell (FA FB PackNO,
        Easivend SN); the board's answer is recorded, otherwise the vend becomes ``unknown``.
        Nothing is ever sent again. ``include_unknown`` also re-asks about earlier
        ``unknown`` vends (after a link came back).
        """
        self._check_open()
        settled: list[DispenseResult] = []
        with self._lock:
            records = self.journal.in_flight(self.name)
            if include_unknown:
                records += [r for r in self.journal.pending(self.name) if not r.in_flight]
            for record in records:
                report = self._query(record)
                if record.in_flight:
                    if report is None:
                        self.journal.finish(
                            record.vend_id, Outcome.UNKNOWN.value, resolved_by="reconcile",
                            detail=self._unknown_detail(record))
                    else:
                        self.journal.finish(
                            record.vend_id, report.outcome.value, raw_code=report.raw_code,
                            drop_time_ms=report.drop_time_ms, resolved_by="reconcile",
                            detail=f"{report.detail} (asked the board after a restart; was "
                                   f"{record.state.value})")
                elif report is not None and report.outcome is not Outcome.UNKNOWN:
                    self.journal.resolve(record.vend_id, report.outcome.value,
                                         f"board answered a later query: {report.detail}",
                                         by="reconcile")
                else:
                    continue
                settled.append(self._result(record.vend_id))
                log.warning("%s: reconciled vend %s (%s at the crash): %s", self.name,
                            record.vend_id, record.state.value, settled[-1].outcome.value)
        return settled

    def _query(self, record: VendRecord) -> VendReport | None:
        if self._offline is not None or record.seq is None \
                or self.board.sequence_range is None:
            return None
        try:
            report = self.board.query_vend(record.motor, record.seq)
        except VendhwError as exc:
            log.warning("%s: could not ask the board about vend %s: %s", self.name,
                        record.vend_id, exc)
            return None
        if report is None or report.outcome is Outcome.UNKNOWN:
            return None
        return report

    def _unknown_detail(self, record: VendRecord) -> str:
        if self._offline is not None:
            why = f"the board could not be asked, it was offline ({self._offline})"
        elif record.seq is None or self.board.sequence_range is None:
            why = "the board's protocol cannot be asked about a past vend"
        else:
            why = "the board could not say what became of it"
        if record.state is VendState.INTENT:
            where = "the host stopped before the command was confirmed on the wire"
        else:
            where = f"the host stopped after the command was {record.state.value}"
        return f"{where}; {why}: check slot {self._label(record.motor)} and resolve it"

    def pending(self) -> list[VendRecord]:
        """Vends that need an operator (``unknown``, or in flight in another process)."""
        return self.journal.pending(self.name)

    def history(self, limit: int = 100) -> list[VendRecord]:
        """This board's latest vends, newest first."""
        return self.journal.history(limit, self.name)

    def resolve(self, vend_id: str, outcome: Outcome | str, note: str = "") -> DispenseResult:
        """An operator settles an ``unknown`` vend (e.g. ``delivered`` after checking the slot)."""
        try:
            value = Outcome(outcome)
        except ValueError:
            raise ConfigurationError(
                f"unknown outcome {outcome!r}; one of: "
                f"{', '.join(o.value for o in Outcome)}") from None
        if value is Outcome.UNKNOWN:
            raise ConfigurationError("resolve a vend to what happened, not to 'unknown'")
        with self._lock:
            record = self.journal.resolve(vend_id, value.value, note)
        return DispenseResult.from_record(record, self._label(record.motor))

    # -- board information --------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The board's status (``ok``, door, temperature... where it has them) and the
        journal's count of vends waiting for an operator."""
        self._check_open()
        with self._lock:
            self._refuse_offline()
            try:
                status = dict(self.board.status())
            finally:
                self._check_port()
        status.setdefault("profile", self.name)
        status["unresolved_vends"] = len(self.pending())
        return status

    def selftest(self) -> dict[str, Any]:
        """The board's own self test (light curtain, motor scan where the protocol has one)."""
        self._check_open()
        with self._lock:
            self._refuse_offline()
            try:
                return dict(self.board.selftest())
            finally:
                self._check_port()

    def _status_value(self, capability: str, keys: tuple[str, ...]) -> Any:
        if not self.profile.supports(capability):
            raise NotSupportedError(f"board profile {self.name!r} has no {capability} sensor")
        status = self.status()
        for key in keys:
            if status.get(key) is not None:
                return status[key]
        raise ProtocolError(f"{self.name}: the board's status does not report its "
                            f"{capability} ({', '.join(keys)} missing): {status}")

    def door_open(self) -> bool:
        """True when the board reports its door open (profiles with a door switch only)."""
        value = self._status_value("door", ("door_open", "door"))
        if isinstance(value, str):
            return value.strip().lower() in ("open", "opened", "1", "true")
        return bool(value)

    def door(self) -> str:
        """``"open"`` or ``"closed"`` (profiles with a door switch only)."""
        return "open" if self.door_open() else "closed"

    def temperature(self) -> float:
        """The cabinet temperature in °C (profiles with a temperature sensor only)."""
        return float(self._status_value("temperature", ("temperature_c", "temperature")))

    # -- life cycle ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ConfigurationError(f"machine {self.name!r} is closed")

    def close(self) -> None:
        """Release the board's port and the journal; safe to call twice."""
        if getattr(self, "_closed", True):
            return
        self._closed = True
        try:
            self.board.close()
        finally:
            if self._own_journal:
                self.journal.close()

    def __enter__(self) -> Machine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Machine {self.name} on {self.url}>"


def open_machine(profile: str | BoardProfile, url: str, *,
                 journal: str | Path | VendJournal | None = None,
                 **transport_options: Any) -> Machine:
    """Open a :class:`Machine` (the same as calling it; reads well in a ``with``)."""
    return Machine(profile, url, journal=journal, **transport_options)


__all__ = ["AbsentBoard", "DispenseResult", "Machine", "open_machine"]
