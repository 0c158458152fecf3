"""A board's USB adapter unplugged and plugged back at another path: the Machine goes
offline instead of dying, refuses vends while offline (nothing journaled or sent), and
:meth:`Machine.reopen` finds the port again through its ``usb-serial://`` identity. A vend
in flight when the port vanished ends ``unknown`` and is never sent again."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from usbbus import Adapter, UsbBus

from vendhw import sim as sim_registry
from vendhw.devices.boards import BoardProfile, Outcome, load_profile
from vendhw.errors import (
    ConfigurationError,
    DisconnectedError,
    NoResponseError,
    PortNotFoundError,
)
from vendhw.machine import Machine
from vendhw.machine.journal import VendJournal, VendState

FAST = {"poll_period": 0.02, "motor_run_limit": 1.0, "drop_sensor_wait": 0.1,
        "response_timeout": 0.2}


def fast_profile(name: str) -> BoardProfile:
    profile = load_profile(name).replace(timing=FAST)
    if profile.option("curtain_settle") is not None:
        profile = profile.replace(protocol={"curtain_settle": 0.01})
    return profile


def wait_motor_stopped(board: object, timeout: float = 5.0) -> None:
    """The simulated motor finished whatever it was turning (a vend that reached the board
    just before the unplug runs to its end meanwhile)."""
    deadline = time.monotonic() + timeout
    while getattr(board, "running", None) is not None and time.monotonic() < deadline:
        threading.Event().wait(0.01)  # sleep-ok: the simulator's motor runs on its own clock
    assert getattr(board, "running", None) is None


@pytest.fixture
def bus(monkeypatch: pytest.MonkeyPatch) -> Iterator[UsbBus]:
    usb = UsbBus(monkeypatch)
    yield usb
    usb.close()


@pytest.mark.parametrize("name", ["easivend-column", "board101", "fafb-xy"])
def test_unplugged_between_sales_then_back_at_another_path(
        name: str, tmp_path: Path, bus: UsbBus) -> None:
    profile = fast_profile(name)
    board = sim_registry.create(profile.name, profile=profile, motor_time=0.01, inventory=10)
    adapter = bus.adapter(board, "BOARD1")
    changes: list[tuple[bool, str]] = []
    machine = Machine(profile, adapter.url, journal=tmp_path / "vends.db")
    machine.state_listeners.append(lambda online, why: changes.append((online, why)))
    try:
        slot = profile.slots()[0]
        assert machine.dispense(slot, vend_id="a").delivered
        old_port = machine.board.transport.device  # type: ignore[attr-defined]
        adapter.unplug()
        # The first command after the unplug finds the port gone: nothing reached the
        # board, so the vend is aborted (not unknown) and the error says so.
        with pytest.raises((DisconnectedError, NoResponseError)):  # FA FB: its reader died
            machine.dispense(slot, vend_id="b")
        record = machine.journal.get("b")
        assert record is not None and record.state is VendState.ABORTED
        assert not machine.online and changes == [(False, changes[0][1])]
        # Offline: refused before anything is journaled.
        with pytest.raises(DisconnectedError, match=r"offline.*nothing was sent"):
            machine.dispense(slot, vend_id="c")
        assert machine.journal.get("c") is None
        with pytest.raises(DisconnectedError):
            machine.status()
        with pytest.raises(PortNotFoundError):
            machine.reopen()  # still unplugged: stays offline
        assert not machine.online
        adapter.plug()
        assert adapter.paths[0] != adapter.paths[1]
        machine.reopen()
        assert machine.online and machine.url == adapter.url  # its stable name
        assert machine.board.transport.device == adapter.paths[1] != old_port  # type: ignore[attr-defined]
        assert changes[-1][0] is True and len(changes) == 2  # one line per change
        assert machine.dispense(slot, vend_id="b").delivered  # an aborted vend may go again
        assert machine.dispense(slot, vend_id="d").delivered
        assert len(board.vends) == 3
    finally:
        machine.close()


class UnplugOnSent(VendJournal):
    """Pulls the adapter right after the vend command was written (journaled ``sent``)."""

    adapter: Adapter | None = None

    def mark(self, vend_id: str, state: VendState, *args: object, **kwargs: object) -> None:
        super().mark(vend_id, state, *args, **kwargs)  # type: ignore[arg-type]
        if state is VendState.SENT and self.adapter is not None:
            adapter, self.adapter = self.adapter, None
            adapter.unplug()


@pytest.mark.parametrize("name", ["easivend-column", "board101"])
def test_unplugged_mid_vend_ends_unknown_and_is_never_sent_again(
        name: str, tmp_path: Path, bus: UsbBus) -> None:
    profile = fast_profile(name)
    board = sim_registry.create(profile.name, profile=profile, motor_time=0.01, inventory=10)
    adapter = bus.adapter(board, "BOARD1")
    journal = UnplugOnSent(tmp_path / "vends.db")
    machine = Machine(profile, adapter.url, journal=journal)
    try:
        slot = profile.slots()[0]
        journal.adapter = adapter
        result = machine.dispense(slot, vend_id="mid")
        assert result.outcome is Outcome.UNKNOWN and not result.replayed
        assert "port went away after the command was sent" in result.detail, result.detail
        assert not machine.online
        turned = len(board.vends)
        assert turned <= 1
        adapter.plug()
        machine.reopen()
        again = machine.dispense(slot, vend_id="mid")  # the shipper's retry, a restart
        assert again.replayed and again.outcome is Outcome.UNKNOWN
        assert len(board.vends) == turned, "the vend was sent again"
        assert [r.vend_id for r in machine.pending()] == ["mid"]  # for an operator
        wait_motor_stopped(board)
        assert machine.dispense(slot, vend_id="next").delivered
    finally:
        machine.close()


def test_a_machine_from_a_board_without_an_opener_cannot_reopen(tmp_path: Path) -> None:
    from vendhw.devices.boards import open_board

    machine = Machine.from_board(open_board("easivend-column", "sim://easivend-column"))
    try:
        with pytest.raises(ConfigurationError, match="without an opener"):
            machine.reopen()
    finally:
        machine.close()


@pytest.mark.parametrize("name", ["easivend-column", "fafb-xy"])
def test_an_idle_look_at_the_port_notices_the_unplug_before_any_vend(
        name: str, tmp_path: Path, bus: UsbBus) -> None:
    profile = fast_profile(name)
    board = sim_registry.create(profile.name, profile=profile, motor_time=0.01, inventory=10)
    adapter = bus.adapter(board, "BOARD1")
    machine = Machine(profile, adapter.url, journal=tmp_path / "vends.db")
    try:
        assert machine.check_port()
        turned = len(board.vends)
        adapter.unplug()
        deadline = time.monotonic() + 5  # FA FB: its reader thread finds the port gone
        while machine.check_port() and time.monotonic() < deadline:
            threading.Event().wait(0.01)  # sleep-ok: waiting for the reader thread
        assert not machine.online
        with pytest.raises(DisconnectedError, match="offline"):
            machine.dispense(profile.slots()[0], vend_id="x")
        assert machine.journal.get("x") is None and len(board.vends) == turned
    finally:
        machine.close()


def test_a_reopen_that_fails_while_online_leaves_the_machine_offline(
        tmp_path: Path, bus: UsbBus) -> None:
    profile = fast_profile("easivend-column")
    board = sim_registry.create(profile.name, profile=profile, motor_time=0.01, inventory=10)
    adapter = bus.adapter(board, "BOARD1")
    machine = Machine(profile, adapter.url, journal=tmp_path / "vends.db")
    try:
        adapter.unplug()
        with pytest.raises(PortNotFoundError):
            machine.reopen()  # asked while it still looked online: its port is now closed
        assert not machine.online and "reopen failed" in (machine.offline_reason or "")
        with pytest.raises(DisconnectedError, match="offline"):
            machine.dispense(profile.slots()[0])
        adapter.plug()
        machine.reopen()
        assert machine.online and machine.dispense(profile.slots()[0]).delivered
    finally:
        machine.close()


def test_async_machine_checks_and_reopens_its_port(tmp_path: Path, bus: UsbBus) -> None:
    import asyncio

    from vendhw.machine.aio import AsyncMachine

    profile = fast_profile("easivend-column")
    board = sim_registry.create(profile.name, profile=profile, motor_time=0.01, inventory=10)
    adapter = bus.adapter(board, "BOARD1")

    async def main() -> None:
        async with AsyncMachine(Machine(profile, adapter.url,
                                        journal=tmp_path / "vends.db")) as machine:
            assert await machine.check_port() and machine.online
            adapter.unplug()
            assert not await machine.check_port() and not machine.online
            adapter.plug()
            await machine.reopen()
            assert machine.online
            assert (await machine.dispense(profile.slots()[0])).delivered

    asyncio.run(main())


def test_a_board_missing_at_open_starts_offline_with_offline_ok_and_comes_up_on_reopen(
        tmp_path: Path, bus: UsbBus) -> None:
    profile = fast_profile("easivend-column")
    board = sim_registry.create(profile.name, profile=profile, motor_time=0.01, inventory=10)
    adapter = bus.adapter(board, "BOARD1")
    adapter.unplug()  # the controller booted before the adapter enumerated
    with pytest.raises(PortNotFoundError):  # without offline_ok: as before
        Machine(profile, adapter.url, journal=tmp_path / "other.db")
    # A vend a previous run left in flight (the command had left) cannot be asked about.
    journal = VendJournal(tmp_path / "vends.db")
    journal.begin("cut", board=profile.name, slot="1", motor=1, drop_sensor=False,
                  sequence_range=(1, 255))
    journal.mark("cut", VendState.SENT)
    journal.close()
    changes: list[bool] = []
    machine = Machine(profile, adapter.url, journal=tmp_path / "vends.db", offline_ok=True)
    machine.state_listeners.append(lambda online, why: changes.append(online))
    try:
        assert not machine.online and machine.url == adapter.url
        assert "no USB serial port matches" in (machine.offline_reason or "")
        cut = machine.journal.get("cut")
        assert cut is not None and cut.outcome == "unknown" and not cut.in_flight
        assert "could not be asked, it was offline" in cut.detail
        slot = profile.slots()[0]
        with pytest.raises(DisconnectedError, match=r"offline.*nothing was sent"):
            machine.dispense(slot, vend_id="early")
        assert machine.journal.get("early") is None
        with pytest.raises(DisconnectedError):
            machine.status()
        assert not machine.check_port()  # the idle watch sends nothing, stays offline
        with pytest.raises(PortNotFoundError):
            machine.reopen()
        assert not machine.online and changes == []
        adapter.plug()
        machine.reopen()
        assert machine.online and changes == [True]
        assert machine.dispense(slot, vend_id="early").delivered
        again = machine.dispense(slot, vend_id="cut")  # never sent, now or later
        assert again.replayed and again.outcome is Outcome.UNKNOWN
        assert len(board.vends) == 1
    finally:
        machine.close()


def test_offline_ok_still_fails_fast_on_what_no_waiting_can_fix(tmp_path: Path) -> None:
    for profile, url, why in (("easivend-column", "usb-seral://0403:6001?serial=A",
                               "unknown port scheme"),
                              ("easivend-column", "usb-serial://0403:6001?seria=A",
                               "unknown key"),
                              ("easivend-colum", "/dev/ttyUSB9", "easivend-colum")):
        with pytest.raises(ConfigurationError, match=why):
            Machine(profile, url, journal=tmp_path / "vends.db", offline_ok=True)
