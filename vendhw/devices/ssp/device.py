"""The SSP runner: :class:`SspDevice` on a port, and :func:`open_device`."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, TypeVar

from vendhw.devices.cash import CashDevice, CashEvent, EventSink
from vendhw.devices.engine import Op, drive
from vendhw.devices.link import FrameLink
from vendhw.devices.ssp.core import SspCore, SspRequest
from vendhw.devices.ssp.tables import BAUDRATE, MAX_PROTOCOL_VERSION, STOPBITS
from vendhw.errors import NoResponseError, SequenceError
from vendhw.framing.essp import DEFAULT_FIXED_KEY
from vendhw.framing.ssp import INTER_BYTE_GAP, REPLY_TIMEOUT, RETRIES, SspFramer
from vendhw.options import option_flag, option_ints
from vendhw.transport import Transport, open_transport

log = logging.getLogger("vendhw.devices.ssp")  # one logger for the package, as before
T = TypeVar("T")

# --- the runner --------------------------------------------------------------------------------


class SspDevice(SspCore, CashDevice):
    """An SSP/eSSP device on one port: note validator, with or without a payout unit.

    The rules are :class:`SspCore`'s operations; this class only runs them (:meth:`run`) and
    does the packet work (:meth:`_transact`): framing, sealing, the sequence flag, resends.

    :param encryption: ``"auto"`` agrees a key when the device knows the commands (payout
        devices refuse payouts without one), ``True`` insists, ``False`` never encrypts.
    :param channels: channel numbers to enable (default: every channel with a value).
    :param resume: a :meth:`checkpoint` from before a restart (see the module docstring).
    """

    def __init__(self, transport: Transport, *, address: int = 0,
                 encryption: bool | str = "auto", fixed_key: int = DEFAULT_FIXED_KEY,
                 reply_timeout: float = REPLY_TIMEOUT, retries: int = RETRIES,
                 protocol_version: int = MAX_PROTOCOL_VERSION,
                 channels: Iterable[int] | None = None, payout: bool = True,
                 name: str = "", resume: dict[str, Any] | None = None) -> None:
        self.transport = transport
        self.link = FrameLink(transport, SspFramer(), incoming="device", gap=INTER_BYTE_GAP)
        super().__init__(address=address, encryption=encryption, fixed_key=fixed_key,
                         protocol_version=protocol_version, channels=channels, payout=payout,
                         name=name or f"ssp@{transport.url}", resume=resume)
        self.reply_timeout = reply_timeout
        self.retries = retries

    # -- the runner --------------------------------------------------------------------------

    def run(self, op: Op[T], sink: EventSink | None = None) -> T:
        """Drive an operation to its end with blocking I/O; returns what it returns."""
        return drive(op, self._transact, sink=sink)

    def _transact(self, request: SspRequest) -> bytes:
        """Send one command and return its opened reply, resending the same packet (same
        sequence flag, same eSSP count) on silence or a stale reply."""
        command = request.command
        if request.sync:
            # SYNC is where the flags are agreed: its reply's flag is whatever the slave had.
            packet, seq = self.session.sync(), None
        else:
            packet = self.session.command(request.data, encrypt=request.encrypt)
            seq = self.session.seq
        retries = self.retries if request.retries is None else request.retries
        timeout = self.reply_timeout if request.timeout is None else request.timeout
        for attempt in range(retries + 1):
            if attempt:
                self.stats["retries"] += 1
                log.info("%s: no valid reply to 0x%02X, resending with the same sequence flag "
                         "(%d/%d)", self.name, command, attempt, retries)
            self.link.send(packet)
            try:
                # A reply carries the flag of its command (GA138): one with the other flag
                # is a stale or duplicated answer to the previous command, never this one's.
                frame = self.link.receive(timeout,
                                          accept=lambda f: f.get("address") ==
                                          self.session.address and seq in (None, f.get("seq", seq)))
                code, data = self.session.open(frame)
                return bytes((code,)) + data
            except NoResponseError:
                continue
            except SequenceError as exc:
                # An eSSP reply with another count is an older reply (duplicated or late on
                # the line); the slave answers the retransmission with its last reply.
                log.info("%s: %s; resending", self.name, exc)
                continue
        raise NoResponseError(f"no SSP reply to command 0x{command:02X} after "
                              f"{retries + 1} attempts", port=self.transport.url,
                              baudrate=self.transport.baudrate, timeout=timeout)

    # -- the CashDevice surface: each runs one operation --------------------------------------

    def command(self, command: int, params: bytes = b"", *, encrypt: bool | None = None,
                errors: dict[int, str] | None = None, recover: bool = True) -> bytes:
        """Send one command and return the data after OK (see :meth:`command_op`)."""
        return self.run(self.command_op(command, params, encrypt=encrypt, errors=errors,
                                        recover=recover))

    def sync(self) -> None:
        return self.run(self.sync_op())

    def negotiate_key(self) -> None:
        """eSSP key agreement (GA973 §4.2); eCOUNT restarts at 0 on both sides."""
        return self.run(self.negotiate_key_op())

    def start(self, sink: EventSink | None = None) -> None:
        """SYNC, protocol version, key agreement, setup, serial number; left inhibited.

        Nothing is reset: events the device holds from before come at the first poll (it
        repeats them until EVENT ACK), so ``sink`` gets nothing here."""
        return self.run(self.start_op(), sink)

    def enable(self) -> None:
        return self.run(self.enable_op())

    def disable(self) -> None:
        return self.run(self.disable_op())

    def stack(self) -> None:
        """Accept the note in escrow: the next poll stacks it (GA138 HOLD: a poll accepts)."""
        return self.run(self.stack_op())

    def reject(self) -> None:
        """Return the note in escrow (REJECT 0x08)."""
        return self.run(self.reject_op())

    def hold(self) -> None:
        """Keep the note in escrow for another ``ESCROW_TIMEOUT`` (HOLD 0x18)."""
        return self.run(self.hold_op())

    def last_reject_reason(self) -> str:
        return self.run(self.last_reject_reason_op())

    def poll(self, sink: EventSink | None = None) -> list[CashEvent]:
        """POLL (WITH ACK), events to the sink, then EVENT ACK; recovers after a reset."""
        return self.run(self.poll_op(), sink)

    def enable_payout(self) -> None:
        """ENABLE PAYOUT DEVICE (SMART Payout, NV11): store notes for later payouts."""
        return self.run(self.enable_payout_op())

    def disable_payout(self) -> None:
        return self.run(self.disable_payout_op())

    def payout(self, amount: int, *, test: bool = False) -> None:
        """PAYOUT AMOUNT in minor units; progress, done or incomplete come as poll events.

        ``test=True`` asks whether the amount could be paid without paying it. A refusal
        raises :class:`SspResponseError` with the reason (not enough value, cannot pay the
        exact amount, busy, disabled).
        """
        return self.run(self.payout_op(amount, test=test))

    def can_pay(self, amount: int) -> bool:
        """Whether the device could pay ``amount`` exactly now (PAYOUT AMOUNT, test option)."""
        return self.run(self.can_pay_op(amount))

    def float_amount(self, keep: int, min_payout: int) -> None:
        """FLOAT AMOUNT: send stored money to the cashbox until ``keep`` remains."""
        return self.run(self.float_amount_op(keep, min_payout))

    def empty(self, *, smart: bool = False) -> None:
        """EMPTY ALL (or SMART EMPTY, which records the value) to the cashbox."""
        return self.run(self.empty_op(smart=smart))

    def halt_payout(self) -> None:
        return self.run(self.halt_payout_op())

    def set_route(self, value: int, *, to_payout: bool) -> None:
        """SET DENOMINATION ROUTE: store notes of ``value`` for payout or send to cashbox."""
        return self.run(self.set_route_op(value, to_payout=to_payout))

    def get_route(self, value: int) -> str:
        return self.run(self.get_route_op(value))

    def levels(self) -> list[dict[str, Any]]:
        """GET ALL LEVELS: ``[{"value", "currency", "level"}]`` per stored denomination."""
        return self.run(self.levels_op())

    def reset_device(self) -> None:
        """RESET: the device restarts; the next polls report SLAVE RESET and the host
        recovers by itself."""
        return self.run(self.reset_device_op())

    def status(self) -> dict[str, Any]:
        return self.run(self.status_op())

    def close(self) -> None:
        self.link.close()


def open_device(url: str, *, address: int | str = 0, encryption: bool | str = "auto",
                reply_timeout: float | str = REPLY_TIMEOUT, retries: int | str = RETRIES,
                protocol_version: int | str = MAX_PROTOCOL_VERSION,
                channels: str | Iterable[int] | None = None, payout: bool | str = True,
                **options: Any) -> SspDevice:
    """Open an SSP device on ``url`` (9600 8N2) for :mod:`vendhw.cli.cash` and integrators.

    Options may be strings (from a URL or ``-o key=value``). ``payout=False`` leaves the
    payout unit of a SMART Payout disabled at start.
    """
    if isinstance(channels, str):
        channels = option_ints(channels)
    auto = isinstance(encryption, str) and encryption.strip().lower() == "auto"
    encryption = "auto" if auto else option_flag(encryption)
    transport = open_transport(url, baudrate=BAUDRATE, stopbits=STOPBITS, **options)
    device = SspDevice(transport, address=int(address, 0) if isinstance(address, str)
                       else address, encryption=encryption,
                       reply_timeout=float(reply_timeout), retries=int(retries),
                       protocol_version=int(protocol_version), channels=channels,
                       payout=option_flag(payout))
    return device
