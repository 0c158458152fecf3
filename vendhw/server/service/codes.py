"""Pickup and lottery codes: batches, listing, revoking, redeeming."""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from vendhw.errors import ConfigurationError
from vendhw.server import codes as codemod
from vendhw.server.models import (
    AuditEntry,
    Code,
    CodeAttempt,
    Instruction,
    Machine,
    Order,
    Product,
    Slot,
)
from vendhw.server.service.core import (
    CODE_BATCH_CHUNK,
    MAX_CODE_VALIDITY,
    BackendCore,
    S,
    _Effects,
    _insert_missing,
    crash_point,
    iso,
    order_json,
)
from vendhw.server.service.errors import ApiError
from vendhw.server.settings import parse_duration


class CodesMixin(BackendCore):
    """Pickup and lottery codes: batches, listing, revoking, redeeming."""

    def create_codes(self, product_id: str, count: int, valid_for: float | str, *,
                     machine_id: str | None = None, kind: str = "pickup"
                     ) -> list[dict[str, Any]]:
        """``count`` new single-use codes for one product; the only time they are shown."""
        if not 1 <= count <= 10_000:
            raise ApiError(422, "bad_count", "count must be 1..10000")
        if kind not in ("pickup", "lottery"):
            raise ApiError(422, "bad_kind", "kind is pickup or lottery")
        try:
            seconds = parse_duration(valid_for)
        except ConfigurationError as exc:
            raise ApiError(422, "bad_validity", str(exc)) from None
        if not 0 < seconds <= MAX_CODE_VALIDITY:  # also refuses NaN and infinity
            raise ApiError(422, "bad_validity", "valid_for must be positive and at most "
                           f"{MAX_CODE_VALIDITY:.0f} s (10 years)")
        now = self.clock.now()
        with self.db.tx() as s:
            if s.get(Product, product_id) is None:
                raise ApiError(404, "unknown_product", f"no product {product_id!r}")
            if machine_id is not None and s.get(Machine, machine_id) is None:
                raise ApiError(404, "unknown_machine", f"no machine {machine_id!r}")
        created: list[dict[str, Any]] = []
        batch_id = "cb" + secrets.token_hex(6)  # 'codes revoke --batch'
        try:
            for first in range(0, count, CODE_BATCH_CHUNK):
                # One short transaction per chunk: machines' requests queue between chunks
                # instead of behind the whole batch (SQLite has one writer at a time).
                with self.db.tx() as s:
                    created += self._create_code_chunk(
                        s, min(CODE_BATCH_CHUNK, count - first), product_id, machine_id,
                        kind, now, now + seconds, batch_id)
        except BaseException:
            # Codes never shown to anybody are useless: withdraw the part already committed.
            if created:
                self._revoke_unshown([c["id"] for c in created])
            raise
        return created

    def _create_code_chunk(self, s: Session, n: int, product_id: str, machine_id: str | None,
                           kind: str, now: float, expires_at: float,
                           batch_id: str | None = None) -> list[dict[str, Any]]:
        fresh: dict[str, str] = {}  # hash -> code
        while len(fresh) < n:
            batch: dict[str, str] = {}
            while len(batch) < n - len(fresh):
                code = codemod.generate_code(self.settings.code_digits)
                batch[codemod.code_hash(code)] = code
            clashes = set(s.execute(select(Code.code_hash).where(
                Code.selector.in_({codemod.selector(c) for c in batch.values()}),
                Code.code_hash.in_(list(batch)))).scalars())
            fresh.update({h: c for h, c in batch.items() if h not in clashes})
        codes = list(fresh.values())
        rows = s.execute(insert(Code).returning(Code.id, sort_by_parameter_order=True), [
            {"selector": codemod.selector(code), "code_hash": digest, "kind": kind,
             "product_id": product_id, "machine_id": machine_id, "status": "active",
             "created_at": now, "expires_at": expires_at, "batch_id": batch_id}
            for digest, code in fresh.items()]).scalars().all()
        s.execute(insert(AuditEntry), [
            {"at": now, "entity": "code", "entity_id": str(code_id), "from_state": None,
             "to_state": "active", "reason": f"{kind} code for {product_id}",
             "actor": "operator"} for code_id in rows])
        return [{"id": code_id, "code": code, "kind": kind, "product_id": product_id,
                 "machine_id": machine_id, "expires_at": iso(expires_at),
                 "batch_id": batch_id}
                for code_id, code in zip(rows, codes, strict=True)]

    def _revoke_unshown(self, code_ids: list[int]) -> None:
        now = self.clock.now()
        with self.db.tx() as s:
            s.execute(update(Code).where(Code.id.in_(code_ids), Code.status == "active")
                      .values(status="revoked"))
            s.execute(insert(AuditEntry), [
                {"at": now, "entity": "code", "entity_id": str(code_id), "from_state": "active",
                 "to_state": "revoked", "reason": "batch failed before the codes were shown",
                 "actor": "system"} for code_id in code_ids])

    def list_codes(self, status: str | None = None, product_id: str | None = None,
                   machine_id: str | None = None, limit: int = 100, *,
                   batch_id: str | None = None) -> list[dict[str, Any]]:
        """Codes, newest first, without their secret (only the hash is stored anyway)."""
        with self.db.read() as s:
            query = select(Code).order_by(Code.id.desc()).limit(limit)
            if batch_id:
                query = query.where(Code.batch_id == batch_id)
            if status:
                query = query.where(Code.status == status)
            if product_id:
                query = query.where(Code.product_id == product_id)
            if machine_id:
                query = query.where(Code.machine_id == machine_id)
            return [_code_json(c) for c in s.execute(query).scalars()]

    def revoke_code(self, code_id: int, note: str = "") -> dict[str, Any]:
        """Withdraw an unused code; one being used right now or already used is refused."""
        with self.db.tx() as s:
            code = s.execute(select(Code).where(Code.id == code_id).with_for_update()
                             ).scalar_one_or_none()
            if code is None:
                raise ApiError(404, "unknown_code", f"no code {code_id}")
            if code.status == "reserved":
                raise ApiError(409, "code_in_use", "a vend with this code is running; "
                               "revoke it after the machine reports", code_status=code.status)
            if code.status == "consumed":
                raise ApiError(409, "code_used", "this code was already used",
                               code_status=code.status)
            if code.status == "active":
                self._code_state(s, code, "revoked", "operator", note or "revoked")
            return _code_json(code)

    def redeem_code(self, machine_id: str, code: str) -> dict[str, Any]:
        """Verify a typed code, reserve it for this machine, and ship its product.

        The code is consumed only when the machine reports delivery and released if the
        vend fails. Wrong codes count against the machine and the code's prefix; a locked
        prefix or keypad is refused (429) even for a right code, so guessing stays useless.
        """
        code = codemod.normalize(code)
        now = self.clock.now()
        actor = f"machine:{machine_id}"
        effects = _Effects()
        refusal: ApiError | None = None
        data: dict[str, Any] = {}
        with self.db.tx() as s:
            # Every attempt of one machine holds its keypad counter row: the lockout
            # arithmetic (and the selector's row, also per machine) is serialised.
            self._counter(s, machine_id, codemod.KEYPAD)
            well_formed = (code.isascii() and code.isdigit()
                           and len(code) == self.settings.code_digits)
            refusal = self._locked(s, machine_id, codemod.selector(code) if well_formed
                                   else None)
            if refusal is None and not well_formed:
                refusal = self._code_failure(s, machine_id, None, "code_malformed",
                                             f"a code is {self.settings.code_digits} digits")
            if refusal is None and well_formed:
                sel = codemod.selector(code)
                candidates = s.execute(select(Code.id, Code.code_hash).where(
                    Code.selector == sel)).all()
                match_id = codemod.find_match(code, [(r[0], r[1]) for r in candidates])
                match = None if match_id is None else s.execute(
                    select(Code).where(Code.id == match_id).with_for_update()).scalar_one()
                if match is None or (match.machine_id not in (None, machine_id)):
                    refusal = self._code_failure(s, machine_id, sel, "code_invalid",
                                                 "no such code")
                else:
                    refusal, data = self._reserve(s, match, machine_id, now, actor, effects)
            # The answer under the request's Idempotency-Key commits with the reservation (or
            # the counted failure): a retry after a crash gets this very answer. Run again,
            # it could not: the code is reserved by then (the order comes back without its
            # instruction's delivery count), or consumed or released once the machine got the
            # instruction by the push channel (409 code_used, or a second order).
            if refusal is not None:
                self._answer(s, refusal.status, refusal.body())
            else:
                self._answer(s, 200, data)
        crash_point("backend:redeemed")
        if refusal is not None:
            raise refusal
        self._after(effects)
        return data

    def _reserve(self, s: Session, code: Code, machine_id: str, now: float, actor: str,
                 effects: _Effects) -> tuple[ApiError | None, dict[str, Any]]:
        if code.status == "consumed":
            return ApiError(409, "code_used", "this code was already used"), {}
        if code.status == "revoked":
            return ApiError(410, "code_revoked", "this code was withdrawn"), {}
        if code.status == "reserved":
            order = s.get(Order, code.order_id) if code.order_id else None
            if code.reserved_by == machine_id and order is not None:
                instruction = s.execute(select(Instruction).where(
                    Instruction.order_id == order.id)).scalar_one_or_none()
                return None, {"order": order_json(order),
                              "instruction": instruction.payload if instruction else None}
            return ApiError(409, "code_in_use", "this code is being used right now"), {}
        if code.expires_at <= now:
            return ApiError(410, "code_expired", "this code has expired"), {}
        slot_row = s.execute(select(Slot).where(
            Slot.machine_id == machine_id, Slot.product_id == code.product_id,
            Slot.enabled.is_(True)).order_by(Slot.slot)).scalars().first()
        if slot_row is None:
            return ApiError(409, "product_unavailable",
                            "this machine does not sell the code's product"), {}
        product = s.get(Product, code.product_id)
        machine = s.get(Machine, machine_id)
        assert product is not None and machine is not None
        order = Order(id="vo" + secrets.token_hex(12), machine_id=machine_id,
                      slot=slot_row.slot, product_id=product.id, product_name=product.name,
                      amount=slot_row.price, currency=machine.currency, kind="code",
                      provider="code", state=S.CREATED.value, code_id=code.id,
                      created_at=now, updated_at=now, expires_at=now)
        s.add(order)
        self._audit(s, "order", order.id, None, S.CREATED.value,
                    f"{code.kind} code {code.id} for slot {slot_row.slot}", actor)
        self._move(s, order, S.PAID, actor, f"{code.kind} code {code.id}")
        self._code_state(s, code, "reserved", actor, f"order {order.id}")
        code.reserved_by = machine_id
        code.order_id = order.id
        self._ship(s, order, effects, inline=True)
        return None, {"order": order_json(order),
                      "instruction": {**effects.instructions[-1][1], "delivery": 1}}

    def _code_state(self, s: Session, code: Code, to: str, actor: str, reason: str) -> None:
        self._audit(s, "code", str(code.id), code.status, to, reason, actor)
        code.status = to

    def _counter(self, s: Session, machine_id: str, sel: str) -> CodeAttempt:
        """The (machine, selector) counter row, created if missing (an upsert: two processes
        may create it at once) and locked for this transaction."""
        _insert_missing(s, CodeAttempt, {"machine_id": machine_id, "selector": sel,
                                         "window_start": self.clock.now(), "failures": 0,
                                         "locked_until": 0.0})
        return s.execute(select(CodeAttempt).where(
            CodeAttempt.machine_id == machine_id, CodeAttempt.selector == sel)
            .with_for_update().execution_options(populate_existing=True)).scalar_one()

    def _locked(self, s: Session, machine_id: str, sel: str | None) -> ApiError | None:
        now = self.clock.now()
        keys = [(codemod.KEYPAD, "keypad_locked")]
        if sel is not None:
            keys.append((sel, "code_locked"))
        for key, code in keys:
            row = s.get(CodeAttempt, (machine_id, key))
            if row is not None and row.locked_until > now:
                wait = int(row.locked_until - now) + 1
                return ApiError(429, code, f"too many wrong codes; try again in {wait} s",
                                headers={"Retry-After": str(wait)}, retry_after=wait)
        return None

    def _code_failure(self, s: Session, machine_id: str, sel: str | None, code: str,
                      detail: str) -> ApiError:
        """Count one wrong attempt (keypad, and prefix when known) and build the refusal."""
        now = self.clock.now()
        limits = [(codemod.KEYPAD, self.settings.machine_max_failures)]
        if sel is not None:
            limits.append((sel, self.settings.code_max_failures))
        left = None
        for key, limit in limits:
            row = self._counter(s, machine_id, key)
            if now - row.window_start > self.settings.code_failure_window:
                row.window_start, row.failures = now, 0
            row.failures += 1
            remaining = limit - row.failures
            if remaining <= 0:
                row.locked_until = now + self.settings.code_lockout
                row.window_start, row.failures = now, 0
                self._audit(s, "keypad", f"{machine_id}:{key}", None, "locked",
                            f"{limit} wrong codes", f"machine:{machine_id}")
                wait = int(self.settings.code_lockout)
                return ApiError(429, "keypad_locked" if key == codemod.KEYPAD else
                                "code_locked", f"{detail}; too many wrong codes, locked "
                                f"for {wait} s", headers={"Retry-After": str(wait)},
                                retry_after=wait)
            left = remaining if left is None else min(left, remaining)
        return ApiError(404 if code == "code_invalid" else 400, code, detail,
                        attempts_left=left)


def _code_json(code: Code) -> dict[str, Any]:
    return {"id": code.id, "kind": code.kind, "product_id": code.product_id,
            "machine_id": code.machine_id, "batch_id": code.batch_id,
            "status": code.status, "order_id": code.order_id,
            "created_at": iso(code.created_at), "expires_at": iso(code.expires_at),
            "used_at": iso(code.used_at)}

