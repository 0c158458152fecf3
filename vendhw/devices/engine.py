"""The one engine shape of every host: a sans-I/O core of operations, driven by a runner.

Why: a protocol's rules (what to send, what a reply means, when an event counts) are easiest to
check and to reuse when they do no I/O. An *operation* is a generator that yields steps and
gets answers back; a *runner* does the I/O, with threads (:func:`drive`) or asyncio
(:func:`drive_async`), over whatever the protocol's link is (``FrameLink``, an MDB link, a
ccTalk bus). Tests drive the same operations with scripted replies.

The steps:

* a protocol's own request (any object that is not one of the two below): the runner hands it
  to ``transact`` and sends the reply back into the operation; a :class:`VendhwError` from
  ``transact`` (silence, a NAK, a corrupt reply) is *thrown* into the operation, so the core
  decides what a failure means (a lost payout reply must not be resent blindly);
* :class:`Deliver`: hand an event to the sink; the operation resumes only once the sink took
  it (a sink that raises closes the operation: nothing after that event is committed or
  acknowledged);
* :class:`Wait`: nothing to send for a while (a poll interval, a device's setup time); the
  runner waits without holding the line.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Generator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, TypeVar

from vendhw.devices.cash import CashEvent, EventSink
from vendhw.errors import VendhwError

T = TypeVar("T")


@dataclass(frozen=True)
class Deliver:
    """An event for the sink; the operation goes on (and commits) only if the sink took it."""

    event: CashEvent


@dataclass(frozen=True)
class Wait:
    """Nothing to send before ``seconds`` have passed."""

    seconds: float


Op = Generator[Any, Any, T]
"""A sans-I/O operation: yields requests, :class:`Deliver` and :class:`Wait`; gets replies."""

Taken = Callable[[Any, Any], None]
"""Called after the operation took a reply without raising (``request, reply``): an MDB
cashless host ACKs reply data only once the core has it."""


def _wait(seconds: float) -> None:
    if seconds > 0:
        threading.Event().wait(seconds)


def _deliver(op: Op[Any], step: Deliver, sink: EventSink | None) -> Any:
    """Hand the event to the sink, then resume the operation (closed if the sink fails)."""
    if sink is not None:
        try:
            sink(step.event)
        except BaseException:
            op.close()  # nothing after this event is committed
            raise
    return op.send(None)


def _answer(op: Op[Any], request: Any, reply: Any, taken: Taken | None) -> Any:
    """Send ``reply`` in; ``taken`` runs once the operation took it (also when it ends)."""
    try:
        step = op.send(reply)
    except StopIteration:
        if taken is not None:
            taken(request, reply)
        raise
    if taken is not None:
        taken(request, reply)
    return step


def drive(op: Op[T], transact: Callable[[Any], Any], *, sink: EventSink | None = None,
          wait: Callable[[float], None] = _wait, taken: Taken | None = None,
          hold: Callable[[], AbstractContextManager[Any]] = nullcontext,
          throw: bool = True) -> T:
    """Run ``op`` to its end with blocking I/O; returns what the operation returns.

    :param hold: a context held from sending a request until the operation took its reply
        and ``taken`` ran (a shared bus's lock: no other device's command in between).
    :param throw: False ends the operation on a link error instead of throwing it in (for
        cores whose own timeouts are the only failures they handle).
    """
    try:
        step = next(op)
        while True:
            if isinstance(step, Deliver):
                step = _deliver(op, step, sink)
                continue
            if isinstance(step, Wait):
                wait(step.seconds)
                step = op.send(None)
                continue
            with hold():
                try:
                    reply = transact(step)
                except VendhwError as exc:
                    if not throw:
                        op.close()
                        raise
                    step = op.throw(exc)
                    continue
                step = _answer(op, step, reply, taken)
    except StopIteration as stop:
        return stop.value


async def drive_async(op: Op[T], transact: Callable[[Any], Awaitable[Any]], *,
                      sink: EventSink | None = None, taken: Taken | None = None) -> T:
    """Run ``op`` from asyncio with any async ``transact(request) -> reply``."""
    try:
        step = next(op)
        while True:
            if isinstance(step, Deliver):
                step = _deliver(op, step, sink)
                continue
            if isinstance(step, Wait):
                await asyncio.sleep(max(0.0, step.seconds))
                step = op.send(None)
                continue
            try:
                reply = await transact(step)
            except VendhwError as exc:
                step = op.throw(exc)
                continue
            step = _answer(op, step, reply, taken)
    except StopIteration as stop:
        return stop.value


def replay(op: Op[T], replies: list[Any], *, sink: EventSink | None = None) -> tuple[T, list[Any]]:
    """Drive ``op`` with scripted replies (a test, a capture): returns its result and the
    requests it made. A reply that is an exception instance is thrown in instead."""
    sent: list[Any] = []
    queue = list(replies)

    def transact(request: Any) -> Any:
        sent.append(request)
        if not queue:
            raise AssertionError(f"no scripted reply left for {request!r}")
        reply = queue.pop(0)
        if isinstance(reply, BaseException):
            raise reply
        return reply

    result = drive(op, transact, sink=sink, wait=lambda seconds: None)
    return result, sent


__all__ = ["Deliver", "Op", "Taken", "Wait", "drive", "drive_async", "replay"]
