"""MQTT push through a real mosquitto on loopback: per-machine credentials and topic ACL,
QoS 1, persistent sessions, acknowledgements over MQTT."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from vendhw.client.mqtt import MqttPush
from vendhw.server.mqtt import MqttBridge
from vendhw.server.settings import FakeClock
from vendhw.testing.backend import InProcessServer

USERS = {"vendhw-backend": "backend-pass-0123", "m1": "m1-pass-0123", "m2": "m2-pass-0123"}


@pytest.fixture(scope="module")
def broker() -> Iterator[object]:
    from mqttbroker import BrokerUnavailable, start_broker

    try:
        running = start_broker(USERS)
    except BrokerUnavailable as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"mosquitto is required in CI: {exc}")
        pytest.skip(f"mosquitto unavailable: {exc}")
    yield running
    running.stop()


@pytest.fixture
def world(broker: object, tmp_path: Path) -> Iterator[tuple[InProcessServer, MqttBridge]]:
    server = InProcessServer(tmp_path / "b.db", redeliver_after=30.0)
    server.add_machine("m1", slots={"A1": ("cola", 350)})
    server.add_machine("m2", slots={"A1": ("cola", 350)})
    bridge = MqttBridge(server.backend, "127.0.0.1", broker.port,  # type: ignore[attr-defined]
                        password=USERS["vendhw-backend"], redeliver_every=0.2)
    bridge.start()
    assert bridge.connected.wait(20)
    yield server, bridge
    bridge.stop()
    server.close()


def _machine(broker: object, machine_id: str, password: str | None = None) -> MqttPush:
    return MqttPush(machine_id, "127.0.0.1", broker.port,  # type: ignore[attr-defined]
                    password=password or USERS[machine_id])


def test_a_paid_order_reaches_the_machine_and_its_ack_comes_back(
        broker: object, world: tuple[InProcessServer, MqttBridge]) -> None:
    server, _ = world
    push = _machine(broker, "m1")
    push.connect()
    try:
        order = server.client("m1").create_order("A1")
        server.pay(order.id)
        [instruction] = push.next_instructions(wait=20)  # bound, not a timing assertion
        assert instruction.order_id == order.id and instruction.type == "ship"
        push.ack(instruction.id)
        for _ in range(200):  # the ack travels through the broker to the bridge
            if server.state(order.id) == "dispensing":
                break
            push.next_instructions(wait=0.05)
        assert server.state(order.id) == "dispensing"
    finally:
        push.close()


def test_instructions_wait_at_the_broker_while_the_machine_is_offline(
        broker: object, world: tuple[InProcessServer, MqttBridge]) -> None:
    server, _ = world
    first = _machine(broker, "m2")
    first.connect()  # creates the persistent session and its subscription
    first.close()
    order = server.client("m2").create_order("A1")
    server.pay(order.id)  # published (QoS 1) while m2 is offline
    assert isinstance(server.clock, FakeClock)
    again = _machine(broker, "m2")
    again.connect()
    try:
        got = again.next_instructions(wait=20)
        assert order.id in {i.order_id for i in got}
    finally:
        again.close()


def test_the_acl_confines_a_machine_to_its_own_topics(
        broker: object, world: tuple[InProcessServer, MqttBridge]) -> None:
    server, _ = world
    owner = _machine(broker, "m1")
    owner.connect()
    # m2 subscribes to m1's instructions: the broker's ACL lets nothing through.
    spy = MqttPush("m1", "127.0.0.1", broker.port,  # type: ignore[attr-defined]
                   username="m2", password=USERS["m2"], client_id="vendhw-spy")
    spy.connect()
    try:
        order = server.client("m1").create_order("A1")
        server.pay(order.id)
        [ins] = [i for i in owner.next_instructions(wait=20) if i.order_id == order.id]
        assert spy.next_instructions(wait=0.5) == []
        # Nor may m2 acknowledge m1's instruction: the broker drops its write to m1's acks.
        spy.ack(ins.id)  # spy.ack writes to vendhw/m1/acks (its machine_id) as user m2
        owner.next_instructions(wait=0.5)
        assert server.state(order.id) == "paid"
        owner.ack(ins.id)
        for _ in range(200):
            if server.state(order.id) == "dispensing":
                break
            owner.next_instructions(wait=0.05)
        assert server.state(order.id) == "dispensing"
    finally:
        spy.close()
        owner.close()
    # A wrong password is refused at connect.
    intruder = _machine(broker, "m1", password="wrong-password")
    with pytest.raises(ConnectionError):
        intruder.connect(timeout=10)
    assert intruder.refused is not None


def test_serve_with_mqtt(broker: object, tmp_path: Path) -> None:
    """`vendhw backend serve --mqtt`: a sale paid over HTTP reaches the machine over MQTT."""
    import socket
    import subprocess
    import sys
    import time

    import httpx

    from vendhw.client import BackendClient

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    token = "mqtt-operator-token"
    env = {**os.environ, "VENDHW_OPERATOR_TOKEN": token,
           "VENDHW_MQTT_PASSWORD": USERS["vendhw-backend"]}
    process = subprocess.Popen(
        [sys.executable, "-m", "vendhw", "backend", "serve", "--db", str(tmp_path / "s.db"),
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
         "--mqtt", f"127.0.0.1:{broker.port}"],  # type: ignore[attr-defined]
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    push = _machine(broker, "m1")
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.communicate()[1]
            try:
                if httpx.get(url + "/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.1)
        catalogue = {"products": [{"id": "cola", "name": "Cola", "price": 350}],
                     "machines": [{"id": "m1", "secret": "m1-http-secret-0123",
                                   "slots": [{"slot": "A1", "product": "cola"}]}]}
        httpx.post(url + "/operator/v1/catalogue", json=catalogue,
                   headers={"Authorization": f"Bearer {token}"}).raise_for_status()
        push.connect()
        with BackendClient(url, "m1", "m1-http-secret-0123") as client:
            order = client.create_order("A1")
            httpx.post(f"{url}/sandbox/orders/{order.id}/pay").raise_for_status()
            got = [i for i in push.next_instructions(wait=20) if i.order_id == order.id]
            assert got, "no instruction over MQTT"
            push.ack(got[0].id)
            for _ in range(200):
                if client.order_status(order.id).state == "dispensing":
                    break
                time.sleep(0.05)
            assert client.order_status(order.id).state == "dispensing"
    finally:
        push.close()
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_the_deployed_acl_is_the_tested_one() -> None:
    from mqttbroker import ACL

    root = Path(__file__).resolve().parents[2]
    assert (root / "deploy" / "mosquitto" / "acl").read_text() == ACL
