"""The thread runner of the cashless core over an MDB link, and ``open_cashless``."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from vendhw.devices.engine import Op, drive
from vendhw.devices.mdb_cashless.core import CardSale, CashlessCore, Request
from vendhw.devices.mdb_cashless.polls import CashlessEvent, ReaderConfig
from vendhw.devices.mdb_cashless.tables import (
    CASHLESS_1,
    COMMAND_RETRIES,
    VMC_FEATURE_LEVEL,
)
from vendhw.errors import (
    ConfigurationError,
    FramingError,
    NakError,
    NoResponseError,
    SequenceError,
)
from vendhw.framing.mdb import (
    CashlessCommand as Command,
)
from vendhw.framing.mdb import (
    CashlessReader as Reader,
)
from vendhw.framing.mdb import (
    CashlessVend as Vend,
)

log = logging.getLogger("vendhw.devices.mdb_cashless")

T = TypeVar("T")


class MdbCashlessReader:
    """A cashless reader on an MDB link (the thread runner of :class:`CashlessCore`).

    :param link: a :class:`vendhw.devices.mdb.MdbLink` (shared with the changer and the
        validator on the same bus is fine, one caller at a time).
    """

    def __init__(self, link: Any, address: int = CASHLESS_1, *,
                 vmc_level: int = VMC_FEATURE_LEVEL, name: str | None = None,
                 sleep: Callable[[float], object] | None = None) -> None:
        self.link = link
        self.core = CashlessCore(address, vmc_level=vmc_level)
        self.name = name or f"mdb-cashless@0x{address:02X}"
        self._closed = threading.Event()
        self._sleep = sleep or self._closed.wait
        self.poll_seconds: list[float] = []
        """How long each POLL transaction took (reply within the response budget?)."""
        self.retries = 0
        """Commands sent again after a lost or corrupt reply."""
        self.clock: Callable[[], datetime] = lambda: datetime.now().astimezone()
        """The time a TIME/DATE REQUEST is answered with."""

    def run(self, op: Op[T]) -> T:
        """Drive one operation; reply data is ACKed once the core has taken it. A command and
        the ACK of its reply hold the bus (on a shared MDB bus another device's command
        between them would make the ACK late, and the data would come again); a Wait does
        not (the changer polls meanwhile)."""
        return drive(op, self._transact, wait=self._wait, hold=lambda: self.link.lock,
                     taken=self._ack_data, throw=False)

    def _wait(self, seconds: float) -> None:
        if seconds > 0:
            self._sleep(seconds)

    def _ack_data(self, request: Request, reply: bytes | None) -> None:
        if reply is not None:
            self.link.ack()  # the core has taken the data: the reader may drop it

    def _transact(self, step: Request) -> bytes | None:
        """One command; sent again when the reply is lost or corrupt (readers must take a
        repeated command as the same one), up to :data:`COMMAND_RETRIES` times."""
        for attempt in range(COMMAND_RETRIES + 1):
            started = time.perf_counter()
            try:
                reply = self.link.transact(self.core.address, step.command, step.data)
            except (NoResponseError, FramingError, NakError) as exc:
                if attempt == COMMAND_RETRIES:
                    raise
                self.retries += 1
                log.info("%s: command %d: %s; sending it again", self.name, step.command, exc)
                continue
            if step.command == Command.POLL:
                self.poll_seconds.append(time.perf_counter() - started)
            return reply
        raise AssertionError("unreachable")  # pragma: no cover

    # -- the API ------------------------------------------------------------------------------

    def start(self) -> ReaderConfig:
        return self.run(self.core.start_op())

    def poll(self) -> list[CashlessEvent]:
        """One POLL; a TIME/DATE REQUEST among its events (or held from a sale) is answered
        at once with EXPANSION WRITE TIME/DATE (the local time of ``clock``)."""
        events = self.run(self.core.poll_op())
        if self.core.time_requested:
            self.write_time_date()
        return events

    def write_time_date(self, when: datetime | None = None) -> None:
        """EXPANSION WRITE TIME/DATE (``when``: default the local time now)."""
        self.run(self.core.time_date_op(when or self.clock()))

    def enable(self) -> None:
        self.run(self.core.reader_op(Reader.READER_ENABLE))

    def disable(self) -> None:
        self.run(self.core.reader_op(Reader.READER_DISABLE))

    def cancel(self) -> None:
        self.run(self.core.reader_op(Reader.READER_CANCEL))

    def cash_sale(self, price: int, item: int) -> None:
        """Tell the reader about a sale paid in cash (its audit), if it supports it."""
        self.run(self.core.vend_op(Vend.CASH_SALE,
                                   self.core.to_wire(price) + item.to_bytes(2, "big")))

    def revalue(self, amount: int) -> CashlessEvent:
        return self.run(self.core.revalue_op(amount))

    def revalue_limit(self) -> CashlessEvent:
        return self.run(self.core.revalue_limit_op())

    def sell(self, item: int, price: int, dispense: Callable[[], str], *,
             session_timeout: float = 30.0) -> CardSale:
        """Wait for a card, have the vend approved, dispense, settle with the reader."""
        if self.core.config is None:
            raise SequenceError(f"{self.name}: call start() first")
        return self.run(self.core.sell_op(item, price, dispense,
                                          session_timeout=session_timeout))

    def status(self) -> dict[str, Any]:
        core = self.core
        return {"device": self.name, "address": f"0x{core.address:02X}", "level": core.level,
                "config": core.config.to_dict() if core.config else None,
                "identity": core.identity, "enabled": core.enabled,
                "session_open": core.session_open}

    def close(self) -> None:
        self._closed.set()  # a POLL pause in another thread ends at once
        release = getattr(self.link, "release", None)
        if release is not None:
            release()  # a shared bus closes with its last device
        else:
            self.link.transport.close()


def open_cashless(url: str, *, address: int = CASHLESS_1, response_timeout: float | None = None,
                  vmc_level: int = VMC_FEATURE_LEVEL, **options: Any) -> MdbCashlessReader:
    """Open a cashless reader on ``mdb9://PORT`` (a path or a ``usb-serial://`` identity),
    ``mdbascii://PORT``, a simulator's pty, ``sim://mdb-cashless`` or ``sim://mdb-bus``; on
    a port a changer or a bill validator already uses, the reader shares that bus
    (:func:`vendhw.devices.mdb.shared_link`)."""
    from vendhw.devices.mdb import shared_link

    if not url.startswith(("sim://", "mdb9://", "mdbascii://")):
        from vendhw.devices.mdb import is_pty

        if not is_pty(url):
            raise ConfigurationError(
                f"{url}: MDB needs a 9-bit link: mdb9:///dev/ttyUSB0 (sticky parity), "
                "mdb9://usb-serial://VID:PID?serial=SN, mdbascii://PORT or "
                "sim://mdb-cashless")
    # The reply window defaults to the link's: RESPONSE_TIME (the spec's 5 ms) on a real
    # 9-bit port, longer on a pty (mdb9:///dev/pts/N, or an identity that resolves to one).
    return MdbCashlessReader(shared_link(url, response_timeout=response_timeout, **options),
                             address, vmc_level=vmc_level)
