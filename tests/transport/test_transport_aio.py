"""The asyncio adapter: the same transports, awaited, fd-watched or threaded."""

from __future__ import annotations

import asyncio

from vendhw.sim.echo import EchoSimulator
from vendhw.transport import SimulatorOnPty, open_transport
from vendhw.transport.aio import AsyncTransport


def test_async_read_over_a_pty_uses_the_fd() -> None:
    async def main() -> bytes:
        with SimulatorOnPty(EchoSimulator()) as served:
            async with AsyncTransport(open_transport(served.port)) as port:
                assert port.transport.fileno() is not None
                await port.write(b"ping")
                got = b""
                while len(got) < 4:
                    chunk = await port.read(2.0, gap=0.02)
                    assert chunk
                    got += chunk
                assert await port.read(0.05) == b""
                return got

    assert asyncio.run(main()) == b"ping"


def test_async_read_in_process_simulator_uses_a_thread() -> None:
    async def main() -> tuple[bytes, bytes]:
        port = AsyncTransport(open_transport("sim://echo"))
        assert port.transport.fileno() is None
        await port.write(b"abc")
        first = await port.read(1.0)
        silent = await port.read(0.02)
        await port.close()
        return first, silent

    assert asyncio.run(main()) == (b"abc", b"")


def test_other_tasks_run_while_a_read_waits() -> None:
    async def main() -> list[str]:
        order: list[str] = []
        with SimulatorOnPty(EchoSimulator()) as served:
            port = AsyncTransport(open_transport(served.port))

            async def reader() -> None:
                await port.read(1.0)
                order.append("read")

            async def writer() -> None:
                order.append("write")
                await port.write(b"x")

            await asyncio.gather(reader(), writer())
            await port.close()
        return order

    assert asyncio.run(main()) == ["write", "read"]
