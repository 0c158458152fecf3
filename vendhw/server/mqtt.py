"""MQTT push: instructions to ``vendhw/<machine>/instructions``, acknowledgements back.

The bridge is one MQTT client of the backend process (user ``vendhw-backend``):

* every new instruction (a :class:`~vendhw.server.push.PushHub` listener, after its
  transaction committed) is published to ``<prefix>/<machine>/instructions`` at QoS 1, the
  same JSON as the long-poll's items;
* every ``redeliver_every`` seconds, instructions still unacknowledged and due again are
  published again (the database stays the source of truth; the machine deduplicates by id);
* acknowledgements arrive on ``<prefix>/<machine>/acks`` (QoS 1, ``{"id": "ins_..."}``) and
  go through :meth:`Backend.ack` exactly like the HTTP ack, which machines may still use.

Machines connect with their own credentials and a persistent session (clean session off,
client id ``vendhw-machine-<id>``): QoS 1 messages published while one is offline wait at the
broker. The broker's ACL confines each machine to its own two topics (see
docs/backend-fleet.md). Several backend processes may each run a bridge; a machine then
gets a message per process at worst, and deduplicates it.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vendhw.server.service import Backend

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "vendhw"


class MqttBridge:
    """Publishes a backend's instructions over MQTT and applies acknowledgements."""

    def __init__(self, backend: Backend, host: str, port: int = 1883, *,
                 username: str | None = "vendhw-backend", password: str | None = None,
                 prefix: str = DEFAULT_PREFIX, redeliver_every: float = 2.0) -> None:
        import paho.mqtt.client as mqtt

        self.backend = backend
        self.prefix = prefix
        self.redeliver_every = redeliver_every
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id="vendhw-backend-" + secrets.token_hex(4))
        if username:
            self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.host, self.port = host, port

    def topic(self, machine_id: str, leaf: str) -> str:
        return f"{self.prefix}/{machine_id}/{leaf}"

    def start(self) -> None:
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()
        self.backend.hub.listeners.append(self._publish)
        self._thread = threading.Thread(target=self._redeliver_loop, daemon=True,
                                        name="vendhw-mqtt-redeliver")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._publish in self.backend.hub.listeners:
            self.backend.hub.listeners.remove(self._publish)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.client.disconnect()
        self.client.loop_stop()

    # --- paho callbacks (its network thread) ------------------------------------------------

    def _on_connect(self, client: Any, _userdata: Any, _flags: Any, reason: Any,
                    _properties: Any = None) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("MQTT broker refused the backend: %s", reason)
            return
        client.subscribe(f"{self.prefix}/+/acks", qos=1)
        self.connected.set()

    def _on_message(self, _client: Any, _userdata: Any, message: Any) -> None:
        parts = message.topic.split("/")
        if len(parts) != 3 or parts[2] != "acks":
            return
        machine_id = parts[1]
        try:
            instruction_id = str(json.loads(message.payload)["id"])
        except (ValueError, KeyError, TypeError):
            log.warning("malformed MQTT ack from %s", machine_id)
            return
        try:
            self.backend.ack(machine_id, instruction_id)
        except Exception as exc:  # unknown / cancelled instruction: the machine asks again
            log.info("MQTT ack %s from %s refused: %s", instruction_id, machine_id, exc)

    # --- publishing ---------------------------------------------------------------------------

    def _publish(self, machine_id: str, instruction: dict[str, Any]) -> None:
        self.client.publish(self.topic(machine_id, "instructions"),
                            json.dumps({"delivery": 1, **instruction}), qos=1)

    def publish_due(self) -> int:
        """Publish every instruction due for (re)delivery; returns how many."""
        count = 0
        for machine_id in self.backend.machines_with_due_instructions():
            items, _ = self.backend.take_instructions(machine_id)
            for item in items:
                self.client.publish(self.topic(machine_id, "instructions"), json.dumps(item),
                                    qos=1)
                count += 1
        return count

    def _redeliver_loop(self) -> None:
        while not self._stop.wait(self.redeliver_every):
            if not self.connected.is_set():
                continue
            try:
                self.publish_due()
            except Exception:
                log.exception("MQTT redelivery pass failed")


__all__ = ["DEFAULT_PREFIX", "MqttBridge"]
