"""The SSP host's rules without I/O: :class:`SspRequest` steps and :class:`SspCore`."""

from __future__ import annotations

import logging
import secrets
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from vendhw.devices.cash import CashEvent, CashEventKind
from vendhw.devices.engine import Deliver, Op
from vendhw.devices.ssp.events import EventMapper
from vendhw.devices.ssp.payout import SspPayoutOps
from vendhw.devices.ssp.session import SspSession
from vendhw.devices.ssp.setup import SetupInfo, parse_setup
from vendhw.devices.ssp.tables import (
    COMMAND_NOT_KNOWN,
    DISABLE,
    ENABLE,
    EVENT_ACK,
    FAIL,
    GET_SERIAL_NUMBER,
    HOLD,
    HOST_PROTOCOL_VERSION,
    KEY_NOT_SET,
    LAST_REJECT_CODE,
    MAX_PROTOCOL_VERSION,
    MIN_PROTOCOL_VERSION,
    NO_ESCROW_UNITS,
    OK,
    PARAMETER_OUT_OF_RANGE,
    PAYOUT_UNITS,
    POLL,
    POLL_WITH_ACK,
    REJECT,
    REJECT_REASONS,
    REQUEST_KEY_EXCHANGE,
    RESET,
    SET_GENERATOR,
    SET_INHIBITS,
    SET_MODULUS,
    SETUP_REQUEST,
    SYNC,
    SspResponseError,
)
from vendhw.errors import (
    ConfigurationError,
    DeviceFault,
    NoResponseError,
    NotSupportedError,
    UnexpectedReplyError,
    VendhwError,
)
from vendhw.framing.essp import DEFAULT_FIXED_KEY, EsspCipher, KeyAgreement
from vendhw.framing.ssp import ACKED_EVENTS, UNKNOWN_EVENT, Event, UnitType, decode_poll

log = logging.getLogger("vendhw.devices.ssp")  # one logger for the package, as before

# --- sans-I/O steps ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SspRequest:
    """One SSP command for the runner; the opened reply comes back (generic response first).

    The runner builds the packet (a new sequence flag, sealed when ``encrypt``) and resends
    that same packet, same flag, on silence or a stale reply: the slave answers a repeat with
    its last reply, so nothing runs twice. When every attempt went unanswered it throws
    :class:`~vendhw.errors.NoResponseError` into the operation, which decides what that means.
    """

    command: int
    params: bytes = b""
    encrypt: bool = False
    sync: bool = False
    """The SYNC packet: flag 1, and its reply may carry either flag (GA138)."""
    retries: int | None = None
    """Resends allowed; None = the runner's ``retries``."""
    timeout: float | None = None
    """Reply deadline; None = the runner's ``reply_timeout``."""

    @property
    def data(self) -> bytes:
        return bytes((self.command,)) + self.params


Step = SspRequest | Deliver
"""SSP operations yield requests and events (:mod:`vendhw.devices.engine`)."""


# --- the core ----------------------------------------------------------------------------------


