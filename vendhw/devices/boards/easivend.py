"""Easivend column boards: host master, a repeated SN is a status check (``CP_recv``).

The board remembers the last request (SN, MT, column, status). A request with the same
non-zero SN is answered from that memory and never executed again; any other SN replaces
the memory. The driver builds on that:

* before a vend it sends a CHECK with a fresh SN: the link is proven before anything that
  can move is written, and the vend's SN is then certainly new to the board;
* after the DISPENSE it never resends the DISPENSE: when the reply is missing it sends a
  CHECK with the *same* SN. A board holding that SN answers with the vend (MT 0x70, its
  column and status); one that does not (frame lost, or the board reset) answers with MT 0x72,
  and the vend is :data:`Outcome.UNKNOWN`, because a reset board may have vended first;
* :meth:`EasivendBoard.query_vend` is that same CHECK, so it can never start a vend.

The probe at open is passive: any request with a new SN would erase the board's memory of
the last vend, which :meth:`query_vend` needs after a host restart. The link is proven by
the first command instead.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from vendhw.devices.boards import Board, Callback
from vendhw.devices.boards.outcomes import Outcome, VendReport
from vendhw.devices.boards.profile import BUSY, OK, PROGRESS, BoardProfile
from vendhw.devices.boards.session import HostMasterSession
from vendhw.framing.base import Frame
from vendhw.framing.easivend import (
    CHECK,
    DISPENSE,
    FRAME_LEN,
    INTER_BYTE_GAP,
    EasivendFramer,
    status_flags,
)
from vendhw.transport.base import Transport

BUSY_BIT = 0x02
"""API_channelProtocol.h CP_BUSY."""
DETECTOR_FAULT_BIT = 0x80
"""API_channelProtocol.h CP_HOLE_ERR."""


class EasivendBoard(Board):
    """Driver for the Easivend column board."""

    family = "easivend"
    sequence_range = (1, 255)
    """SN 0 is never treated as a repeat by the board (``msg_cp.sn != 0``), so it is unused."""

    def __init__(self, profile: BoardProfile, transport: Transport) -> None:
        super().__init__(profile, transport)
        self.framer = EasivendFramer()
        self.session = HostMasterSession(transport, self.framer,
                                         response_timeout=profile.timing.response_timeout,
                                         retries=profile.timing.retries, gap=INTER_BYTE_GAP)
        self._board_last: int | None = None
        """The SN the board holds, as far as this driver knows (None = unknown)."""

    # -- frames -----------------------------------------------------------------------------

    def _request(self, sn: int, mt: int, column: int, d1: int = 0) -> bytes:
        return self.framer.build(sn=sn, mt=mt, column=column, d1=d1, d2=0,
                                 length=int(self.profile.option("frame_len", FRAME_LEN)))

    @staticmethod
    def _for_sn(sn: int) -> Any:
        return lambda f: f["sn"] == sn

    def _sn_for(self, avoid: int | None) -> int:
        """A fresh SN: not ``avoid`` and not the one the board holds."""
        sn = self._board_last if self._board_last is not None else (avoid or 0)
        for _ in range(3):
            sn = sn % 255 + 1
            if sn != avoid and sn != self._board_last:
                break
        return sn

    def _check(self, sn: int, column: int) -> Frame | None:
        """A CHECK (MT 0x72): harmless, resent with the same bytes on silence."""
        reply = self.session.request(self._request(sn, CHECK, column), accept=self._for_sn(sn))
        # Answered: the board now holds ``sn`` (a repeat leaves it, a new SN replaces it).
        # Unanswered: it may or may not have got it; the next fresh check settles it.
        self._board_last = sn if reply is not None else None
        return reply

    # -- lifecycle ------------------------------------------------------------------------

    def probe(self) -> None:
        """Passive: see the module docstring. The first command proves the link."""

    def _fresh_check(self, avoid: int | None, column: int, what: str) -> Frame:
        reply = self._check(self._sn_for(avoid), column)
        if reply is None:
            raise self.no_response(f"a reply (EE ...) to a CHECK (ED .. 72) {what}",
                                   self.timing.response_timeout * (1 + self.timing.retries))
        return reply

    # -- vend -----------------------------------------------------------------------------

    def vend(self, motor: int, seq: int | None, *, drop_sensor: bool = True,
             on_sent: Callback | None = None, on_ack: Callback | None = None) -> VendReport:
        motor = self.check_motor(motor)
        seq = self.check_seq(seq)
        if not 0 < motor <= 0xFF:
            from vendhw.errors import ConfigurationError

            raise ConfigurationError(f"column {motor} does not fit the COLUMN byte")
        self._fresh_check(seq, motor, "before the vend")
        drop = drop_sensor and self.profile.supports("drop_sensor")
        self.session.send(self._request(seq, DISPENSE, motor, d1=1 if drop else 0))
        self._board_last = seq
        if on_sent:
            on_sent()
        reply = self.session.receive(self.timing.vend_deadline, self._for_sn(seq))
        if reply is None:
            return self._recover(motor, seq, drop, on_ack, "no reply to the DISPENSE")
        if reply["mt"] != DISPENSE or reply["column"] != motor:
            return VendReport(Outcome.UNKNOWN, reply["status"], None,
                              f"the board answered SN {seq} for MT 0x{reply['mt']:02X} column "
                              f"{reply['column']}, not this vend")
        if on_ack:
            on_ack()
        return self._settle(reply, motor, seq, drop)

    def _recover(self, motor: int, seq: int, drop: bool, on_ack: Callback | None,
                 why: str) -> VendReport:
        """Ask with the same SN (never resend the DISPENSE)."""
        reply = self._check(seq, motor)
        if reply is None:
            return VendReport(Outcome.UNKNOWN, None, None, f"{why}; the board is silent")
        if reply["mt"] != DISPENSE or reply["column"] != motor:
            return VendReport(Outcome.UNKNOWN, reply["status"], None,
                              f"{why}; the board has no record of SN {seq} "
                              "(frame lost, or the board reset)")
        if on_ack:
            on_ack()
        return self._settle(reply, motor, seq, drop)

    def _settle(self, reply: Frame, motor: int, seq: int, drop: bool) -> VendReport:
        """Poll with the same SN while the board says busy, then map the status."""
        deadline = time.monotonic() + self.timing.vend_deadline
        while self._is_busy(reply["status"]):
            if time.monotonic() >= deadline:
                return VendReport(Outcome.TIMEOUT, reply["status"], None,
                                  f"board code 0x{reply['status']:02X}: still busy after "
                                  f"{self.timing.vend_deadline:.1f} s")
            threading.Event().wait(self.timing.poll_period)  # sleep-ok: busy re-check interval
            again = self._check(seq, motor)
            if again is None:
                return VendReport(Outcome.UNKNOWN, reply["status"], None,
                                  "the board went silent while busy with the vend")
            if again["mt"] != DISPENSE:
                return VendReport(Outcome.UNKNOWN, again["status"], None,
                                  f"the board lost SN {seq} while busy (reset?)")
            reply = again
        return self._map(reply["status"], drop)

    def _is_busy(self, status: int) -> bool:
        info = self.profile.results.lookup(status)
        return info is not None and info.outcome in (PROGRESS, BUSY)

    def _map(self, status: int, drop: bool) -> VendReport:
        kind, detail = self.profile.interpret(status)
        if kind == Outcome.DELIVERED.value and not drop:
            detail += " (no drop check: not verified)"
        if kind in (OK, BUSY, PROGRESS):
            kind = Outcome.UNKNOWN.value
        return VendReport(Outcome(kind), status, None, detail)

    def query_vend(self, motor: int, seq: int) -> VendReport | None:
        motor = self.check_motor(motor)
        seq = self.check_seq(seq)
        reply = self._check(seq, motor)
        if reply is None:
            raise self.no_response(f"a reply to a CHECK with SN {seq}",
                                   self.timing.response_timeout * (1 + self.timing.retries))
        if reply["mt"] != DISPENSE or reply["column"] != motor:
            return None
        return self._settle(reply, motor, seq, self.profile.supports("drop_sensor"))

    # -- status -----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """A CHECK with a fresh SN. Its STATUS is the last vend's, plus the busy bit.

        .. note:: this replaces the board's memory of the last SN: reconcile in-flight vends
           with :meth:`query_vend` first.
        """
        reply = self._fresh_check(None, self.profile.slots()[0], "for the status")
        status: int = reply["status"]
        return {"ok": not status & (BUSY_BIT | DETECTOR_FAULT_BIT), "board": self.profile.name,
                "family": self.family, "busy": bool(status & BUSY_BIT),
                "last_status": status, "last_status_flags": status_flags(status)}

    def selftest(self) -> dict[str, Any]:
        """No self-test command exists: report the link and the drop detector flag."""
        status = self.status()
        return {"ok": status["ok"], "checks": {
            "link": "ok",
            "drop_detector": "fault" if status["last_status"] & DETECTOR_FAULT_BIT else "ok",
        }}


__all__ = ["EasivendBoard"]
