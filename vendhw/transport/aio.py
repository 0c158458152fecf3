"""asyncio access to any Transport, without a second implementation and without polling.

Where the transport has a file descriptor (serial ports, ptys) the event loop watches it with
``loop.add_reader`` and the read runs only when bytes are waiting. Otherwise (``sim://``,
``socket://``, USB) the blocking read runs in a worker thread with the same deadline. Either
way the deadline and gap rules are the transport's own.
"""

from __future__ import annotations

import asyncio
import time

from vendhw.transport.base import Transport


class AsyncTransport:
    """``await port.read(timeout, gap)``, ``await port.write(data)`` over a Transport."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self._lock = asyncio.Lock()

    @property
    def url(self) -> str:
        return self.transport.url

    async def write(self, data: bytes) -> None:
        """Send ``data`` (a short blocking write, like pyserial's)."""
        self.transport.write(data)

    async def _wait_readable(self, fd: int, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[bool] = loop.create_future()

        def on_readable() -> None:
            if not ready.done():
                ready.set_result(True)

        loop.add_reader(fd, on_readable)
        try:
            await asyncio.wait_for(ready, timeout)
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            loop.remove_reader(fd)

    async def read(self, timeout: float, gap: float | None = None) -> bytes:
        """The first byte within ``timeout``, then the burst (see :meth:`Transport.read`)."""
        async with self._lock:
            fd = self.transport.fileno()
            if fd is None:
                return await asyncio.to_thread(self.transport.read, timeout, gap)
            deadline = time.monotonic() + timeout
            if not await self._wait_readable(fd, max(0.0, deadline - time.monotonic())):
                return b""
            data = self.transport.read(0.0)
            while data and gap:
                if not await self._wait_readable(fd, gap):
                    break
                more = self.transport.read(0.0)
                if not more:
                    break
                data += more
            return data

    async def close(self) -> None:
        self.transport.close()

    async def __aenter__(self) -> AsyncTransport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
