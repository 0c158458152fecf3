"""Machine authentication: signatures, nonces, secrets and idempotency keys."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from vendhw.contract import signing
from vendhw.server.db import PendingNonce, ReplayedNonce, spend_nonce
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

    def verify_request(self, headers: Mapping[str, str], method: str, path: str,
                       body: bytes) -> PendingNonce:
        """Check a request's signature, timestamp and nonce shape (ApiError 401 if wrong);
        its nonce, not yet spent, is returned: the caller spends it (see
        :class:`~vendhw.server.db.PendingNonce`). A nonce already spent is refused here."""
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
        secret = self._machine_secret(parts.machine_id, refresh=False)
        if secret is None or not signing.verify(secret, parts, method, path, body):
            secret = self._machine_secret(parts.machine_id, refresh=True)  # rotated?
            if not signing.verify(secret or secrets.token_hex(16), parts, method, path, body):
                raise ApiError(401, "bad_signature", "unknown machine or wrong signature")
        with self.db.read() as s:  # a replay of a committed request: refused before it runs
            seen = s.execute(select(Nonce.nonce).where(Nonce.machine_id == parts.machine_id,
                                                       Nonce.nonce == parts.nonce)).first()
        if seen is not None:
            raise ApiError(401, "replayed_nonce", "this nonce was already used")
        last_seen = None
        if now - self._seen.get(parts.machine_id, 0.0) > LAST_SEEN_EVERY_S:
            last_seen = now
            self._seen[parts.machine_id] = now
        return PendingNonce(parts.machine_id, parts.nonce, timestamp + window + 1, last_seen)

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

    def idempotent(self, machine_id: str, key: str | None, request: bytes,
                   compute: Callable[[], tuple[int, dict[str, Any]]]
                   ) -> tuple[int, dict[str, Any]]:
        """Run ``compute`` once per (machine, key); a retry gets the first answer back.

        A key reused for a different request is refused (409), and a retry that arrives while
        the first is still running is told so (409 ``request_in_progress``) instead of
        running twice. A key left "in progress" longer than ``idempotency_lease`` belongs to
        a request that died with its process (SIGKILL, power cut): the next retry takes the
        key over and runs the request; the operations behind keys are themselves idempotent
        by state (a result, a cash sale, a code reservation apply once however often they
        run), so the outcome is still applied once.
        """
        if not key:
            return compute()
        if len(key) > 128:
            raise ApiError(400, "bad_idempotency_key", "at most 128 characters")
        digest = hashlib.sha256(request).hexdigest()
        now = self.clock.now()
        try:
            with self.db.tx() as s:
                row = s.get(IdempotentResponse, (machine_id, key), with_for_update=True)
                if row is not None:
                    if row.request_hash != digest:
                        raise ApiError(409, "idempotency_key_reused",
                                       "this Idempotency-Key was used for another request")
                    if row.status_code != 0:
                        return row.status_code, dict(row.body)
                    if now - row.created_at < self.settings.idempotency_lease:
                        wait = max(1, int(row.created_at + self.settings.idempotency_lease
                                          - now) + 1)
                        raise ApiError(409, "request_in_progress",
                                       "the first request with this key is still running",
                                       headers={"Retry-After": str(wait)})
                    log.warning("Idempotency-Key %r of %s in progress since %.0f s: its "
                                "request died; running it again", key, machine_id,
                                now - row.created_at)
                    row.created_at = now  # a new lease, held by this request
                else:
                    s.add(IdempotentResponse(machine_id=machine_id, key=key,
                                             request_hash=digest, status_code=0, body={},
                                             created_at=now))
        except IntegrityError:
            raise ApiError(409, "request_in_progress",
                           "the first request with this key is still running") from None
        try:
            status, body = compute()
        except ApiError as exc:
            if exc.status >= 500:
                self._forget(machine_id, key)
                raise
            status, body = exc.status, exc.body()
        except BaseException:
            self._forget(machine_id, key)
            raise
        with self.db.tx() as s:
            row = s.get(IdempotentResponse, (machine_id, key), with_for_update=True)
            if row is not None and row.status_code == 0:
                row.status_code, row.body = status, body
            elif row is not None:  # a takeover finished first: one stored answer for all
                return row.status_code, dict(row.body)
        return status, body

    def _forget(self, machine_id: str, key: str) -> None:
        with self.db.tx() as s:
            s.execute(delete(IdempotentResponse).where(
                IdempotentResponse.machine_id == machine_id, IdempotentResponse.key == key))
