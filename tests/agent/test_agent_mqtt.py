"""The agent takes its ship instructions over MQTT when machine.toml says
``[backend] push = "mqtt"``: a real mosquitto on loopback (started by the test, per-machine
users and the ACL), the real backend with its MQTT bridge, the agent's shipper and journal."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from vendhw.agent.runner import AgentConfig, MqttInstructions
from vendhw.agent.shipper import Shipper
from vendhw.errors import ConfigurationError
from vendhw.server.mqtt import MqttBridge
from vendhw.testing.backend import InProcessServer

sys.path.insert(0, str(Path(__file__).parents[1] / "server"))  # the broker helper
from mqttbroker import BrokerUnavailable, start_broker

USERS = {"vendhw-backend": "backend-pass-0123", "m1": "m1-pass-0123"}


@pytest.fixture(scope="module")
def broker() -> Iterator[Any]:
    try:
        running = start_broker(USERS)
    except BrokerUnavailable as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"mosquitto is required in CI: {exc}")
        pytest.skip(f"mosquitto unavailable: {exc}")
    yield running
    running.stop()


def write_toml(path: Path, backend_extra: str) -> Path:
    path.write_text(f"""
[backend]
url = "http://127.0.0.1:1"
machine_id = "m1"
secret = "m1-secret-0123456789"
{backend_extra}

[board]
profile = "sim"
port = "sim"
""", encoding="utf-8")
    return path


@dataclass(frozen=True)
class Vended:
    outcome: str = "delivered"

    def to_dict(self) -> dict[str, Any]:
        return {"outcome": self.outcome}


class Machine:
    def __init__(self) -> None:
        self.vends: list[str] = []

    def dispense(self, slot: str, vend_id: str) -> Vended:
        self.vends.append(vend_id)
        return Vended()


def test_push_defaults_to_the_long_poll_and_bad_settings_are_refused(tmp_path: Path) -> None:
    assert AgentConfig.load(write_toml(tmp_path / "a.toml", "")).mqtt is None
    assert AgentConfig.load(write_toml(tmp_path / "b.toml", 'push = "longpoll"')).mqtt is None
    config = AgentConfig.load(write_toml(tmp_path / "c.toml", 'push = "mqtt"\n'
                                         'mqtt_host = "broker.example"\nmqtt_tls = true\n'
                                         'mqtt_password = "pw"'))
    assert config.mqtt is not None
    assert (config.mqtt.host, config.mqtt.port, config.mqtt.tls, config.mqtt.password,
            config.mqtt.username, config.mqtt.prefix) == ("broker.example", 8883, True, "pw",
                                                          None, "vendhw")
    for extra, words in [('push = "websocket"', "push must be"),
                         ('push = "mqtt"', "needs mqtt_host"),
                         ('push = "mqtt"\nmqtt_host = "b"\nmqtt_port = 0', "mqtt_port"),
                         ('push = "mqtt"\nmqtt_host = "b"\nmqtt_tls = "yes"', "mqtt_tls")]:
        with pytest.raises(ConfigurationError, match=words):
            AgentConfig.load(write_toml(tmp_path / "bad.toml", extra))


def test_the_agent_ships_an_order_pushed_over_mqtt(broker: Any, tmp_path: Path) -> None:
    server = InProcessServer(tmp_path / "b.db", redeliver_after=30.0)
    server.add_machine("m1", slots={"A1": ("cola", 350)})
    bridge = MqttBridge(server.backend, "127.0.0.1", broker.port,
                        password=USERS["vendhw-backend"], redeliver_every=0.2)
    bridge.start()
    stop = threading.Event()
    push: MqttInstructions | None = None
    try:
        assert bridge.connected.wait(20)
        config = AgentConfig.load(write_toml(tmp_path / "machine.toml", (
            f'push = "mqtt"\nmqtt_host = "127.0.0.1"\nmqtt_port = {broker.port}\n'
            'mqtt_password_env = "TEST_M1_MQTT_PASSWORD"')))
        assert config.mqtt is not None
        os.environ["TEST_M1_MQTT_PASSWORD"] = USERS["m1"]
        try:
            config = AgentConfig.load(tmp_path / "machine.toml")
        finally:
            del os.environ["TEST_M1_MQTT_PASSWORD"]
        assert config.mqtt is not None and config.mqtt.password == USERS["m1"]
        http = server.client("m1")
        push = MqttInstructions.open(http, config.machine_id, config.mqtt)
        # Subscribe first (the persistent session), as the shipper's first ask does.
        assert push.next_instructions(wait=0.1) == []
        machine = Machine()
        shipper = Shipper(push, machine, tmp_path / "ships.db")
        runner = threading.Thread(target=shipper.run, args=(stop, 1.0), daemon=True)
        runner.start()
        order = http.create_order("A1")
        server.pay(order.id)
        for _ in range(400):  # a bound, not a timing assertion
            if server.state(order.id) == "delivered":
                break
            stop.wait(0.05)
        assert server.state(order.id) == "delivered"
        assert machine.vends == [f"order-{order.id}"]
        stop.set()
        shipper.wait_idle()
        shipper.close()
    finally:
        stop.set()
        if push is not None:
            push.close()
        bridge.stop()
        server.close()
