"""Long-poll across processes (PostgreSQL LISTEN/NOTIFY): a machine waiting on process B is
woken the moment process A ships it an instruction."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from vendhw.server.service import Backend
from vendhw.server.settings import ServerSettings

CATALOGUE = {
    "products": [{"id": "cola", "name": "Cola", "price": 350}],
    "machines": [{"id": "m1", "secret": "s3cret-m1-0123456789",
                  "slots": [{"slot": "A1", "product": "cola"}]}],
}


@pytest.fixture
def processes(pg_cluster: object) -> Iterator[tuple[Backend, Backend]]:
    url = pg_cluster.create_database("push")  # type: ignore[attr-defined]
    a = Backend(ServerSettings(db_url=url, run_poller=False, operator_token="t"))
    a.load_catalogue(CATALOGUE)
    b = Backend(ServerSettings(db_url=url, run_poller=False, operator_token="t"))
    yield a, b
    a.close()
    b.close()


def test_an_instruction_made_in_one_process_wakes_a_long_poll_in_another(
        processes: tuple[Backend, Backend]) -> None:
    a, b = processes
    assert b.doorbell is not None
    b.start_doorbell()
    assert b.doorbell.ready.wait(30)
    order = a.create_order("m1", "A1")
    assert a.sandbox is not None

    async def scenario() -> tuple[bool, list[dict[str, object]]]:
        waiter = b.hub.subscribe("m1")
        try:
            items, _ = await asyncio.to_thread(b.take_instructions, "m1")
            assert items == []
            # The customer pays through process A; nothing calls B directly.
            await asyncio.to_thread(a.sandbox.pay, order["id"])  # type: ignore[union-attr]
            rung = await waiter.wait(30)  # a liveness bound, not a timing assertion
            items, _ = await asyncio.to_thread(b.take_instructions, "m1")
            return rung, items
        finally:
            b.hub.unsubscribe(waiter)

    rung, items = asyncio.run(scenario())
    assert rung, "process B's long-poll was never woken"
    assert [i["type"] for i in items] == ["ship"]


def test_sqlite_needs_no_doorbell(tmp_path: object) -> None:
    backend = Backend(ServerSettings(db_url=f"sqlite:///{tmp_path}/x.db", run_poller=False))
    try:
        assert backend.doorbell is None
        backend.start_doorbell()  # a no-op
    finally:
        backend.close()


def test_two_served_processes_one_postgresql(pg_cluster: object, tmp_path: object) -> None:
    """Two ``vendhw backend serve`` processes on one PostgreSQL: a machine long-polls process
    B, the customer pays through process A, the ship instruction reaches the machine."""
    import os
    import subprocess
    import sys
    import threading
    import time

    import httpx

    from vendhw.client import BackendClient

    url = pg_cluster.create_database("served")  # type: ignore[attr-defined]
    token = "two-process-token"
    ports = []
    for _ in range(2):
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
    env = {**os.environ, "VENDHW_OPERATOR_TOKEN": token}
    servers = []
    try:
        for index, port in enumerate(ports):
            servers.append(subprocess.Popen(
                [sys.executable, "-m", "vendhw", "backend", "serve", "--db", url, "--host",
                 "127.0.0.1", "--port", str(port), "--log-level", "warning",
                 *(["--no-poller"] if index else [])],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
            deadline = time.monotonic() + 60
            while True:
                assert servers[-1].poll() is None, servers[-1].communicate()[1]
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "a server did not become ready"
                time.sleep(0.1)
        a, b = (f"http://127.0.0.1:{port}" for port in ports)
        httpx.post(a + "/operator/v1/catalogue", json=CATALOGUE,
                   headers={"Authorization": f"Bearer {token}"}).raise_for_status()
        with BackendClient(b, "m1", "s3cret-m1-0123456789") as client:
            order = client.create_order("A1")
            got: list[object] = []
            # A 60 s long-poll on B: without the doorbell it would only look again at its end.
            poll = threading.Thread(target=lambda: got.extend(client.next_instructions(
                wait=60)), daemon=True)
            poll.start()
            time.sleep(0.5)  # let the long-poll open on B first
            httpx.post(f"{a}/sandbox/orders/{order.id}/pay").raise_for_status()
            poll.join(timeout=30)  # a liveness bound, half the long-poll
            assert not poll.is_alive(), "B's long-poll was not woken by A's payment"
        assert [getattr(i, "order_id", None) for i in got] == [order.id]
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
