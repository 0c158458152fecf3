"""The pytest plugin, used the way an integrator uses it (pytester runs a test file)."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

EXAMPLE = '''
import pytest

from vendhw.devices.ssp import open_device
from vendhw.machine import Machine


def test_my_app_sells_from_the_board(vendhw_board):
    # the application under test opens the port as it would open /dev/ttyUSB0
    with Machine("board101", vendhw_board.port) as machine:
        result = machine.dispense("1")
    assert result.outcome == "delivered"
    assert [v.motor for v in vendhw_board.simulator.vends] == [1]
    assert vendhw_board.simulator.inventory[1] == 4


@pytest.mark.vendhw_board("fafb-xy", inventory=0)
def test_an_empty_slot_is_reported(vendhw_board):
    with Machine("fafb-xy", vendhw_board.port) as machine:
        assert machine.dispense("1-1").outcome == "empty"


def test_a_note_validator(vendhw_ssp):
    device = open_device(vendhw_ssp.port)
    device.start()
    assert device.status()["unit"] == "SMART Payout"
    device.close()


def test_every_cash_device_is_served(vendhw_cctalk_coin, vendhw_cctalk_bill,
                                     vendhw_cctalk_hopper, vendhw_id003, vendhw_mdb_changer,
                                     vendhw_mdb_bill):
    ports = {vendhw_cctalk_coin.port, vendhw_cctalk_bill.port, vendhw_cctalk_hopper.port,
             vendhw_id003.port, vendhw_mdb_changer.port, vendhw_mdb_bill.port}
    assert len(ports) == 6 and all(p.startswith("/dev/") for p in ports)


def test_the_backend_sells(vendhw_backend):
    secret = vendhw_backend.add_machine("m1", {"1": ("tea", 300)})
    client = vendhw_backend.client("m1", secret)
    order = client.create_order("1")
    assert order.amount == 300
    vendhw_backend.pay(order.id)
    [ship] = client.next_instructions(wait=5)
    assert ship.slot == "1"
    client.close()
'''


def test_the_plugin_fixtures_work_in_an_integrators_project(
        pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_integrator=EXAMPLE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=5)


def test_the_plugin_is_registered_for_pytest() -> None:
    from importlib.metadata import entry_points

    (entry,) = [e for e in entry_points(group="pytest11") if e.name == "vendhw"]
    assert entry.value == "vendhw.testing.pytest_plugin"
