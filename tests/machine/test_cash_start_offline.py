"""A cash device whose start fails when the machine starts (silent, pulled meanwhile) is
left offline for the reconnect loop, not fatal: the agent starts with ``offline_ok``."""

from __future__ import annotations

from typing import Any

import pytest
from cashrigs import make_rig

from vendhw.errors import ConfigurationError, VendhwError
from vendhw.machine.cash import CashAcceptor, CashJournal
from vendhw.transport import SimTransport


class Power:
    """The device's power: while off, nothing sent reaches it, so nothing answers."""

    def __init__(self) -> None:
        self.on = False


def _rig_with_switch() -> tuple[Any, Power]:
    power = Power()

    class Line(SimTransport):
        def _write(self, data: bytes) -> None:
            if power.on:
                super()._write(data)

    return make_rig("ssp", Line, reply_timeout=0.02), power


def test_a_device_whose_start_fails_is_offline_and_reopened_later() -> None:
    rig, switch = _rig_with_switch()
    journal = CashJournal(":memory:")
    device = rig.open_host()
    acceptor = CashAcceptor([device], journal, openers={device.name: rig.open_host})
    changes: list[tuple[str, bool]] = []
    acceptor.state_listeners.append(lambda name, online, why: changes.append((name, online)))
    with pytest.raises(VendhwError):  # without offline_ok: raises, as before
        acceptor.start_devices()
    acceptor.start_devices(offline_ok=True)
    assert device.name in acceptor.offline
    assert "start failed" in acceptor.offline[device.name]
    assert changes == [(device.name, False)]
    acceptor.enable()  # an offline device is not enabled (nothing is sent to it)
    assert acceptor.poll_once() == []
    switch.on = True  # it answers again
    acceptor.reopen(device.name)
    assert not acceptor.offline and changes[-1] == (device.name, True)
    rig.insert(1)
    for _ in range(200):
        acceptor.poll_once()
        if journal.credited():
            break
    assert journal.credited() == 1000


def test_without_an_opener_a_failed_start_still_raises() -> None:
    rig, _ = _rig_with_switch()
    acceptor = CashAcceptor([rig.open_host()], CashJournal(":memory:"))
    with pytest.raises(VendhwError) as caught:
        acceptor.start_devices(offline_ok=True)
    assert not isinstance(caught.value, ConfigurationError)
    assert not acceptor.offline
