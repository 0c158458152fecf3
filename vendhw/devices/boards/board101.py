"""The "101" light-curtain board: host master, no vend sequence number.

Vend flow (Acccord/SPOpenApi doc/Channel.md, "business flow"): START MOTOR (0x05) once; if
the board says it started, READ RESULT (0x03) once per poll period for at most the motor run
limit. With a light curtain the curtain time decides: > 0 ms means the product fell.

The protocol has no sequence number, so a START MOTOR is **never resent**: without a reply
the motor may or may not be turning, and the vend is :data:`Outcome.UNKNOWN`. Reading the
result is harmless and is retried. :meth:`Board101.query_vend` returns None (the board
cannot say which vend a result belongs to).
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
from vendhw.framing.board101 import (
    CURTAIN_OFF,
    CURTAIN_ON,
    CURTAIN_READ,
    INTER_BYTE_GAP,
    OPEN_LOCK,
    READ_RESULT,
    READ_VERSION,
    START_MOTOR,
    Board101Framer,
)
from vendhw.transport.base import Transport

RESET_WATCH = 0.2
"""Not in the sources: the longest gap between two requests while a vend is open. The 101
protocol has no reset flag and a board that rebooted reads "success, curtain 0 ms" exactly
like a vend where nothing fell; only the silence while it boots gives a reset away, so the
host asks READ VERSION (harmless, unrelated to the result) between the once-a-second result
reads. A reset whose silence is shorter than this gap can still slip through (profile key
``protocol.reset_watch`` overrides it)."""

CURTAIN_SETTLE = 1.0
"""Channel.md light-curtain self test: switch on, wait 1 s, read, switch off (profile key
``protocol.curtain_settle`` overrides it)."""


class Board101(Board):
    """Driver for the "101" family."""

    family = "board101"
    sequence_range = None

    def __init__(self, profile: BoardProfile, transport: Transport) -> None:
        super().__init__(profile, transport)
        self.framer = Board101Framer()
        self.session = HostMasterSession(transport, self.framer,
                                         response_timeout=profile.timing.response_timeout,
                                         retries=profile.timing.retries, gap=INTER_BYTE_GAP)
        self.address = int(profile.option("address", 1))
        self.index_base = int(profile.option("motor_index_base", 1))

    def _frame(self, code: int, **fields: Any) -> bytes:
        return self.framer.build(code=code, address=self.address, **fields)

    @staticmethod
    def _answers(code: int) -> Any:
        return lambda f: f["code"] == code and f["address"] == 0

    def _ask(self, code: int, **fields: Any) -> Frame | None:
        """A harmless command, retried with the same bytes."""
        return self.session.request(self._frame(code, **fields), accept=self._answers(code))

    def probe(self) -> None:
        if self._ask(READ_VERSION) is None:
            raise self.no_response("a 20-byte reply (00 01 ...) to READ VERSION (01 01 ...)",
                                   self.timing.response_timeout * (1 + self.timing.retries))

    # -- vend -----------------------------------------------------------------------------

    def vend(self, motor: int, seq: int | None = None, *, drop_sensor: bool = True,
             on_sent: Callback | None = None, on_ack: Callback | None = None) -> VendReport:
        motor = self.check_motor(motor)
        index = motor - self.index_base
        if not 0 <= index <= 0xFF:
            from vendhw.errors import ConfigurationError

            raise ConfigurationError(f"board slot {motor} gives motor index {index}, "
                                     "outside 0..255 (check protocol.motor_index_base)")
        light = int(self.profile.option("light_type", 1)) if (
            drop_sensor and self.profile.supports("drop_sensor")) else 0
        start = self._frame(START_MOTOR, motor_index=index,
                            motor_type=int(self.profile.option("motor_type", 3)),
                            light_type=light)
        # A harmless read first: a dead link is reported before the vend command is written.
        if self._ask(READ_RESULT) is None:
            raise self.no_response("a reply to READ RESULT before the vend",
                                   self.timing.response_timeout * (1 + self.timing.retries))
        # The board may be busy with a previous vend; "busy" means nothing started, so
        # asking again is safe. A silent board is never asked twice.
        deadline = time.monotonic() + self.timing.motor_run_limit
        sent = False
        while True:
            self.session.send(start)
            if not sent:
                sent = True
                if on_sent:
                    on_sent()
            reply = self.session.receive(self.timing.response_timeout,
                                         self._answers(START_MOTOR))
            if reply is None:
                return VendReport(Outcome.UNKNOWN, None, None,
                                  "no reply to START MOTOR: the motor may or may not have "
                                  "started (the 101 protocol has no sequence number to ask)")
            code = reply["start_result"]
            table = self.profile.table("start_status")
            info = table.lookup(code) if table else None
            kind = info.outcome if info else (OK if code == 0 else Outcome.MOTOR_FAULT.value)
            text = info.text if info else reply.get("start_text", "")
            if kind == BUSY and time.monotonic() + self.timing.poll_period < deadline:
                self._pause(self.timing.poll_period)
                continue
            if kind != OK:
                outcome = Outcome.MOTOR_FAULT if kind in (BUSY, PROGRESS) else Outcome(kind)
                return VendReport(outcome, code, None,
                                  f"start refused, board code {code}: {text}; nothing moved")
            break
        if on_ack:
            on_ack()
        return self._await_result(light != 0)

    def _pause(self, seconds: float) -> None:
        """The doc's "read once per second": a protocol pause between requests."""
        threading.Event().wait(seconds)  # sleep-ok: Channel.md poll interval between reads

    def _watch(self, until: float) -> int:
        """Ask READ VERSION every ``reset_watch`` seconds until ``until``; returns how many
        went unanswered (a board that resets mid-vend is silent while it boots)."""
        watch = float(self.profile.option("reset_watch", RESET_WATCH))
        missed = 0
        while watch > 0 and time.monotonic() + watch < until:
            self._pause(watch)
            if self.session.request(self._frame(READ_VERSION), accept=self._answers(READ_VERSION),
                                    retries=0) is None:
                missed += 1
        self._pause(max(0.0, until - time.monotonic()))
        return missed

    def _await_result(self, curtain: bool) -> VendReport:
        deadline = time.monotonic() + self.timing.motor_run_limit + self.timing.drop_sensor_wait
        missed = 0
        last: Frame | None = None
        while True:
            missed += self._watch(time.monotonic() + min(
                self.timing.poll_period, max(0.0, deadline - time.monotonic())))
            reply = self.session.request(self._frame(READ_RESULT),
                                         accept=self._answers(READ_RESULT), retries=0)
            if reply is None:
                missed += 1
            else:
                last = reply
                kind, _ = self.profile.interpret(reply["result"])
                if kind != PROGRESS:
                    return self._final(reply, curtain, missed)
            if time.monotonic() >= deadline:
                break
        if last is None:
            return VendReport(Outcome.UNKNOWN, None, None,
                              "the board stopped answering after the motor started")
        return VendReport(Outcome.TIMEOUT, last["result"], None,
                          f"board code {last['result']}: still in progress after "
                          f"{self.timing.motor_run_limit:.1f} s")

    def _final(self, reply: Frame, curtain: bool, missed: int) -> VendReport:
        code: int = reply["result"]
        drop: int = reply["drop_time_ms"]
        kind, detail = self.profile.interpret(code)
        if curtain:
            detail += f"; light curtain {drop} ms"
            if drop > 0:
                # Channel.md: with a curtain, the curtain time decides, not the motor code.
                return VendReport(Outcome.DELIVERED, code, drop, detail)
            if kind == Outcome.DELIVERED.value:
                kind = Outcome.NOT_DROPPED.value
        elif kind == Outcome.DELIVERED.value:
            detail += " (no light curtain: not verified)"
        if missed and kind != Outcome.DELIVERED.value:
            # Replies went missing mid-vend and the board now says "nothing": it may have
            # reset and forgotten a vend that did happen.
            return VendReport(Outcome.UNKNOWN, code, drop if curtain else None,
                              f"{detail}; but {missed} read(s) went unanswered mid-vend: "
                              "the board may have reset and forgotten this vend")
        if kind in (OK, BUSY, PROGRESS):
            kind = Outcome.UNKNOWN.value
        return VendReport(Outcome(kind), code, drop if curtain else None, detail)

    def query_vend(self, motor: int, seq: int) -> VendReport | None:
        """The 101 protocol cannot tie a result to a vend: always None."""
        self.check_motor(motor)
        return None

    # -- status -----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        reply = self._ask(READ_VERSION)
        if reply is None:
            raise self.no_response("a reply to READ VERSION", self.timing.response_timeout)
        return {"ok": True, "board": self.profile.name, "family": self.family,
                "version": reply.get("version", "")}

    def selftest(self) -> dict[str, Any]:
        """Channel.md light-curtain self test: on, wait, read (0 blocked, 1 clear), off."""
        if not self.profile.supports("drop_sensor"):
            status = self.status()
            return {"ok": status["ok"], "checks": {"version": status["version"]}}
        if self._ask(CURTAIN_ON) is None:
            raise self.no_response("a reply to CURTAIN ON", self.timing.response_timeout)
        self._pause(float(self.profile.option("curtain_settle", CURTAIN_SETTLE)))
        reading = self._ask(CURTAIN_READ)
        self._ask(CURTAIN_OFF)
        state = reading.get("curtain") if reading is not None else "no reply"
        return {"ok": state == "clear", "checks": {"light_curtain": state}}

    def open_lock(self) -> bool:
        """Pulse the door-lock relay (command 0x08), as VioSerial.openLock does."""
        ok = True
        for value in (1, 0):
            ok &= self._ask(OPEN_LOCK, data=bytes((5, value))) is not None
        return ok


__all__ = ["Board101"]
