"""AsyncMachine: the same Machine core, awaited from an event loop."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from machine_fakes import FakeBoard, as_board

from vendhw.devices.boards import Outcome
from vendhw.errors import ConfigurationError
from vendhw.machine.aio import AsyncMachine
from vendhw.machine.core import Machine


def test_async_dispense_uses_one_worker_thread_and_the_same_journal(tmp_path: Path) -> None:
    threads: set[str] = set()
    board = FakeBoard(inventory={1: 50})
    board.on_vend = lambda motor, seq: threads.add(threading.current_thread().name)

    async def main() -> list[Outcome]:
        machine = Machine.from_board(as_board(board), journal=tmp_path / "j.db")
        async with AsyncMachine(machine) as m:
            # Ten concurrent calls for five vend ids: five vends, one thread, no overlap.
            results = await asyncio.gather(*(m.dispense(1, f"v{i % 5}") for i in range(10)))
            history = await m.history()
            assert len(history) == 5
            assert (await m.status())["ok"] is True
            return [r.outcome for r in results]

    outcomes = asyncio.run(main())
    assert outcomes == [Outcome.DELIVERED] * 10
    assert len(board.vends) == 5
    assert len(threads) == 1 and threading.current_thread().name not in threads


def test_cancelled_dispense_still_finishes_and_is_journaled(tmp_path: Path) -> None:
    gate = threading.Event()
    started = threading.Event()
    board = FakeBoard()

    def hold(motor: int, seq: int | None) -> None:
        started.set()
        gate.wait(5)

    board.on_vend = hold

    async def main() -> None:
        m = AsyncMachine(Machine.from_board(as_board(board), journal=tmp_path / "j.db"))
        task = asyncio.create_task(m.dispense(2, "slow"))
        assert await asyncio.to_thread(started.wait, 5)  # the motor is turning
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        gate.set()
        again = await m.dispense(2, "slow")  # queued behind the running vend
        assert again.replayed and again.outcome is Outcome.DELIVERED
        await m.close()
        with pytest.raises(ConfigurationError, match="closed"):
            await m.dispense(2)

    asyncio.run(main())
    assert len(board.vends) == 1


def test_async_resolve_and_pending(tmp_path: Path) -> None:
    board = FakeBoard(fail="lost", sequence_range=None)

    async def main() -> None:
        machine = Machine.from_board(as_board(board), journal=tmp_path / "j.db")
        async with AsyncMachine(machine) as m:
            result = await m.dispense(3, "v")
            assert result.outcome is Outcome.UNKNOWN
            assert [r.vend_id for r in await m.pending()] == ["v"]
            settled = await m.resolve("v", "empty", "slot was empty")
            assert settled.outcome is Outcome.EMPTY
            assert await m.pending() == []

    asyncio.run(main())