class SspCore(SspPayoutOps):
    """The SSP/eSSP host's rules without I/O: its state, and operations (``*_op``) that yield
    :class:`SspRequest` and :class:`~vendhw.devices.engine.Deliver` steps.

    Why: what to send, what a reply or a failure means and when an event is acknowledged are
    checked by driving these with scripted replies (:func:`vendhw.devices.engine.replay`);
    :class:`SspDevice` runs the same operations on a port. The payout, float, route and
    levels operations come from :class:`SspPayoutOps`.
    """

    name: str
    currency: str = ""

    def __init__(self, *, address: int = 0, encryption: bool | str = "auto",
                 fixed_key: int = DEFAULT_FIXED_KEY,
                 protocol_version: int = MAX_PROTOCOL_VERSION,
                 channels: Iterable[int] | None = None, payout: bool = True,
                 name: str = "ssp", resume: dict[str, Any] | None = None) -> None:
        self.session = SspSession(address)
        self.name = name
        self.encryption = encryption
        self.fixed_key = fixed_key
        self.wanted_version = protocol_version
        self.wanted_channels = set(channels) if channels is not None else None
        self.want_payout = payout
        self.setup: SetupInfo | None = None
        self.serial: int | None = None
        self.encrypted = False
        self.enabled = False
        self.payout_enabled = False
        self.poll_with_ack = True
        self.mapper = EventMapper(self.name)
        self._token = str(resume["session"]) if resume else secrets.token_hex(4)
        self.acks = int(resume["acks"]) if resume else 0
        self._polls = 0
        self._fresh = False
        self._quiet_reset = False
        self._out_of_step = False
        self._restarted = False
        """The device was found reset (KEY NOT SET); its SLAVE RESET event may not come."""
        self._unsure_ack: tuple[Any, ...] | None = None
        """The acked events of a poll whose EVENT ACK went unanswered (it may or may not have
        reached the device)."""
        self._pending: deque[CashEvent] = deque()
        self.stats = {"retries": 0, "resyncs": 0, "key_exchanges": 0}

    @property
    def version(self) -> int:
        return self.setup.protocol_version if self.setup else MIN_PROTOCOL_VERSION

    # -- commands ----------------------------------------------------------------------------

    def command_op(self, command: int, params: bytes = b"", *, encrypt: bool | None = None,
                   errors: dict[int, str] | None = None, recover: bool = True) -> Op[bytes]:
        """One command; returns the data after OK, other responses raise.

        A KEY NOT SET answer to an encrypted command means the device lost its key (a reset):
        the host agrees a new one and sends the command once more. An encrypted command left
        unanswered may have run (and advanced the device's count): the next one resyncs.
        """
        if encrypt is None:
            encrypt = self.encrypted
        if encrypt and self._out_of_step and recover:
            yield from self.resync_op()
        try:
            reply: bytes = yield SspRequest(command, params, encrypt=encrypt)
        except NoResponseError:
            if encrypt:
                # The slave may or may not have executed the packet (and advanced its count):
                # the counts can no longer be trusted. GA138/GA973: SYNC and a new key.
                self._out_of_step = True
            raise
        code, data = reply[0], reply[1:]
        if code == KEY_NOT_SET and encrypt and recover:
            log.warning("%s: KEY NOT SET: the device lost its key; recovering", self.name)
            yield from self.recover_op()
            return (yield from self.command_op(command, params, errors=errors, recover=False))
        if code != OK:
            raise SspResponseError(command, code, data, errors)
        return data

    def resync_op(self) -> Op[None]:
        """The eSSP counts may disagree (an encrypted packet went unanswered): SYNC and agree
        a new key, which restarts the count on both sides (GA138 "Encryption", GA973). The
        device keeps its state (events, enable, inhibits); only the session is new."""
        log.warning("%s: eSSP count out of step; SYNC and a new key", self.name)
        self._out_of_step = False
        self.stats["resyncs"] += 1
        try:
            yield from self.sync_op()
            yield from self.negotiate_key_op()
        except VendhwError:
            self._out_of_step = True
            raise

    def sync_op(self) -> Op[None]:
        """SYNC: the slave expects flag 0 next (the runner sends it with flag 1)."""
        reply: bytes = yield SspRequest(SYNC, sync=True)
        if reply[0] != OK:
            raise SspResponseError(SYNC, reply[0], reply[1:])

    # -- bring-up ----------------------------------------------------------------------------

    def negotiate_key_op(self) -> Op[None]:
        """eSSP key agreement (GA973 §4.2); eCOUNT restarts at 0 on both sides."""
        agreement = KeyAgreement.new()
        self.session.cipher = None
        yield from self.command_op(SET_GENERATOR, agreement.generator.to_bytes(8, "little"),
                                   encrypt=False)
        yield from self.command_op(SET_MODULUS, agreement.modulus.to_bytes(8, "little"),
                                   encrypt=False)
        reply = yield from self.command_op(REQUEST_KEY_EXCHANGE,
                                           agreement.inter_key.to_bytes(8, "little"),
                                           encrypt=False)
        if len(reply) < 8:
            raise UnexpectedReplyError(f"key exchange reply too short: {reply.hex(' ')}")
        key = agreement.negotiated_key(int.from_bytes(reply[:8], "little"))
        self.session.cipher = EsspCipher.from_agreement(key, self.fixed_key)
        self.encrypted = True
        self.stats["key_exchanges"] += 1

    def set_version_op(self) -> Op[int]:
        """HOST PROTOCOL VERSION, newest first, one down on each FAIL."""
        for version in range(self.wanted_version, MIN_PROTOCOL_VERSION - 1, -1):
            try:
                yield from self.command_op(HOST_PROTOCOL_VERSION, bytes((version,)),
                                           encrypt=False)
                return version
            except SspResponseError as exc:
                if exc.code not in (FAIL, PARAMETER_OUT_OF_RANGE):
                    raise
        raise DeviceFault(f"{self.name}: no protocol version between {MIN_PROTOCOL_VERSION} "
                          f"and {self.wanted_version} is accepted")

    def start_op(self) -> Op[None]:
        """SYNC, protocol version, key agreement, setup, serial number; left inhibited."""
        self.encrypted = False
        self.session.cipher = None
        self._out_of_step = False
        yield from self.sync_op()
        version = yield from self.set_version_op()
        if self.encryption:
            try:
                yield from self.negotiate_key_op()
            except SspResponseError as exc:
                if self.encryption is True or exc.code != COMMAND_NOT_KNOWN:
                    raise
                log.info("%s: the device does not know eSSP; continuing in clear", self.name)
        self.setup = parse_setup((yield from self.command_op(SETUP_REQUEST)))
        if self.setup.protocol_version != version:
            log.info("%s: asked for protocol %d, setup reports %d", self.name, version,
                     self.setup.protocol_version)
        serial = yield from self.command_op(GET_SERIAL_NUMBER)
        self.serial = int.from_bytes(serial[:4], "big")
        self.currency = self.setup.currency or (self.setup.channels[0].currency
                                                if self.setup.channels else "")
        self.mapper.currency = self.currency
        self.mapper.channels = {c.number: c for c in self.setup.channels}
        yield from self._inhibits_op(enable=False)
        if self.is_payout and self.want_payout:
            try:
                yield from self.enable_payout_op()
            except SspResponseError as exc:
                if exc.code != KEY_NOT_SET:
                    raise
                log.warning("%s: the payout unit needs eSSP; notes are accepted, payouts "
                            "refused", self.name)
        self._fresh = True  # the next poll's SLAVE RESET is the one just handled
        self._quiet_reset = True  # ...and, after the user's start(), not news either

    def recover_op(self) -> Op[None]:
        """After a device reset: sync, key, protocol and inhibits again; re-enable if we were."""
        self.stats["resyncs"] += 1
        self._restarted = True
        was_enabled = self.enabled
        yield from self.start_op()
        self._quiet_reset = False  # a reset in operation is reported
        if was_enabled:
            yield from self.enable_op()

    # -- acceptance --------------------------------------------------------------------------

    @property
    def is_payout(self) -> bool:
        return bool(self.setup and self.setup.unit_type in PAYOUT_UNITS)

    def _mask(self) -> int:
        assert self.setup is not None
        mask = 0
        for channel in self.setup.channels:
            wanted = self.wanted_channels is None or channel.number in self.wanted_channels
            if wanted and channel.value and channel.number <= 16:
                mask |= 1 << (channel.number - 1)
        return mask

    def _inhibits_op(self, *, enable: bool) -> Op[None]:
        assert self.setup is not None
        mask = self._mask() if enable else 0
        if self.setup.unit_type == UnitType.SMART_HOPPER:
            return  # a SMART Hopper has coin-mech inhibits per denomination instead
        yield from self.command_op(SET_INHIBITS, mask.to_bytes(2, "little"))

    def _require_setup(self) -> SetupInfo:
        if self.setup is None:
            raise ConfigurationError(f"{self.name}: call start() first")
        return self.setup

    def enable_op(self) -> Op[None]:
        """Inhibits for the wanted channels, then ENABLE."""
        self._require_setup()
        yield from self._inhibits_op(enable=True)
        yield from self.command_op(ENABLE)
        self.enabled = True
        self.mapper.disabled = False

    def disable_op(self) -> Op[None]:
        yield from self.command_op(DISABLE)
        self.enabled = False

    def stack_op(self) -> Op[None]:
        """Accept the note in escrow: nothing to send, the next poll stacks it (GA138 HOLD:
        a poll accepts)."""
        if self.setup and self.setup.unit_type in NO_ESCROW_UNITS:
            raise NotSupportedError(f"{self.name} has no escrow")
        yield from ()

    def reject_op(self) -> Op[None]:
        """Return the note in escrow (REJECT 0x08)."""
        yield from self.command_op(REJECT)

    def hold_op(self) -> Op[None]:
        """Keep the note in escrow for another ``ESCROW_TIMEOUT`` (HOLD 0x18, sent instead of
        a poll: a poll would accept the note)."""
        yield from self.command_op(HOLD)

    def last_reject_reason_op(self) -> Op[str]:
        data = yield from self.command_op(LAST_REJECT_CODE)
        code = data[0] if data else 0xFF
        return REJECT_REASONS.get(code, f"reject code 0x{code:02X}")

    # -- polling -----------------------------------------------------------------------------

    def poll_op(self) -> Op[list[CashEvent]]:
        """POLL (WITH ACK), events to the sink, then EVENT ACK; recovers after a reset.

        Every event is a :class:`~vendhw.devices.engine.Deliver` step before the EVENT ACK
        request: a sink that raises closes the operation, so nothing is acknowledged and the
        device repeats the events (with the same ids).
        """
        self._require_setup()
        out: list[CashEvent] = []
        while self._pending:  # plain-poll events the sink refused last time
            yield Deliver(self._pending[0])
            out.append(self._pending.popleft())
        data = yield from self._poll_command_op()
        # An unknown event never fails the poll: what parses is kept, the rest goes to the
        # operator, and the poll is acknowledged (else POLL WITH ACK repeats it forever).
        events = decode_poll(data, self.version)
        self._polls += 1
        fresh, self._fresh = self._fresh, False
        reset = any(e["code"] == Event.SLAVE_RESET for e in events)
        if fresh and self._quiet_reset:  # the power-up start() just handled, not news
            events = [e for e in events if e["code"] != Event.SLAVE_RESET]
        prefix = f"ssp:{self.serial:08X}/{self._token}"
        acked = tuple((e["code"], e.get("channel"), repr(e.get("values")))
                      for e in events if self.poll_with_ack and e["code"] in ACKED_EVENTS)
        repeat_value = 0
        if self._unsure_ack is not None:
            if acked and acked == self._unsure_ack:
                # The same events as the poll whose EVENT ACK went unanswered: most likely
                # repeated (the ACK never arrived), so they keep their ids and count once. A
                # device has no event number, so identical new events would read the same:
                # an operator is told the value (below).
                repeat_value = 1
            else:
                self.acks += 1  # the ACK arrived: these are new events
            self._unsure_ack = None
        ids: list[str] = []
        k = 0
        needs_ack = False
        for i, event in enumerate(events):
            if self.poll_with_ack and (event["code"] in ACKED_EVENTS
                                       or event["event"] == UNKNOWN_EVENT):
                ids.append(f"{prefix}/a{self.acks}/{k}")
                k += 1
                needs_ack = True
            else:
                ids.append(f"{prefix}/p{self._polls}/{i}")
        reason = None
        if any(e["code"] == Event.NOTE_REJECTED for e in events):
            try:
                reason = yield from self.last_reject_reason_op()
            except VendhwError as exc:
                log.info("%s: LAST REJECT CODE failed: %s", self.name, exc)
        cash = self.mapper.map(events, ids, reason)
        if self._restarted:
            self._restarted = False
            at_risk = self.mapper.at_risk(f"{prefix}/p{self._polls}/in-path")
            if at_risk is not None:  # a reset whose SLAVE RESET event did not reach us
                cash.insert(0, at_risk)
        if self.poll_with_ack:
            for made in cash:  # a refused event stops here; the device repeats it unacked
                yield Deliver(made)
                out.append(made)
            if repeat_value:
                value = sum(c.value or 0 for c in cash if c.kind is CashEventKind.CREDIT)
                if value:
                    made = CashEvent(
                        CashEventKind.FAULT, self.name, event_id=f"{prefix}/a{self.acks}/unsure",
                        value=value, currency=self.currency,
                        reason="credit repeated after an unanswered EVENT ACK: counted once; "
                        "check whether a second note of the same value was taken",
                        detail={"needs_review": True})
                    yield Deliver(made)
                    out.append(made)
            if needs_ack:
                try:
                    yield from self.command_op(EVENT_ACK)
                except VendhwError:
                    # No answer, a garbled one, or the port gone mid-reply: whether the ACK
                    # arrived is unknown either way, so the next poll decides.
                    self._unsure_ack = acked
                    raise
                self.acks += 1
        else:
            self._pending.extend(cash)
            while self._pending:
                yield Deliver(self._pending[0])
                out.append(self._pending.popleft())
        if reset and not fresh:
            yield from self.recover_op()  # a reset since start(): session, key, inhibits gone
        return out

    def _poll_command_op(self) -> Op[bytes]:
        if self.poll_with_ack:
            try:
                return (yield from self.command_op(POLL_WITH_ACK))
            except SspResponseError as exc:
                if exc.code != COMMAND_NOT_KNOWN:
                    raise
                log.info("%s: no POLL WITH ACK; using POLL", self.name)
                self.poll_with_ack = False
        return (yield from self.command_op(POLL))

    def checkpoint(self) -> dict[str, Any]:
        """What identifies repeated events across a restart; pass it back as ``resume=``."""
        unsure = None if self._unsure_ack is None else [list(e) for e in self._unsure_ack]
        return {"session": self._token, "acks": self.acks, "unsure_ack": unsure}

    def restore(self, data: dict[str, Any]) -> None:
        """Continue from a :meth:`checkpoint` (like ``resume=``), before :meth:`start`;
        :class:`~vendhw.machine.cash.CashAcceptor` does this from its journal."""
        self._token = str(data["session"])
        self.acks = int(data["acks"])
        unsure = data.get("unsure_ack")  # an EVENT ACK cut off before the restart
        self._unsure_ack = None if unsure is None else tuple(tuple(e) for e in unsure)

    # -- the rest ----------------------------------------------------------------------------

    def reset_device_op(self) -> Op[None]:
        """RESET: the device restarts; the next polls report SLAVE RESET and the host
        recovers by itself."""
        yield from self.command_op(RESET)

    def status_op(self) -> Op[dict[str, Any]]:
        setup = self._require_setup()
        out: dict[str, Any] = {"device": self.name, "currency": self.currency,
                               "serial": self.serial, **setup.to_dict(),
                               "encrypted": self.encrypted, "enabled": self.enabled,
                               "poll_with_ack": self.poll_with_ack, **self.stats}
        if self.is_payout:
            out["levels"] = yield from self.levels_op()
        return out
