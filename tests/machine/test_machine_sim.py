"""Machine against every family's simulator: every outcome over sim://, a few over a pty.

Timings are shortened with ``BoardProfile.replace`` (the same profile object drives the
simulator and the driver), so the board-master poll and the motor run limits cost tens of
milliseconds instead of seconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vendhw import sim as sim_registry
from vendhw.devices.boards import BoardProfile, Outcome, load_profile
from vendhw.errors import ConfigurationError, NoResponseError
from vendhw.machine import Machine
from vendhw.machine.journal import VendJournal, VendState
from vendhw.sim.base import Simulator
from vendhw.transport import SimulatorOnPty

FAST = {"poll_period": 0.05, "motor_run_limit": 0.6, "drop_sensor_wait": 0.1,
        "response_timeout": 0.3}

# fault -> the outcome each family reports for it (the families can say different things:
# FA FB has no drop-sensor codes, the 101 board reads an empty slot as "nothing passed
# the light curtain", Easivend reports a stalled spiral as "did not return home in time").
OUTCOMES: dict[str, dict[str | None, Outcome]] = {
    "fafb-xy": {
        None: Outcome.DELIVERED, "empty": Outcome.EMPTY, "jam": Outcome.JAMMED,
        "motor_fault": Outcome.MOTOR_FAULT, "no_drop": Outcome.JAMMED,
        "slow_motor": Outcome.TIMEOUT, "reset_mid_vend": Outcome.UNKNOWN,
    },
    "board101": {
        None: Outcome.DELIVERED, "empty": Outcome.NOT_DROPPED, "jam": Outcome.JAMMED,
        "motor_fault": Outcome.MOTOR_FAULT, "no_drop": Outcome.NOT_DROPPED,
        "sensor_fault": Outcome.SENSOR_FAULT, "slow_motor": Outcome.TIMEOUT,
    },
    "easivend-column": {
        None: Outcome.DELIVERED, "empty": Outcome.NOT_DROPPED, "jam": Outcome.TIMEOUT,
        "motor_fault": Outcome.MOTOR_FAULT, "no_drop": Outcome.NOT_DROPPED,
        "sensor_fault": Outcome.SENSOR_FAULT, "slow_motor": Outcome.TIMEOUT,
        "reset_mid_vend": Outcome.UNKNOWN,
    },
}
CASES = [(p, f, o) for p, table in OUTCOMES.items() for f, o in table.items()]


def fast_profile(name: str) -> BoardProfile:
    profile = load_profile(name).replace(timing=FAST)
    if profile.option("curtain_settle") is not None:  # 101 self test: 1 s per the vendor doc
        profile = profile.replace(protocol={"curtain_settle": 0.05})
    return profile


def simulator(profile: BoardProfile, inventory: int = 5, **faults: Any) -> Simulator:
    sim = sim_registry.create(profile.name, profile=profile, motor_time=0.01,
                              motor_limit=0.3, reset_time=0.2, inventory=inventory)
    for name, value in faults.items():
        sim.set_fault(name, value)
    return sim


def fault_value(fault: str) -> Any:
    return 2.0 if fault == "slow_motor" else True


@pytest.mark.parametrize(("profile_name", "fault", "expected"), CASES,
                         ids=[f"{p}-{f or 'ok'}" for p, f, _ in CASES])
def test_every_outcome_over_sim(profile_name: str, fault: str | None, expected: Outcome,
                                tmp_path: Path) -> None:
    profile = fast_profile(profile_name)
    sim = simulator(profile, **({fault: fault_value(fault)} if fault else {}))
    motor = profile.slots()[1]
    with Machine(profile, f"sim://{profile_name}", simulator=sim,
                 journal=tmp_path / "j.sqlite") as machine:
        result = machine.dispense(motor, "v1")
        assert result.outcome is expected, result
        assert (result.motor == motor and result.raw_code is not None) or \
            expected is Outcome.UNKNOWN
        record = machine.journal.get("v1")
        assert record is not None and record.outcome == expected.value
        assert ("v1" in {r.vend_id for r in machine.pending()}) == (expected is Outcome.UNKNOWN)
        again = machine.dispense(motor, "v1")
        assert again.replayed and again.outcome is expected
    turned = [v.motor for v in sim.vends]  # type: ignore[attr-defined]
    assert turned.count(motor) <= 1
    if expected is Outcome.DELIVERED:
        assert turned == [motor] and sim.inventory[motor] == 4  # type: ignore[attr-defined]
        if profile.supports("drop_sensor") and profile.family == "board101":
            assert result.drop_time_ms and result.drop_time_ms > 0


@pytest.mark.parametrize("profile_name", sorted(OUTCOMES))
def test_silent_board_fails_with_a_hint_and_nothing_is_vended(profile_name: str,
                                                               tmp_path: Path) -> None:
    # FA FB and 101 find out at open (probe); the Easivend probe is passive (a request would
    # erase the board's memory of the last vend), so its first CHECK before the vend does.
    profile = fast_profile(profile_name)
    sim = simulator(profile, silent=True)
    journal = tmp_path / "j.sqlite"
    with pytest.raises(NoResponseError) as info:
        with Machine(profile, f"sim://{profile_name}", simulator=sim,
                     journal=journal) as machine:
            machine.dispense(2, "v")
    text = str(info.value)
    assert f"sim://{profile_name}" in text and "Hint" in text
    assert sim.vends == []  # type: ignore[attr-defined]
    with VendJournal(journal) as j:
        record = j.get("v")
    assert record is None or record.state is VendState.ABORTED


@pytest.mark.parametrize("profile_name", sorted(OUTCOMES))
def test_board_silent_before_the_send_aborts_and_can_be_retried(profile_name: str) -> None:
    profile = fast_profile(profile_name)
    sim = simulator(profile)
    with Machine(profile, f"sim://{profile_name}", simulator=sim) as machine:
        sim.set_fault("silent", True)
        try:
            first = machine.dispense(3, "v")
        except NoResponseError:
            first = None
        sim.set_fault("silent", False)
        record = machine.journal.get("v")
        assert record is not None
        if first is None:
            # Nothing was written: the vend may be tried again and then happens once.
            assert record.state.value == "aborted"
            second = machine.dispense(3, "v")
            assert second.outcome is Outcome.DELIVERED and not second.replayed
        else:
            # The command went out before the silence: never sent again.
            assert first.outcome is Outcome.UNKNOWN
            assert machine.dispense(3, "v").replayed
    assert [v.motor for v in sim.vends].count(3) <= 1  # type: ignore[attr-defined]


def test_unknown_slot_never_reaches_the_wire() -> None:
    profile = fast_profile("board101")
    sim = simulator(profile)
    with Machine(profile, "sim://board101", simulator=sim) as machine:
        with pytest.raises(ConfigurationError, match="not on board profile"):
            machine.dispense("9-9")
        assert machine.history() == []
    assert sim.vends == []  # type: ignore[attr-defined]


@pytest.mark.parametrize("profile_name", sorted(OUTCOMES))
def test_status_and_selftest(profile_name: str) -> None:
    profile = fast_profile(profile_name)
    with Machine(profile, f"sim://{profile_name}", simulator=simulator(profile)) as machine:
        status = machine.status()
        assert status["ok"] is True and status["unresolved_vends"] == 0
        assert machine.selftest()["ok"] is True
        if profile.supports("door"):
            assert machine.door() == ("open" if status["door_open"] else "closed")
            assert machine.door_open() is status["door_open"]
        else:
            with pytest.raises(ConfigurationError):
                machine.door()
        if profile.supports("temperature"):
            assert machine.temperature() == status["temperature_c"]


# -- over a real pty ---------------------------------------------------------------------------


@pytest.fixture(params=sorted(OUTCOMES))
def on_pty(request: pytest.FixtureRequest) -> Iterator[tuple[BoardProfile, Simulator, str]]:
    profile = fast_profile(request.param)
    sim = simulator(profile, inventory=2)
    with SimulatorOnPty(sim) as served:
        yield profile, sim, served.port


def test_over_a_pty_inventory_runs_out_and_vend_ids_hold(
        on_pty: tuple[BoardProfile, Simulator, str], tmp_path: Path) -> None:
    profile, sim, port = on_pty
    journal = tmp_path / "j.sqlite"
    outcomes = []
    with Machine(profile, port, journal=journal) as machine:
        for n in range(3):
            outcomes.append(machine.dispense("1-3" if profile.name != "board101" else "1-2",
                                             f"v{n}").outcome)
    with Machine(profile, port, journal=journal) as machine:
        replayed = [machine.dispense(3, f"v{n}") for n in range(3)]
    assert outcomes[:2] == [Outcome.DELIVERED, Outcome.DELIVERED]
    assert outcomes[2] in (Outcome.EMPTY, Outcome.NOT_DROPPED, Outcome.JAMMED)
    assert all(r.replayed for r in replayed)
    assert [r.outcome for r in replayed] == outcomes
    assert [v.motor for v in sim.vends if v.motor == 3 and v.dropped] == [3, 3]  # type: ignore[attr-defined]
    assert sim.inventory[3] == 0  # type: ignore[attr-defined]


def test_lift_machine_by_floor_label(tmp_path: Path) -> None:
    profile = fast_profile("fafb-lift")
    sim = simulator(profile)
    with Machine(profile, "sim://fafb-lift", simulator=sim,
                 journal=tmp_path / "j.sqlite") as machine:
        result = machine.dispense("L2-03", "lift-1")
        assert result.outcome is Outcome.DELIVERED
        assert (result.slot, result.slot_label, result.motor) == ("L2-03", "L2-03", 23)
        assert machine.dispense(23, "lift-1").replayed  # the board number names it too
        assert machine.temperature() == machine.status()["temperature_c"]
    assert [v.motor for v in sim.vends] == [23]  # type: ignore[attr-defined]
