"""Every board family through a fault-injecting line: each vend ends with one outcome, the
motor turned at most once, and the outcome never contradicts the board: ``delivered`` only
when a product really left, a definite failure (refunded) never when one did.

``VENDHW_FAULT_VENDS=2000`` runs the long count (each vend is several polls of the board).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from faults import FaultPlan, faulty

from vendhw import sim as sim_registry
from vendhw.devices.boards import BoardProfile, Outcome, driver_class, load_profile
from vendhw.errors import VendhwError
from vendhw.machine import Machine
from vendhw.machine.journal import VendJournal, VendState

VENDS = int(os.environ.get("VENDHW_FAULT_VENDS", "25"))
FAULT_RATE = 0.06
FAST = {"poll_period": 0.01, "motor_run_limit": 0.4, "drop_sensor_wait": 0.05,
        "response_timeout": 0.03}
PROFILES = ("fafb-xy", "fafb-lift", "board101", "easivend-column")
REFUNDED = {o for o in Outcome if o not in (Outcome.DELIVERED, Outcome.UNKNOWN)}

REPORTS: dict[str, dict[str, int]] = {}


def fast_profile(name: str) -> BoardProfile:
    profile = load_profile(name).replace(timing=FAST)
    if profile.option("curtain_settle") is not None:
        profile = profile.replace(protocol={"curtain_settle": 0.01})
    return profile


@pytest.mark.parametrize("name", PROFILES)
def test_every_vend_has_one_truthful_outcome_through_a_faulty_line(name: str,
                                                                    tmp_path: Path) -> None:
    seed = int(os.environ.get("VENDHW_FAULT_SEED", "20261205"))
    profile = fast_profile(name)
    sim = sim_registry.create(profile.name, profile=profile, motor_time=0.005,
                              motor_limit=0.3, reset_time=0.05, inventory=10**6)
    plan = FaultPlan(seed, FAULT_RATE)
    plan.enabled = False
    board = driver_class(profile.family)(profile, faulty(plan)(sim))
    board.probe()
    journal = VendJournal(tmp_path / "vends.db")
    machine = Machine.from_board(board, journal=journal)
    slots = profile.slots()
    outcomes: Counter[str] = Counter()
    plan.enabled = True
    calls: list[tuple[str, int, object]] = []  # vend id, sim.vends length before, result
    try:
        for i in range(VENDS):
            before = len(sim.vends)
            vend_id = f"v{i}"
            try:
                result: object = machine.dispense(slots[i % len(slots)], vend_id=vend_id)
            except VendhwError as exc:
                record = machine.journal.get(vend_id)
                # Raised only when nothing reached the board: the vend is aborted.
                assert record is not None and record.state is VendState.ABORTED, (exc, record)
                result = exc
            else:
                again = machine.dispense(slots[i % len(slots)], vend_id=vend_id)
                assert again.replayed and again.outcome is result.outcome  # kept, not redone
            calls.append((vend_id, before, result))
        plan.enabled = False
        machine.status()  # a last exchange, fault-free: a vend still running reports in
    finally:
        plan.enabled = False
        machine.close()
    check_outcomes(calls, journal, sim, outcomes)
    REPORTS[name] = {"vends": VENDS, "faults": sum(plan.counts.values()), **outcomes,
                     **{f"fault:{k}": v for k, v in plan.counts.items()}}
    print(name, REPORTS[name])
    assert outcomes["delivered"] > 0


def check_outcomes(calls: list[tuple[str, int, object]], journal: VendJournal, sim: Any,
                   outcomes: Counter[str]) -> None:
    """Each vend: the motor turned at most once, ``delivered`` only when a product left, a
    refunded outcome never when one did, an error only when nothing turned."""
    for n, (vend_id, before, result) in enumerate(calls):
        rec = journal.get(vend_id)
        assert rec is not None
        # Motor turns belong to a vend by its sequence number where the protocol has one
        # (a late one can land during the next call), by the call's window otherwise.
        window_end = calls[n + 1][1] if n + 1 < len(calls) and rec.seq is None else None
        turned = [v for v in sim.vends[before:window_end]
                  if v.motor == rec.motor and (rec.seq is None or v.seq == rec.seq)]
        if rec.seq is not None:
            reuse = next((b for vid, b, _ in calls[n + 1:]
                          if journal.get(vid) is not None and journal.get(vid).seq == rec.seq),
                         None)  # type: ignore[union-attr]
            if reuse is not None:
                turned = [v for v in sim.vends[before:reuse]
                          if v.motor == rec.motor and v.seq == rec.seq]
        dropped = any(v.dropped for v in turned)
        if isinstance(result, VendhwError):
            assert not turned, f"{vend_id}: the motor turned for a vend reported not sent"
            outcomes["not sent"] += 1
            continue
        assert len(turned) <= 1, f"vend {vend_id} turned the motor {len(turned)} times"
        outcome = result.outcome  # type: ignore[attr-defined]
        if outcome is Outcome.DELIVERED:
            assert dropped, f"{vend_id} reported delivered, nothing left the slot"
        if outcome in REFUNDED:
            assert not dropped, f"{vend_id} refunded ({outcome}) but delivered"
        outcomes[outcome.value] += 1


UNPLUG_RATE = 0.02
"""Chance per board reply that the adapter is pulled in the middle of it (then plugged back)."""


@pytest.mark.parametrize("name", PROFILES)
def test_every_vend_has_one_truthful_outcome_through_unplugs_mid_read(
        name: str, tmp_path: Path) -> None:
    """The port unplugged mid-read (faults.py) and plugged back before the next vend, with
    the line faults above: the Machine goes offline instead of failing, ``reopen()`` brings
    it back on a new transport, and every vend still has one truthful outcome (a vend cut
    by the unplug is ``unknown`` or what the board answered; never sent twice)."""
    seed = int(os.environ.get("VENDHW_FAULT_SEED", "20261205"))
    profile = fast_profile(name)
    sim = sim_registry.create(profile.name, profile=profile, motor_time=0.005,
                              motor_limit=0.3, reset_time=0.05, inventory=10**6)
    plan = FaultPlan(seed, FAULT_RATE / 2)
    plan.enabled = False

    def plug() -> Any:
        board = driver_class(profile.family)(profile, faulty(plan)(sim))
        board.probe()
        return board

    journal = VendJournal(tmp_path / "vends.db")
    machine = Machine.from_board(plug(), journal=journal, opener=plug)
    offline: list[bool] = []
    machine.state_listeners.append(lambda online, why: offline.append(online))
    slots = profile.slots()
    outcomes: Counter[str] = Counter()
    calls: list[tuple[str, int, object]] = []
    plan.enabled = True
    plan.unplug_rate = UNPLUG_RATE
    replugs = 0
    try:
        for i in range(VENDS):
            while not machine.online:
                try:
                    machine.reopen()
                    replugs += 1
                except VendhwError:
                    pass  # unplugged again while plugging back: try again
            before = len(sim.vends)
            vend_id = f"v{i}"
            try:
                result: object = machine.dispense(slots[i % len(slots)], vend_id=vend_id)
            except VendhwError as exc:
                record = machine.journal.get(vend_id)
                assert record is not None and record.state is VendState.ABORTED, (exc, record)
                result = exc
            calls.append((vend_id, before, result))
        plan.enabled = False
        plan.unplug_rate = 0.0
        plan.unplug_due = False
        while not machine.online:
            machine.reopen()
            replugs += 1
        machine.status()  # a last exchange: a vend still running reports in
        for vend_id, _, result in calls:  # nothing in flight is ever sent again
            if not isinstance(result, VendhwError):
                again = machine.dispense(slots[int(vend_id[1:]) % len(slots)], vend_id=vend_id)
                assert again.replayed and again.outcome is result.outcome  # type: ignore[attr-defined]
    finally:
        plan.enabled = False
        machine.close()
    check_outcomes(calls, journal, sim, outcomes)
    report = {"vends": VENDS, "unplugs": plan.counts["unplug"], "replugs": replugs,
              **outcomes}
    print(name, "unplug", report)
    assert plan.counts["unplug"] > 0 and replugs > 0
    assert offline.count(False) == offline.count(True) == replugs  # one per change
    assert outcomes["delivered"] > 0
