"""No cash protocol counts a credit twice (or loses one) when the controller restarts, whatever
the integrator passes: the cash journal keeps each device's checkpoint with the events it
journals, and a CashAcceptor on that journal resumes every device from it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from cashrigs import CASH_PROTOCOLS, CashRig, make_rig

from vendhw.devices.cash import CashEvent, CashEventKind
from vendhw.machine.cash import CashAcceptor, CashJournal

MAX_POLLS = 400
"""Polls a rig may take to bring one coin or note through (a bound, not a timing)."""


class PowerCut(BaseException):
    """The controller dies here (nothing after this line of the host runs)."""


def host(rig: CashRig, journal: CashJournal) -> CashAcceptor:
    device = rig.open_host()
    acceptor = CashAcceptor([device], journal)  # resumes the device from the journal
    device.start()
    acceptor.enable()
    return acceptor


def settle(acceptor: CashAcceptor, rig: CashRig, until: Callable[[], bool]) -> None:
    for _ in range(MAX_POLLS):
        acceptor.poll_once()
        if until():
            return
        rig.sim.advance(rig.sim.now + 0.05) if hasattr(rig.sim, "advance") else None
    raise AssertionError(f"{rig.protocol}: not settled after {MAX_POLLS} polls")


def insert(acceptor: CashAcceptor, rig: CashRig, n: int) -> None:
    settle(acceptor, rig, rig.ready)
    rig.insert(n)


@pytest.mark.parametrize("protocol", CASH_PROTOCOLS)
@pytest.mark.parametrize("cut", ["after_commit", "before_commit"])
def test_a_restart_counts_each_credit_once(protocol: str, cut: str, tmp_path: Path) -> None:
    rig = make_rig(protocol)
    journal = CashJournal(tmp_path / "cash.db")
    first = host(rig, journal)
    insert(first, rig, 0)
    record = journal.record

    def dying(event: CashEvent) -> bool:
        if event.kind is CashEventKind.CREDIT:
            if cut == "after_commit":
                record(event)
            raise PowerCut
        return record(event)

    journal.record = dying  # type: ignore[method-assign]
    with pytest.raises(PowerCut):
        settle(first, rig, lambda: False)
    journal.close()  # the process is gone; the device keeps its state

    journal = CashJournal(tmp_path / "cash.db")
    second = host(rig, journal)
    value = rig.values[0]
    # MDB ACKs POLL data at once and journals right after (a journal cannot commit within
    # the peripheral's 5 ms ACK window): a cut between the ACK and the commit loses that
    # credit, never doubles it (docs/conformance-mdb.md, "crash window").
    kept = 0 if protocol.startswith("mdb") and cut == "before_commit" else value
    settle(second, rig, lambda: journal.credited() >= kept and rig.ready())
    for _ in range(20):  # a repeat would arrive now
        second.poll_once()
    assert journal.credited() == kept
    insert(second, rig, 0)  # the same denomination again: a new credit, not a repeat
    settle(second, rig, lambda: journal.credited() >= kept + value)
    for _ in range(20):
        second.poll_once()
    assert journal.credited() == kept + value
    journal.close()


@pytest.mark.parametrize("protocol", CASH_PROTOCOLS)
def test_every_cash_driver_round_trips_its_checkpoint(protocol: str) -> None:
    """``checkpoint()``/``restore()`` are part of CashDevice: every protocol's driver has
    state that names its events, and a fresh driver restored from it reports the same."""
    rig = make_rig(protocol)
    device = rig.open_host()
    device.start()
    saved = device.checkpoint()
    assert saved, f"{protocol}: no checkpoint, so a restart could count a credit twice"
    fresh = rig.open_host()
    fresh.restore(saved)
    assert fresh.checkpoint() == saved
    device.close()
    fresh.close()
