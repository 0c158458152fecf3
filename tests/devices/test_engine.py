"""The one runner every host core goes through (``vendhw.devices.engine``)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from vendhw.devices.cash import CashEvent, CashEventKind
from vendhw.devices.engine import Deliver, Op, Wait, drive, drive_async, replay
from vendhw.errors import NoResponseError

COIN = CashEvent(CashEventKind.CREDIT, "t", 100, "EUR", event_id="e1")


def _op(log: list[str]) -> Op[str]:
    first = yield "ask"
    log.append(f"reply {first}")
    yield Wait(0.0)
    try:
        yield "lost"
    except NoResponseError:
        log.append("silence thrown in")
    yield Deliver(COIN)
    log.append("delivered")
    return "done"


def test_drive_sends_replies_throws_errors_and_delivers() -> None:
    log: list[str] = []
    sunk: list[CashEvent] = []
    taken: list[tuple[Any, Any]] = []

    def transact(request: str) -> str:
        if request == "lost":
            raise NoResponseError("no reply")
        return request.upper()

    result = drive(_op(log), transact, sink=sunk.append,
                   taken=lambda req, rep: taken.append((req, rep)))
    assert result == "done"
    assert log == ["reply ASK", "silence thrown in", "delivered"]
    assert sunk == [COIN] and taken == [("ask", "ASK")]


def test_a_sink_that_fails_stops_the_operation_before_anything_after_it() -> None:
    log: list[str] = []

    def refuse(event: CashEvent) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError):
        replay(_op(log), ["a", NoResponseError("x")], sink=refuse)
    assert "delivered" not in log


def test_the_asyncio_runner_runs_the_same_operation() -> None:
    log: list[str] = []

    async def transact(request: str) -> str:
        if request == "lost":
            raise NoResponseError("no reply")
        return request.upper()

    assert asyncio.run(drive_async(_op(log), transact)) == "done"
    assert log == ["reply ASK", "silence thrown in", "delivered"]


def test_replay_records_the_requests() -> None:
    result, sent = replay(_op([]), ["x", NoResponseError("gone")])
    assert result == "done" and sent == ["ask", "lost"]
