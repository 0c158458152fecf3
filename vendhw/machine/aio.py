"""AsyncMachine: the same :class:`~vendhw.machine.core.Machine`, awaited.

There is no second implementation of any protocol here. Every call runs the synchronous
Machine on one dedicated worker thread, so board commands stay strictly one at a time and in
order, the journal is used from a single thread, and the event loop never blocks on a serial
read. A board that is bus master (FA FB) is served by its driver as usual.

Cancelling an awaited ``dispense`` does not stop the vend (a motor cannot be called back
mid-turn): the worker finishes it and journals the result; ``await dispense(slot, vend_id)``
again with the same ``vend_id`` returns that result without vending.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from vendhw.devices.boards import BoardProfile, Outcome
from vendhw.errors import ConfigurationError
from vendhw.machine.core import DispenseResult, Machine
from vendhw.machine.journal import VendJournal, VendRecord

T = TypeVar("T")


class AsyncMachine:
    """Awaitable facade over one :class:`Machine` and its single worker thread.

    Build it with ``await AsyncMachine.open(profile, url, journal=...)`` (opening talks to
    the board and reconciles the journal, so it is awaited too) or wrap a Machine you have.
    """

    def __init__(self, machine: Machine, *, executor: ThreadPoolExecutor | None = None) -> None:
        self.machine = machine
        self._own_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"vendhw-machine-{machine.name}")
        self._closed = False

    @classmethod
    async def open(cls, profile: str | BoardProfile, url: str, *,
                   journal: str | Path | VendJournal | None = None,
                   **transport_options: Any) -> AsyncMachine:
        """Open the board and the journal on the worker thread the Machine will keep using."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vendhw-machine")
        loop = asyncio.get_running_loop()
        try:
            machine = await loop.run_in_executor(
                executor, functools.partial(Machine, profile, url, journal=journal,
                                            **transport_options))
        except BaseException:
            executor.shutdown(wait=False)
            raise
        facade = cls(machine, executor=executor)
        facade._own_executor = True
        return facade

    async def _run(self, func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        if self._closed:
            raise ConfigurationError(f"async machine {self.machine.name!r} is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor,
                                          functools.partial(func, *args, **kwargs))

    @property
    def name(self) -> str:
        return self.machine.name

    async def dispense(self, slot: str | int, vend_id: str | None = None, *,
                       drop_sensor: bool | None = None) -> DispenseResult:
        """See :meth:`Machine.dispense`; the same journal, the same idempotency."""
        return await self._run(self.machine.dispense, slot, vend_id, drop_sensor=drop_sensor)

    async def status(self) -> dict[str, Any]:
        return await self._run(self.machine.status)

    async def selftest(self) -> dict[str, Any]:
        return await self._run(self.machine.selftest)

    async def door(self) -> str:
        return await self._run(self.machine.door)

    async def door_open(self) -> bool:
        return await self._run(self.machine.door_open)

    async def temperature(self) -> float:
        return await self._run(self.machine.temperature)

    async def reconcile(self, *, include_unknown: bool = False) -> list[DispenseResult]:
        return await self._run(self.machine.reconcile, include_unknown=include_unknown)

    async def pending(self) -> list[VendRecord]:
        return await self._run(self.machine.pending)

    async def history(self, limit: int = 100) -> list[VendRecord]:
        return await self._run(self.machine.history, limit)

    async def resolve(self, vend_id: str, outcome: Outcome | str, note: str = ""
                      ) -> DispenseResult:
        return await self._run(self.machine.resolve, vend_id, outcome, note)

    @property
    def online(self) -> bool:
        """See :attr:`Machine.online`: False once the board's port went away."""
        return self.machine.online

    async def check_port(self) -> bool:
        """See :meth:`Machine.check_port`."""
        return await self._run(self.machine.check_port)

    async def reopen(self) -> None:
        """See :meth:`Machine.reopen`: the board again through its URL, after an unplug."""
        await self._run(self.machine.reopen)

    async def close(self) -> None:
        """Finish the command in progress, then release the board and the journal."""
        if self._closed:
            return
        await self._run(self.machine.close)
        self._closed = True
        if self._own_executor:
            self._executor.shutdown(wait=False)

    async def __aenter__(self) -> AsyncMachine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def open_async_machine(profile: str | BoardProfile, url: str, *,
                             journal: str | Path | VendJournal | None = None,
                             **transport_options: Any) -> AsyncMachine:
    """``async with await open_async_machine(...) as machine:`` — see :class:`AsyncMachine`."""
    return await AsyncMachine.open(profile, url, journal=journal, **transport_options)


__all__ = ["AsyncMachine", "open_async_machine"]
