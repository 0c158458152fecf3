"""The thread runner shared by the changer and bill hosts: drives a core's operations over
an :class:`~vendhw.devices.mdb.link.MdbLink` and ACKs reply data at once."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from vendhw.devices.cash import CashDevice, CashEvent, EventSink
from vendhw.devices.engine import Op, drive
from vendhw.devices.mdb.core import Request, TubeCounts, _CashCore
from vendhw.devices.mdb.link import MdbLink
from vendhw.errors import NotSupportedError

T = TypeVar("T")
CoreT = TypeVar("CoreT", bound=_CashCore)
V = TypeVar("V")


class _CoreAttr(Generic[V]):
    """A device attribute kept in its core (one state under the names the hosts always had)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.attr = name

    def __get__(self, device: Any, owner: type | None = None) -> V:
        value: V = getattr(device.core, self.attr)
        return value

    def __set__(self, device: Any, value: V) -> None:
        setattr(device.core, self.attr, value)


class _MdbCashDevice(CashDevice, Generic[CoreT]):
    """The thread runner of a changer or bill core over an :class:`MdbLink`."""

    address: int
    name: _CoreAttr[str] = _CoreAttr()
    currency: _CoreAttr[str] = _CoreAttr()

    def __init__(self, link: MdbLink, core: CoreT) -> None:
        self.link = link
        self.core = core
        core.port = link.transport.url

    def run(self, op: Op[T], sink: EventSink | None = None) -> T:
        """Drive one operation. Reply data is ACKed as soon as it is read, inside the bus
        hold that spans a command and its ACK (another device's command in between would make
        the ACK late, and the peripheral would repeat its data); events go to ``sink`` only
        after that, outside the hold."""
        return drive(op, self._transact, sink=sink, hold=lambda: self.link.lock, throw=False)

    def _transact(self, request: Request | TubeCounts) -> Any:
        if isinstance(request, TubeCounts):
            return self._tube_counts()
        reply = self.link.transact(self.core.address, request.command, request.data,
                                   longest=request.longest)
        if reply is not None and request.ack:
            self.link.ack()  # now, not after the journal: a late ACK means a repeat
        return reply

    def _start_sink(self, sink: EventSink | None) -> EventSink:
        """Where a start's events go: ``sink``, or (none given) the first poll, which
        delivers what the core holds undelivered before it polls."""
        if sink is not None:
            return sink
        return lambda event: self.core._undelivered.append(event)

    def _tube_counts(self) -> list[int]:
        raise NotSupportedError(f"{self.name} has no tubes")

    def _activities(self, data: bytes) -> list[bytes]:
        return self.core.activities(data)

    def checkpoint(self) -> dict[str, Any]:
        """The poll counter that names events; the cash journal stores it with them."""
        return self.core.checkpoint()

    def restore(self, data: dict[str, Any]) -> None:
        """Continue from a :meth:`checkpoint` after a restart, before :meth:`start`: data the
        peripheral still repeats (unacknowledged when the host died) is read before RESET and
        delivered at the first poll with the ids it had, so it counts once."""
        self.core.restore(data)

    def poll(self, sink: EventSink | None = None) -> list[CashEvent]:
        """POLL once; ACK data at once (within ``ACK_TIMEOUT``), then give events to ``sink``.

        If ``sink`` raises, the events stay here and go to the sink again, same ids, at the
        next call, before anything new is polled. Data equal to what the previous POLL
        delivered is taken as a repeat after a lost ACK: counted once, and an operator is told
        (two identical coins in two consecutive polls would read the same).
        """
        return self.run(self.core.poll_op(), sink)

    def close(self) -> None:
        self.link.release()
