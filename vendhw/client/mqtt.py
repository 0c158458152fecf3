"""A machine's MQTT push channel: the same instructions as the long-poll, over a broker.

    push = MqttPush("m1", "broker.example", 1883, password="...")
    push.connect()
    for instruction in push.next_instructions(wait=25):
        ...journal it...
        push.ack(instruction.id)           # or BackendClient.ack over HTTP

The session is persistent (clean session off, client id ``vendhw-machine-<id>``) and
subscribed at QoS 1, so instructions published while the machine was offline are delivered
when it reconnects. Deduplicate by ``id`` (the backend redelivers until acknowledged).
"""

from __future__ import annotations

import json
import queue
import threading
import time
from typing import Any

from vendhw.client.models import Instruction


class MqttPush:
    """Receives one machine's instructions from the broker; acknowledges them there."""

    def __init__(self, machine_id: str, host: str, port: int = 1883, *,
                 username: str | None = None, password: str | None = None,
                 prefix: str = "vendhw", tls: bool = False,
                 client_id: str | None = None) -> None:
        import paho.mqtt.client as mqtt

        self.machine_id = machine_id
        self.prefix = prefix
        self.host, self.port = host, port
        self.subscribed = threading.Event()
        self._answered = threading.Event()  # subscribed, or refused
        self.refused: str | None = None
        self._queue: queue.Queue[Instruction] = queue.Queue()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=client_id or f"vendhw-machine-{machine_id}",
                                  clean_session=False)
        self.client.username_pw_set(username or machine_id, password)
        if tls:
            self.client.tls_set()
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    @property
    def topic(self) -> str:
        return f"{self.prefix}/{self.machine_id}/instructions"

    def connect(self, timeout: float = 10.0) -> None:
        """Connect and subscribe; raises ConnectionError when refused or not subscribed.
        May be called again after a failure."""
        self._answered.clear()
        self.refused = None
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()
        self._answered.wait(timeout)
        if not self.subscribed.is_set():
            self.close()
            raise ConnectionError(f"MQTT: not subscribed to {self.topic}: "
                                  f"{self.refused or 'no answer'}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def next_instructions(self, wait: float = 25.0) -> list[Instruction]:
        """Instructions received so far, waiting up to ``wait`` s for the first one."""
        items: list[Instruction] = []
        deadline = time.monotonic() + wait
        try:
            items.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
        except queue.Empty:
            return []
        while True:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                return items

    def ack(self, instruction_id: str) -> None:
        """Acknowledge (QoS 1) on ``<prefix>/<machine>/acks``."""
        self.client.publish(f"{self.prefix}/{self.machine_id}/acks",
                            json.dumps({"id": instruction_id}), qos=1).wait_for_publish(10)

    # --- paho callbacks ---------------------------------------------------------------------

    def _on_connect(self, client: Any, _userdata: Any, _flags: Any, reason: Any,
                    _properties: Any = None) -> None:
        if getattr(reason, "is_failure", False):
            self.refused = str(reason)
            self._answered.set()
            return
        client.subscribe(self.topic, qos=1)

    def _on_subscribe(self, _client: Any, _userdata: Any, _mid: Any, reasons: Any,
                      _properties: Any = None) -> None:
        if all(not getattr(r, "is_failure", False) for r in reasons):
            self.subscribed.set()
        else:
            self.refused = ", ".join(str(r) for r in reasons)
        self._answered.set()

    def _on_message(self, _client: Any, _userdata: Any, message: Any) -> None:
        try:
            self._queue.put(Instruction.from_json(json.loads(message.payload)))
        except (ValueError, KeyError, TypeError):
            pass  # not an instruction: ignored


__all__ = ["MqttPush"]
