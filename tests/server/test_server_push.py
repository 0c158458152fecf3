"""The push channel: a long-poll wakes the moment an instruction exists; the background loop
(real clock) finds a payment whose notification was lost and wakes the machine."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from vendhw.client import BackendClient, Instruction
from vendhw.server.settings import SystemClock
from vendhw.testing.backend import InProcessServer


def wait_until_polling(server: InProcessServer, machine: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while server.backend.hub.waiting(machine) == 0:
        assert time.monotonic() < deadline, "the long-poll never started"
        time.sleep(0.005)


def test_long_poll_returns_empty_after_wait(client: BackendClient) -> None:
    started = time.monotonic()
    assert client.next_instructions(wait=0.3) == []
    assert 0.25 <= time.monotonic() - started < 3.0


def test_long_poll_wakes_when_the_order_is_paid(server: InProcessServer,
                                                client: BackendClient) -> None:
    order = client.create_order("A1")
    got: list[Instruction] = []
    elapsed: list[float] = []

    def poll() -> None:
        started = time.monotonic()
        got.extend(client.next_instructions(wait=10))
        elapsed.append(time.monotonic() - started)

    thread = threading.Thread(target=poll)
    thread.start()
    wait_until_polling(server, "m1")
    paid_at = time.monotonic()
    server.pay(order.id)
    thread.join(10)
    assert [i.order_id for i in got] == [order.id]
    assert time.monotonic() - paid_at < 2.0 and elapsed[0] < 5.0
    machines = server.operator("GET", "/operator/v1/machines").json()["machines"]
    assert machines[0]["online"] is False  # the poll is over


def test_background_loop_ships_a_paid_order_without_notification(tmp_path: Path) -> None:
    server = InProcessServer(tmp_path / "loop.db", clock=SystemClock(), run_poller=True,
                             query_interval=0.05, query_max=0.2, order_ttl=30.0)
    try:
        with server.http:  # runs the app's lifespan: the background loop
            server.add_machine("m1")
            client = server.client("m1")
            order = client.create_order("A1")
            server.pay(order.id, notify=0)
            instructions = client.next_instructions(wait=10)
            assert [i.order_id for i in instructions] == [order.id]
            assert server.backend.order_detail(order.id)["payment"]["source"] == "query"
            client.ack(instructions[0].id)
            client.report_result(order.id, "not_dropped")
            assert client.order_status(order.id).state == "refunded"
    finally:
        server.close()
