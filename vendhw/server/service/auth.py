"""Machine authentication: signatures, nonces, secrets and idempotency keys."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import delete, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from vendhw.contract import signing
from vendhw.server.db import PENDING_NONCE, PendingNonce, ReplayedNonce, on_commit, spend_nonce
from vendhw.server.models import (
    IdempotentResponse,
    Machine,
    Nonce,
)
from vendhw.server.service.core import (
    LAST_SEEN_EVERY_S,
    SECRET_CACHE_S,
    BackendCore,
    log,
)
from vendhw.server.service.errors import ApiError


class AuthMixin(BackendCore):
    """Machine authentication: signatures, nonces, secrets and idempotency keys."""

    def authenticate(self, headers: Mapping[str, str], method: str, path: str,
                     body: bytes) -> str:
        """The machine id of a correctly signed, fresh, never-seen request; else ApiError 401.

        Spends the nonce in a transaction of its own (the guard instead defers it into the
        request's first write transaction: :meth:`verify_request`)."""
        pending = self.verify_request(headers, method, path, body)
        try:
            with self.db.tx() as s:
                if not pending.stored:  # a request context may have spent it already
                    spend_nonce(s, pending)
            pending.stored = True
        except ReplayedNonce:
            raise ApiError(401, "replayed_nonce", "this nonce was already used") from None
        return pending.machine_id

    def verify_request_cached(self, headers: Mapping[str, str], method: str, path: str,
                              body: bytes) -> PendingNonce | None:
        """:meth:`verify_request` without touching the database: None when it would have
        to (the machine's secret is not cached, or the cached one does not verify and may
        have been rotated); then call :meth:`verify_request` (in a thread). Never blocks, so
        the guard runs it on the event loop: most machine requests skip a hop to the thread
        pool and back (~0.1-0.2 ms of CPU each, ``tools/bench_http_floor.py``)."""
        return self._verify(headers, method, path, body, cached_only=True)

    def verify_request(self, headers: Mapping[str, str], method: str, path: str,
                       body: bytes) -> PendingNonce:
        """Check a request's signature, timestamp and nonce shape (ApiError 401 if wrong);
        its nonce, not yet spent, is returned: the caller spends it (see
        :class:`~vendhw.server.db.PendingNonce`); a replay is refused when it does, before
        anything it did commits. A request that calls a provider before its first write
        checks first (:meth:`_refuse_replay`)."""
        pending = self._verify(headers, method, path, body, cached_only=False)
        assert pending is not None
        return pending

    def _verify(self, headers: Mapping[str, str], method: str, path: str, body: bytes, *,
                cached_only: bool) -> PendingNonce | None:
        parts = signing.SignedParts.from_headers(headers)
        if parts is None:
            raise ApiError(401, "unauthenticated", "missing X-Vendhw-Machine/-Timestamp/"
                           "-Nonce/-Signature headers")
        try:
            timestamp = int(parts.timestamp)
        except ValueError:
            raise ApiError(401, "bad_timestamp", "X-Vendhw-Timestamp must be unix seconds"
                           ) from None
        now = self.clock.now()
        window = self.settings.auth_window
        if abs(now - timestamp) > window:
            raise ApiError(401, "stale_timestamp",
                           f"timestamp {timestamp} is {now - timestamp:+.0f} s from the "
                           f"server's clock (window {window:.0f} s): check the machine's clock",
                           server_time=int(now))
        if not (8 <= len(parts.nonce) <= 64) or not parts.nonce.isascii():
            raise ApiError(401, "bad_nonce", "the nonce must be 8-64 ASCII characters")
        if cached_only:
            secret = self._cached_secret(parts.machine_id)
            if secret is None or not signing.verify(secret, parts, method, path, body):
                return None  # unknown here, or rotated: the database decides (in a thread)
        else:
            secret = self._machine_secret(parts.machine_id, refresh=False)
            if secret is None or not signing.verify(secret, parts, method, path, body):
                secret = self._machine_secret(parts.machine_id, refresh=True)  # rotated?
                if not signing.verify(secret or secrets.token_hex(16), parts, method, path,
                                      body):
                    raise ApiError(401, "bad_signature", "unknown machine or wrong signature")
        last_seen = None
        if now - self._seen.get(parts.machine_id, 0.0) > LAST_SEEN_EVERY_S:
            last_seen = now
            self._seen[parts.machine_id] = now
        return PendingNonce(parts.machine_id, parts.nonce, timestamp + window + 1, last_seen)

    def _cached_secret(self, machine_id: str) -> str | None:
        """A machine's secret if cached and fresh (no database access), else None."""
        cached = self._secrets.get(machine_id)
        if cached is not None and self.clock.now() - cached[1] < SECRET_CACHE_S:
            return cached[0]
        return None

    def _machine_secret(self, machine_id: str, *, refresh: bool) -> str | None:
        """A machine's secret, cached briefly so most requests verify without a query.

        A secret changed through this process takes effect at once; one changed by another
        process (the CLI) within SECRET_CACHE_S, or at once for a request that fails with the
        cached one.
        """
        now = self.clock.now()
        cached = self._secrets.get(machine_id)
        if cached is not None and not refresh and now - cached[1] < SECRET_CACHE_S:
            return cached[0]
        with self.db.read() as s:
            secret = s.execute(select(Machine.secret).where(Machine.id == machine_id)).scalar()
        if secret is None:
            self._secrets.pop(machine_id, None)
            return None
        self._secrets[machine_id] = (secret, now)
        return str(secret)

    def _refuse_replay(self, s: Session) -> None:
        """In a read before a provider call: refuse (401) a request whose nonce was spent,
        so a replay never reaches the provider (its first write would refuse it later)."""
        pending = PENDING_NONCE.get()
        if pending is None or pending.stored:
            return
        if s.execute(select(Nonce.nonce).where(Nonce.machine_id == pending.machine_id,
                                               Nonce.nonce == pending.nonce)).first():
            raise ApiError(401, "replayed_nonce", "this nonce was already used")

    def idempotent(self, machine_id: str, key: str | None, request: bytes,
                   compute: Callable[[], tuple[int, dict[str, Any]]], *,
                   together: bool = False) -> tuple[int, dict[str, Any]]:
        """Run ``compute`` once per (machine, key); a retry gets the first answer back.

        A key reused for a different request is refused (409), and a retry that arrives while
        the first is still running is told so (409 ``request_in_progress``) instead of
        running twice. The key records the server instance (process) whose request holds it,
        and whether that request still runs is decided by what is known about its holder
        (:meth:`_key_row`): this process knows its own running keys exactly
        (:attr:`inflight`); another process is running its keys while its heartbeat row is
        alive, and its requests are dead once its beats stopped (``instance_timeout``: a
        SIGKILL, a power cut); a key whose holder cannot be judged (a row or a server from
        before migration 0004, a process without a heartbeat) falls back to the lease
        (``idempotency_lease``). A dead request's key is taken over by the retry, which runs
        the request again; the operations behind keys are themselves idempotent by state (a
        result, a cash sale, a code reservation apply once however often they run), so the
        outcome is still applied once. A live holder's key is never taken over, however long
        its request takes.

        Commits: the key is claimed ("in progress") in a transaction of its own (which also
        carries the request's nonce), and the operation stores its answer in its own last
        transaction (:meth:`_answer`), so a keyed request costs one commit more than the
        operation, not three. ``together=True`` (create order: its work is one transaction
        after the provider call) claims the key in the operation's transaction itself
        (:meth:`_claim_key`): the key, the work and the answer commit at once or not at all,
        and a request that dies leaves nothing behind to wait for. The heartbeat is a commit
        of its own per process and interval, never per request.
        """
        if not key:
            return compute()
        if len(key) > 128:
            raise ApiError(400, "bad_idempotency_key", "at most 128 characters")
        claim = _KeyClaim(machine_id, key, hashlib.sha256(request).hexdigest(),
                          self.clock.now(), together)
        # Entered before the claim can commit, left after the row got its answer (or was
        # deleted): a key this process holds and nobody here has entered is dead.
        self.inflight.enter((machine_id, key))
        try:
            return self._keyed(claim, compute)
        finally:
            self.inflight.leave((machine_id, key), orphaned=claim.holding)

    def _keyed(self, claim: _KeyClaim, compute: Callable[[], tuple[int, dict[str, Any]]]
               ) -> tuple[int, dict[str, Any]]:
        machine_id, key = claim.machine_id, claim.key
        if claim.together:
            with self.db.read() as s:  # answered already: no provider call, no write
                row = s.get(IdempotentResponse, (machine_id, key))
                if row is not None:
                    answer = self._key_row(s, row, claim)
                    if answer is not None:
                        return answer
                    claim.together = False  # a dead request's claim: take it over below
        if not claim.together:
            try:
                with self.db.tx() as s:
                    row = s.get(IdempotentResponse, (machine_id, key), with_for_update=True)
                    if row is not None:
                        answer = self._key_row(s, row, claim)
                        if answer is not None:
                            return answer
                        row.created_at, row.holder = claim.now, self.instance_id  # taken over
                    else:
                        s.add(IdempotentResponse(machine_id=machine_id, key=key,
                                                 request_hash=claim.digest, status_code=0,
                                                 body={}, created_at=claim.now,
                                                 holder=self.instance_id))
            except IntegrityError:
                raise ApiError(409, "request_in_progress",
                               "the first request with this key is still running") from None
            claim.holding = True
        token = _CLAIM.set(claim)
        try:
            status, body = compute()
        except _Answered as done:
            return done.status, done.body
        except _KeyRefused:
            raise
        except IntegrityError:
            if not claim.together:
                self._forget(claim)
                raise
            # together: another request with this key committed first (PostgreSQL)
            return self._answer_of(claim)
        except ApiError as exc:
            if exc.status >= 500:
                if not claim.together:
                    self._forget(claim)
                raise
            status, body = exc.status, exc.body()
        except BaseException:
            if not claim.together:
                self._forget(claim)
            raise
        finally:
            _CLAIM.reset(token)
        if claim.answer is not None:  # stored by the operation's own transaction
            return claim.answer
        first: tuple[int, dict[str, Any]] | None = None
        try:
            with self.db.tx() as s:
                row = s.get(IdempotentResponse, (machine_id, key), with_for_update=True)
                if row is None:  # together, and the operation failed before its claim
                    s.add(IdempotentResponse(machine_id=machine_id, key=key,
                                             request_hash=claim.digest, status_code=status,
                                             body=body, created_at=claim.now,
                                             holder=self.instance_id))
                elif row.status_code == 0:
                    row.status_code, row.body = status, body
                else:  # a takeover finished first: one stored answer for all
                    first = row.status_code, dict(row.body)
        except IntegrityError:
            claim.holding = False  # together: another request's row
            return self._answer_of(claim)
        claim.holding = False
        return first if first is not None else (status, body)

    def _key_row(self, s: Session, row: IdempotentResponse, claim: _KeyClaim
                 ) -> tuple[int, dict[str, Any]] | None:
        """The stored answer of an existing key row; None when its request died (the caller
        takes the key over); ApiError 409 if reused or still running."""
        if row.request_hash != claim.digest:
            raise _KeyRefused(409, "idempotency_key_reused",
                              "this Idempotency-Key was used for another request")
        if row.status_code != 0:
            return row.status_code, dict(row.body)
        running, why = self._still_running(s, row, claim)
        if running is not None:
            raise _KeyRefused(409, "request_in_progress",
                              "the first request with this key is still running",
                              headers={"Retry-After": str(max(1, int(running) + 1))})
        log.warning("Idempotency-Key %r of %s in progress since %.1f s: its request died (%s); "
                    "running it again", claim.key, claim.machine_id, claim.now - row.created_at,
                    why)
        return None

    def _still_running(self, s: Session, row: IdempotentResponse, claim: _KeyClaim
                       ) -> tuple[float | None, str]:
        """Whether the request holding a key in progress is still running: (seconds until
        that may change, for ``Retry-After``; None = dead, with the reason why)."""
        holder = row.holder
        if holder == self.instance_id:
            if self.inflight.others((claim.machine_id, claim.key)):
                return 0.0, "running in this process"
            return None, "this process is not running it any more"
        if holder is not None:
            alive = self._holder_alive(s, holder, claim.now)
            if alive is not None:
                if alive > 0:
                    return alive, f"its process {holder} is alive"
                return None, f"its process {holder} stopped beating"
        lease_left = row.created_at + self.settings.idempotency_lease - claim.now
        if lease_left > 0:
            return lease_left, "no heartbeat known for its holder; lease running"
        return None, "no heartbeat known for its holder; lease over"

    def _answer_of(self, claim: _KeyClaim) -> tuple[int, dict[str, Any]]:
        with self.db.read() as s:
            row = s.get(IdempotentResponse, (claim.machine_id, claim.key))
            answer = None if row is None else self._key_row(s, row, claim)
        if answer is None:
            raise ApiError(409, "request_in_progress",
                           "the first request with this key is still running")
        return answer

    def _claim_key(self, s: Session) -> None:
        """Inside the operation's transaction: claim the current request's key (``together``
        mode; nothing to do otherwise). A key answered meanwhile ends the operation with
        that answer (its transaction rolls back)."""
        claim = _CLAIM.get()
        if claim is None or not claim.together:
            return
        row = s.get(IdempotentResponse, (claim.machine_id, claim.key), with_for_update=True)
        if row is not None:
            answer = self._key_row(s, row, claim)
            if answer is not None:
                raise _Answered(*answer)
            row.created_at, row.holder = claim.now, self.instance_id
        else:
            row = IdempotentResponse(machine_id=claim.machine_id, key=claim.key,
                                     request_hash=claim.digest, status_code=0, body={},
                                     created_at=claim.now, holder=self.instance_id)
            s.add(row)
            s.flush()  # on PostgreSQL a concurrent claim of the same key waits here
        claim.held = (s, row)

    def _answer(self, s: Session, status: int, body: dict[str, Any]) -> None:
        """Inside the operation's last transaction: store its answer under the current
        request's key, if it has one (else :meth:`idempotent` stores it afterwards)."""
        claim = _CLAIM.get()
        if claim is None or claim.answer is not None:
            return
        answer: tuple[int, dict[str, Any]] = (status, body)
        if claim.held is not None and claim.held[0] is s:  # claimed in this transaction
            claim.held[1].status_code, claim.held[1].body = status, body
        elif cast(CursorResult[Any], s.execute(update(IdempotentResponse).where(
                IdempotentResponse.machine_id == claim.machine_id,
                IdempotentResponse.key == claim.key, IdempotentResponse.status_code == 0)
                .values(status_code=status, body=body)
                .execution_options(synchronize_session=False))).rowcount != 1:
            row = s.get(IdempotentResponse, (claim.machine_id, claim.key))
            if row is None:
                return  # not claimed (together mode, failed before): stored afterwards
            answer = (row.status_code, dict(row.body))  # a takeover finished first

        def stored() -> None:
            claim.answer = answer
            claim.holding = False

        on_commit(s, stored)

    def _forget(self, claim: _KeyClaim) -> None:
        """Release the key of a request that failed (a retry runs it again). If this fails
        too the key stays held: the request leaves it as an orphan for the heartbeat."""
        with self.db.tx() as s:  # only its own claim: never an answer, never a takeover's
            s.execute(delete(IdempotentResponse).where(
                IdempotentResponse.machine_id == claim.machine_id,
                IdempotentResponse.key == claim.key, IdempotentResponse.status_code == 0,
                IdempotentResponse.holder == self.instance_id))
        claim.holding = False


@dataclass
class _KeyClaim:
    """The Idempotency-Key of the request running in this context."""

    machine_id: str
    key: str
    digest: str
    now: float
    together: bool
    answer: tuple[int, dict[str, Any]] | None = None
    held: tuple[Session, IdempotentResponse] | None = None
    """The row claimed by :meth:`AuthMixin._claim_key`, with its session."""
    holding: bool = False
    """This request's claim is committed and the row has neither its answer nor been
    deleted yet: the request must not end like this (else the key is an orphan)."""


_CLAIM: ContextVar[_KeyClaim | None] = ContextVar("vendhw_idempotency_claim", default=None)


class _Answered(Exception):  # a control-flow signal, not an error
    """The key was answered by another request: end with that answer."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


class _KeyRefused(ApiError):
    """A refusal about the key itself (reused, still running): never stored as its answer."""
