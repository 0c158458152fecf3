"""One vocabulary for every cash device: coin and note acceptors, hoppers, recyclers.

ccTalk, SSP/eSSP, ID-003 and MDB drivers all report :class:`CashEvent` values, so the
machine accepts cash without knowing the protocol. Money is an integer in the currency's
minor unit (cents, fen). Each event carries a stable ``event_id`` derived from the device's
own counters where it has them, so a journal can refuse to count the same credit twice.

Credit safety: a driver calls its ``sink`` for each event *before* it acknowledges the event
to the device (SSP Event Ack, ID-003 ACK after VEND VALID, ccTalk counter advance). If the
sink raises (the journal could not write), the driver does not acknowledge, and the device
repeats the event.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from vendhw.errors import DisconnectedError, NotSupportedError
from vendhw.transport.base import Transport


class CashEventKind(str, Enum):
    CREDIT = "credit"
    """Money is definitely the customer's (stacked note, accepted coin)."""
    ESCROW = "escrow"
    """A note is held; the host must stack or return it."""
    REJECTED = "rejected"
    TOKEN = "token"
    """A vend token was accepted: value 0, never money (MDB coin type credit 0xFF)."""
    RETURNED = "returned"
    JAM = "jam"
    FRAUD = "fraud"
    CASHBOX_REMOVED = "cashbox_removed"
    CASHBOX_REPLACED = "cashbox_replaced"
    CASHBOX_FULL = "cashbox_full"
    FAULT = "fault"
    DISABLED = "disabled"
    PAYOUT_STARTED = "payout_started"
    PAYOUT_PROGRESS = "payout_progress"
    PAYOUT_DONE = "payout_done"
    PAYOUT_INCOMPLETE = "payout_incomplete"
    DEVICE_RESET = "device_reset"


@dataclass(frozen=True)
class CashEvent:
    """Something a cash device reported."""

    kind: CashEventKind
    device: str
    """Which device (``"ssp@/dev/ttyACM0"``)."""
    value: int = 0
    """Amount in minor units (credit, escrow, payout figures)."""
    currency: str = ""
    channel: int | None = None
    route: str | None = None
    """Where the money went: ``cashbox``, ``recycler``, ``tubes``, ``escrow``, ``customer``."""
    reason: str | None = None
    event_id: str = ""
    """Stable identity of this event for de-duplication (device counters where possible)."""
    requested: int | None = None
    """For payouts: the amount asked for (``value`` is what was paid)."""
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["kind"] = self.kind.value
        return out


EventSink = Callable[[CashEvent], None]
"""Called for each event before the driver acknowledges it to the device (MDB: right after
its ACK, which must come within 5 ms; see protocols/mdb/README.md)."""


class CashDevice(ABC):
    """The common driver surface; each protocol's host implements it."""

    name: str
    currency: str = ""
    former_names: tuple[str, ...] = ()
    """Names an earlier version gave this device; the machine layer resumes from a checkpoint
    stored under one of them when none is stored under :attr:`name` (once: it saves under
    the name from then on)."""

    @abstractmethod
    def start(self, sink: EventSink | None = None) -> None:
        """Bring the device from power-up to ready (sync, identify, set up), still inhibited.

        After :meth:`restore`, a driver whose start resets the device (ID-003, MDB) first
        reads what the device still holds from before (a credit whose acknowledgement never
        left) and gives it to ``sink`` *before* the reset that drops it: a start that fails
        after the reset has lost nothing. Without a sink such events are kept for the first
        :meth:`poll` (in memory only: a start that fails loses them)."""

    @abstractmethod
    def enable(self) -> None:
        """Accept money."""

    @abstractmethod
    def disable(self) -> None:
        """Stop accepting money (a note in escrow is still decided by the host)."""

    @abstractmethod
    def poll(self, sink: EventSink | None = None) -> list[CashEvent]:
        """One poll cycle: read what happened, call ``sink`` per event, then acknowledge."""

    def stack(self) -> None:
        """Accept the note held in escrow (devices with escrow)."""
        raise NotSupportedError(f"{self.name} has no escrow")

    def reject(self) -> None:
        """Return the note held in escrow (devices with escrow)."""
        raise NotSupportedError(f"{self.name} has no escrow")

    def payout(self, amount: int) -> None:
        """Start paying out ``amount`` minor units (payout devices); progress comes as events."""
        raise NotSupportedError(f"{self.name} cannot pay out")

    def checkpoint(self) -> dict[str, Any] | None:
        """The driver state that names its events (session, counters), JSON-serialisable.

        Why: a device repeats an event whose acknowledgement never left (a power cut between
        the journal's commit and the ACK); a restarted host that resumes from this state gives
        the repeat the id it had, so the journal counts it once. The machine layer
        (:class:`~vendhw.machine.cash.CashAcceptor`) stores it with each event it journals and
        calls :meth:`restore` at start-up. None: this driver keeps no such state."""
        return None

    def restore(self, data: dict[str, Any]) -> None:
        """Continue from a :meth:`checkpoint` after a restart, before :meth:`start`."""
        raise NotSupportedError(f"{self.name} keeps no checkpoint to restore")

    def status(self) -> dict[str, Any]:
        """What the device reports about itself (drivers add levels, counters, faults)."""
        return {"device": self.name, "currency": self.currency}

    def port_lost(self) -> DisconnectedError | None:
        """The error with which this driver's port went away (unplugged, pty closed), or None.

        Why: a driver may turn that error into a retry or a "no reply"; the transport's own
        record (:attr:`~vendhw.transport.base.Transport.lost`) tells the machine layer the
        port itself is gone, so it takes the device offline and reopens it. Found on the
        usual attributes (``transport``, ``bus.transport``, ``link.transport``); a driver
        holding its transport elsewhere overrides this."""
        for holder in (self, getattr(self, "bus", None), getattr(self, "link", None)):
            transport = getattr(holder, "transport", None)
            if isinstance(transport, Transport) and transport.lost is not None:
                return transport.lost
        return None

    @abstractmethod
    def close(self) -> None:
        """Release the transport."""
