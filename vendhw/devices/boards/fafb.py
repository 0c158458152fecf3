"""FA FB boards (XY / JSK VMCs): the board is bus master, PackNO makes a repeat harmless.

A :class:`~vendhw.devices.boards.session.BoardMasterSession` answers the VMC's POLLs from a
reader thread; this driver queues commands on it and waits for ACKs and reports.

PackNO rules the driver keeps (spec section 2, "communication number"):

* the vend command carries the caller's ``seq`` as PackNO and every resend reuses it, so a
  VMC that already executed it only acknowledges it again;
* every other command uses a PackNO different from the vend's and from the last one the VMC
  acknowledged, so it can never be mistaken for (or mask) a vend; the pre-vend selection
  check also makes sure the vend's PackNO is not the VMC's "last" before the vend goes out;
* :meth:`FaFbBoard.query_vend` sends the harmless CHECK SELECTION with the vend's PackNO:
  a VMC that still holds that PackNO treats it as a repeat and re-sends the vend's
  dispensing status; one that does not (command lost, or VMC reset) answers the check with a
  selection status, which tells the driver it cannot know.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from vendhw.devices.boards import Board, Callback
from vendhw.devices.boards.outcomes import Outcome, VendReport
from vendhw.devices.boards.profile import BUSY, OK, PROGRESS, BoardProfile
from vendhw.devices.boards.session import BoardMasterSession, Outgoing
from vendhw.framing.base import Frame
from vendhw.framing.fafb import INTER_BYTE_GAP, Command, FaFbFramer
from vendhw.transport.base import Transport

log = logging.getLogger(__name__)

REPORTS = (Command.SELECTION_STATUS, Command.DISPENSING_STATUS)
"""What the board sends about a slot: stale ones are drained before a new question."""


class FaFbBoard(Board):
    """Driver for the FA FB family."""

    family = "fafb"
    sequence_range = (1, 255)

    def __init__(self, profile: BoardProfile, transport: Transport) -> None:
        super().__init__(profile, transport)
        self.framer = FaFbFramer()
        t = profile.timing
        self.session = BoardMasterSession(
            transport, self.framer, poll_period=t.poll_period,
            silence_limit=t.response_timeout, retries=t.retries, gap=INTER_BYTE_GAP)
        self._board_last: int | None = None
        """PackNO of the last command the VMC acknowledged from us (None = unknown)."""

    # -- timing budgets -------------------------------------------------------------------

    @property
    def _handover(self) -> float:
        """Time for a queued command to meet a POLL (the board polls every poll_period)."""
        return 2 * self.timing.poll_period + self.timing.response_timeout

    @property
    def _ack_budget(self) -> float:
        """Time for every resend on the following POLLs, then the ACK."""
        return (self.timing.retries + 2) * self.timing.poll_period + self.timing.response_timeout

    @property
    def _report_budget(self) -> float:
        """Time for a report to follow the ACK of its command (a few polls)."""
        return 3 * self.timing.poll_period + self.timing.response_timeout

    # -- lifecycle ------------------------------------------------------------------------

    def probe(self) -> None:
        """Wait for the VMC's first POLL (nothing is sent, so no PackNO is used)."""
        wait = self.timing.response_timeout + 2 * self.timing.poll_period
        if not self.session.wait_alive(wait):
            raise self.no_response(
                f"a POLL (FA FB 41 00 40) from the VMC every "
                f"{self.timing.poll_period * 1000:.0f} ms", wait)

    def _ensure_alive(self) -> None:
        if not self.session.alive:
            self.probe()

    def close(self) -> None:
        self.session.close()
        super().close()

    def check_port(self) -> None:
        """Nothing to do: the reader thread reads all the time and the transport records a
        port that went away."""

    # -- commands -------------------------------------------------------------------------

    def _pack_for(self, avoid: int | None) -> int:
        """A PackNO for a non-vend command: not ``avoid``, not the VMC's last one."""
        start = self._board_last if self._board_last is not None else (avoid or 0)
        pack = start
        for _ in range(3):
            pack = pack % 255 + 1
            if pack != avoid and pack != self._board_last:
                return pack
        return pack  # pragma: no cover - unreachable with 255 values

    def _handed_over(self, out: Outgoing) -> bool:
        """Wait for the next POLLs to take ``out``; withdraw it if none came. True when it
        was written (even at the last moment), False when it never left."""
        if self.session.wait_sent(out, self._handover):
            return True
        self.session.cancel(out)  # under the session lock: after this it cannot go out
        return out.sent.is_set()

    def _command(self, code: int, pack: int, what: str, **fields: Any) -> bool:
        """Queue one command and wait for its ACK; False if the VMC never acknowledged it.

        :raises ~vendhw.errors.NoResponseError: the VMC is silent (the command never left).
        """
        out = self.session.submit(self.framer.build(code=code, pack_no=pack, **fields), what)
        if not self._handed_over(out):
            raise self.no_response(f"a POLL to hand over {what}", self._handover)
        state = self.session.wait_ack(out, self._ack_budget)
        if state == "acked":
            self._board_last = pack
            return True
        log.warning("%s: %s (PackNO %d) not acknowledged: %s", self.transport.url, what, pack,
                    state)
        return False

    def _ask(self, code: int, reply: int, what: str, *, avoid: int | None = None,
             **fields: Any) -> Frame | None:
        """A non-vend command and the report that answers it (None if none came)."""
        self.session.drain(lambda f: f["code"] == reply)
        if not self._command(code, self._pack_for(avoid), what, **fields):
            return None
        return self.session.take(lambda f: f["code"] == reply, self._report_budget)

    # -- vend -----------------------------------------------------------------------------

    def vend(self, motor: int, seq: int | None, *, drop_sensor: bool = True,
             on_sent: Callback | None = None, on_ack: Callback | None = None) -> VendReport:
        motor = self.check_motor(motor)
        seq = self.check_seq(seq)
        self._ensure_alive()
        refused = self._precheck(motor, seq)
        if refused is not None:
            return refused
        drop = drop_sensor and self.profile.supports("drop_sensor")
        elevator = bool(self.profile.option("elevator", self.profile.supports("lift")))
        code = int(self.profile.option("vend_command", Command.DRIVE_SELECTION))
        fields: dict[str, Any] = {"selection": motor}
        if code == Command.DRIVE_SELECTION:
            fields.update(drop_sensor=int(drop), elevator=int(elevator))
        self.session.drain(lambda f: f["code"] == Command.DISPENSING_STATUS)
        out = self.session.submit(self.framer.build(code=code, pack_no=seq, **fields),
                                  f"vend slot {motor} (PackNO {seq})")
        if not self._handed_over(out):
            # Withdrawn before any POLL came: not a byte of the vend was written.
            raise self.no_response("a POLL to hand over the vend command", self._handover)
        if on_sent:
            on_sent()
        state = self.session.wait_ack(out, self._ack_budget)
        if state != "acked":
            return self._recover(motor, seq, on_ack,
                                 f"the vend command was never acknowledged ({state})")
        self._board_last = seq
        if on_ack:
            on_ack()
        return self._await_result(motor, seq)

    def _precheck(self, motor: int, seq: int) -> VendReport | None:
        """Check the selection (or ask the status) with another PackNO before the vend.

        Besides refusing an empty slot before anything moves, this makes the VMC's "last
        PackNO" differ from ``seq``, so the vend cannot be taken for a repeat.
        """
        check = bool(self.profile.option("check_before_vend", True))
        table = self.profile.table("selection_status")
        for _ in range(2):
            if not check or table is None:
                if not self._command(Command.STATUS_REQUEST, self._pack_for(seq), "status request"):
                    raise self.no_response("an ACK to the status request", self._ack_budget)
                return None
            self.session.drain(lambda f: f["code"] in REPORTS)
            if not self._command(Command.CHECK_SELECTION, self._pack_for(seq), "selection check",
                                 selection=motor):
                raise self.no_response("an ACK to the selection check", self._ack_budget)
            frame = self.session.take(
                lambda f: (f["code"] == Command.SELECTION_STATUS and f.get("selection") == motor)
                or f["code"] == Command.DISPENSING_STATUS, self._report_budget)
            if frame is None or frame["code"] == Command.DISPENSING_STATUS:
                continue  # the VMC took the check for a repeat: check again, new PackNO
            status = frame["status"]
            info = table.lookup(status)
            kind = info.outcome if info else OK
            if kind == OK:
                return None
            text = info.text if info else ""
            detail = f"board code 0x{status:02X}: {text or 'selection status'} " \
                     "(selection check before the vend; nothing moved)"
            if kind == BUSY:
                return VendReport(Outcome.MOTOR_FAULT, status, None, "busy: " + detail)
            return VendReport(Outcome(kind), status, None, detail)
        return None

    def _await_result(self, motor: int, seq: int) -> VendReport:
        """Reports after the ACK until a final dispensing status or the run limit."""
        deadline = time.monotonic() + self.timing.vend_deadline
        progress = False
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            frame = self.session.take(
                lambda f: f["code"] == Command.DISPENSING_STATUS and f.get("selection") == motor,
                remaining)
            if frame is None:
                if not self.session.alive:
                    return self._recover(motor, seq, None, "the VMC went silent mid-vend",
                                         wait_until=deadline)
                continue
            report = self._report(frame["status"])
            if report is None:
                progress = True
                continue
            return report
        # The run limit is over and the VMC still polls: ask it with the vend's PackNO.
        found = self._query(motor, seq)
        if found is not None and found.outcome is not Outcome.UNKNOWN:
            return found
        if progress or found is not None:
            return VendReport(Outcome.TIMEOUT, found.raw_code if found else None, None,
                              f"the VMC still reports the vend in progress after "
                              f"{self.timing.vend_deadline:.1f} s")
        return VendReport(Outcome.UNKNOWN, None, None,
                          "no dispensing status within the run limit and the VMC has no "
                          f"record of PackNO {seq}")

    def _report(self, status: int) -> VendReport | None:
        """A final report for a dispensing status, or None for a progress code."""
        kind, detail = self.profile.interpret(status)
        if kind == PROGRESS:
            return None
        if kind in (OK, BUSY):
            kind = Outcome.UNKNOWN.value
        return VendReport(Outcome(kind), status, None, detail)

    def _recover(self, motor: int, seq: int, on_ack: Callback | None, why: str, *,
                 wait_until: float | None = None) -> VendReport:
        """The vend may have reached the VMC: ask it (same PackNO), else UNKNOWN."""
        if wait_until is not None and not self.session.alive:
            self.session.wait_alive(max(0.0, wait_until - time.monotonic()))
        if not self.session.alive:
            return VendReport(Outcome.UNKNOWN, None, None, why + "; the VMC is silent")
        try:
            found = self._query(motor, seq)
        except Exception as exc:  # a second failure: keep the first reason
            log.warning("%s: query after %r failed: %s", self.transport.url, why, exc)
            found = None
        if found is None:
            return VendReport(Outcome.UNKNOWN, None, None,
                              f"{why}; the VMC has no record of PackNO {seq} "
                              "(command lost, or the VMC reset)")
        if on_ack:
            on_ack()
        if found.outcome is Outcome.UNKNOWN and found.raw_code is not None:
            # Still in progress: wait for the final report like a normal vend.
            return self._await_result(motor, seq)
        return found

    # -- query ------------------------------------------------------------------------------

    def _query(self, motor: int, seq: int) -> VendReport | None:
        """CHECK SELECTION with the vend's PackNO. A VMC holding that PackNO repeats the
        vend's dispensing status (UNKNOWN with the raw code while still in progress); one
        that does not answers a selection status: None."""
        self.session.drain(lambda f: f["code"] in REPORTS)
        if not self._command(Command.CHECK_SELECTION, seq, f"query of PackNO {seq}",
                             selection=motor):
            raise self.no_response("an ACK to the vend query", self._ack_budget)
        frame = self.session.take(
            lambda f: (f["code"] == Command.DISPENSING_STATUS and f.get("selection") == motor)
            or f["code"] == Command.SELECTION_STATUS, self._report_budget)
        if frame is None or frame["code"] == Command.SELECTION_STATUS:
            return None
        report = self._report(frame["status"])
        if report is None:
            return VendReport(Outcome.UNKNOWN, frame["status"], None,
                              f"board code 0x{frame['status']:02X}: vend still in progress")
        return report

    def query_vend(self, motor: int, seq: int) -> VendReport | None:
        motor = self.check_motor(motor)
        seq = self.check_seq(seq)
        self._ensure_alive()
        found = self._query(motor, seq)
        if found is not None and found.outcome is Outcome.UNKNOWN and found.raw_code is not None:
            return self._await_result(motor, seq)
        return found

    # -- status -----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        self._ensure_alive()
        out: dict[str, Any] = {"ok": False, "board": self.profile.name, "family": self.family,
                               "polling": True, "polls": self.session.polls}
        short = self._ask(Command.STATUS_REQUEST, Command.STATUS, "status request")
        if short is not None and "status" in short.fields:
            table = self.profile.table("machine_status")
            info = table.lookup(short["status"]) if table else None
            out["machine_status"] = short["status"]
            out["machine_status_text"] = short.get("status_text", "")
            out["ok"] = info is None or info.outcome == OK
        full = self._ask(Command.MACHINE_STATUS_REQUEST, Command.MACHINE_STATUS,
                         "machine status request")
        if full is not None and "door_status" in full.fields:
            if self.profile.supports("door"):
                out["door_open"] = bool(full["door_status"])
            if self.profile.supports("temperature"):
                raw = bytes(full["temperature"])
                out["temperature_c"] = int.from_bytes(raw[:1], "big", signed=True)
                out["temperature_raw"] = raw.hex(" ").upper()
            out["machine_id"] = bytes(full["machine_id"]).decode("ascii", "replace")
        return out

    def selftest(self) -> dict[str, Any]:
        """FA FB has no motor-scan command: report the VMC's short status (elevator self
        check included) and whether it keeps polling in time."""
        status = self.status()
        return {"ok": bool(status.get("ok")), "checks": {
            "polling": self.session.alive,
            "machine_status": status.get("machine_status_text", "no reply"),
        }}


__all__ = ["FaFbBoard"]
