"""Operator HTTP routes of :mod:`vendhw.server.operators` (same bearer token as the rest of
``/operator/v1``): partial refunds, revoking a code batch, one machine, order export."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from vendhw.server.app import _backend, operator_auth
from vendhw.server.operators import Operators, csv_rows
from vendhw.server.service import ApiError

router = APIRouter(prefix="/operator/v1", tags=["operator"],
                   dependencies=[Depends(operator_auth)])


class PartialRefundBody(BaseModel):
    amount: int = Field(description="Minor units (fen, cents) to refund; at most what is "
                                    "left of the payment.")
    reason: str = ""
    operator: str = Field("operator", description="Who asks (kept with the refund).")
    request_key: str | None = Field(None, description="Idempotency key: the same key and "
                                                      "amount return the first refund.")


class RevokeBody(BaseModel):
    note: str = ""


def _ops(request: Request) -> Operators:
    return Operators(_backend(request))


def _time(value: str | None, name: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        return parse_time(value)
    except ValueError as exc:
        raise ApiError(422, f"bad_{name}", str(exc)) from None


def parse_time(value: str) -> float:
    """An ISO 8601 date or time (UTC unless it says otherwise) -> unix seconds."""
    text = value.strip().replace("Z", "+00:00")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO 8601 date or time: {value!r}") from None
    if moment.tzinfo is None:
        from datetime import timezone

        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


@router.post("/orders/{order_id}/refunds", status_code=201)
def create_partial_refund(order_id: str, body: PartialRefundBody, request: Request
                          ) -> dict[str, Any]:
    """Refund part of a delivered order (the order stays ``delivered``)."""
    return _ops(request).refund_part(order_id, body.amount, body.reason,
                                     operator=body.operator, request_key=body.request_key)


@router.get("/refunds")
def list_refunds(request: Request, order: str | None = None, status: str | None = None,
                 limit: int = 100) -> dict[str, Any]:
    return {"refunds": _ops(request).list_refunds(order, status, min(max(limit, 1), 1000))}


@router.post("/code-batches/{batch_id}/revoke")
def revoke_batch(batch_id: str, body: RevokeBody, request: Request) -> dict[str, Any]:
    """Revoke every unused code of a batch; codes in a running vend or used are reported
    with their error (as POST /codes/{id}/revoke would answer) and left alone."""
    return {"codes": _ops(request).revoke_batch(batch_id, body.note)}


@router.get("/machines/{machine_id}")
def machine_detail(machine_id: str, request: Request) -> dict[str, Any]:
    """A machine: online, last seen, pending instructions, open orders, slots."""
    return _ops(request).machine(machine_id)


@router.get("/exports/orders")
def export_orders(request: Request, format: str = "csv", since: str | None = None,
                  until: str | None = None, state: str | None = None,
                  machine: str | None = None) -> StreamingResponse:
    """Orders created in [since, until) as CSV (header row) or JSON lines."""
    if format not in ("csv", "jsonl"):
        raise ApiError(422, "bad_format", "format is csv or jsonl")
    rows = _ops(request).export_orders(_time(since, "since"), _time(until, "until"), state,
                                       machine)
    first = next(rows, None)  # a bad state is refused before the response starts

    def chain() -> Iterator[dict[str, Any]]:
        if first is not None:
            yield first
            yield from rows

    if format == "csv":
        return StreamingResponse(csv_rows(chain()), media_type="text/csv")
    return StreamingResponse((json.dumps(r) + "\n" for r in chain()),
                             media_type="application/x-ndjson")


__all__ = ["parse_time", "router"]
