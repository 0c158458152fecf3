"""The push channel: instructions a machine takes and acknowledges."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, func, select, update

from vendhw.server.models import (
    Instruction,
)
from vendhw.server.service.core import (
    BackendCore,
    S,
    crash_point,
)
from vendhw.server.service.errors import ApiError


class PushMixin(BackendCore):
    """The push channel: instructions a machine takes and acknowledges."""

    def take_instructions(self, machine_id: str, limit: int = 20
                          ) -> tuple[list[dict[str, Any]], float | None]:
        """Due instructions for a machine (marking them delivered) and seconds to the next."""
        now = self.clock.now()
        with self.db.tx() as s:
            # Core statements on the transaction's connection: every renewal of every
            # machine's long-poll runs this, and the ORM's loading and flush cost more than
            # the statements (the same reads and writes as before, in the same order).
            connection = s.connection()
            rows = connection.execute(_due(limit), {"machine": machine_id, "now": now}).all()
            items = []
            delivered = []
            for row in rows:
                deliveries = row.deliveries + 1
                delivered.append({"ins_id": row.id, "count": deliveries,
                                  "next_at": now + self.settings.redeliver_after})
                items.append({**row.payload, "delivery": deliveries})
            if delivered:
                connection.execute(_DELIVERED, delivered)
            next_due = connection.execute(_NEXT_DUE, {"machine": machine_id}).scalar()
        if items:
            crash_point("backend:pushed")
        return items, (None if next_due is None else max(0.0, next_due - now))

    def machines_with_due_instructions(self, limit: int = 1000) -> list[str]:
        """Machines with an unacknowledged instruction due for (re)delivery (MQTT bridge)."""
        now = self.clock.now()
        with self.db.read() as s:
            return list(s.execute(select(Instruction.machine_id).where(
                Instruction.status == "pending", Instruction.next_delivery_at <= now)
                .distinct().limit(limit)).scalars())

    def ack(self, machine_id: str, instruction_id: str) -> dict[str, Any]:
        """The machine has the instruction (journaled): stop redelivering; order dispensing."""
        with self.db.tx() as s:
            ins = s.get(Instruction, instruction_id)
            if ins is None or ins.machine_id != machine_id:
                raise ApiError(404, "unknown_instruction")
            order = self._lock_order(s, ins.order_id)  # order, then instruction: one lock order
            ins = s.execute(select(Instruction).where(Instruction.id == instruction_id)
                            .with_for_update().execution_options(populate_existing=True)
                            ).scalar_one()
            if ins.status == "cancelled":
                raise ApiError(409, "instruction_cancelled",
                               "withdrawn by an operator: do not ship", order_id=ins.order_id)
            assert order is not None
            if ins.status == "pending":
                ins.status = "acked"
                ins.acked_at = self.clock.now()
                self._audit(s, "instruction", ins.id, "pending", "acked", "acknowledged",
                            f"machine:{machine_id}")
                if order.state == S.PAID.value:
                    self._move(s, order, S.DISPENSING, f"machine:{machine_id}")
            data = {"id": ins.id, "status": ins.status, "order_id": order.id,
                    "order_state": order.state}
        crash_point("backend:acked")
        return data


_DUE_BY_LIMIT: dict[int, Any] = {}


def _due(limit: int) -> Any:
    """The due instructions of a machine, oldest first (built once per limit)."""
    statement = _DUE_BY_LIMIT.get(limit)
    if statement is None:
        statement = (select(Instruction.id, Instruction.payload, Instruction.deliveries)
                     .where(Instruction.machine_id == bindparam("machine"),
                            Instruction.status == "pending",
                            Instruction.next_delivery_at <= bindparam("now"))
                     .order_by(Instruction.created_at).limit(limit))
        if len(_DUE_BY_LIMIT) < 128:  # limits are 1-100 (the route clamps them)
            _DUE_BY_LIMIT[limit] = statement
    return statement


_DELIVERED = (update(Instruction).where(Instruction.id == bindparam("ins_id"))
              .values(deliveries=bindparam("count"), next_delivery_at=bindparam("next_at")))
_NEXT_DUE = select(func.min(Instruction.next_delivery_at)).where(
    Instruction.machine_id == bindparam("machine"), Instruction.status == "pending")
