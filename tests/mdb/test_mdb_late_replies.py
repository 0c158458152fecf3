"""MDB replies do not name their command either: a reply that comes after the host gave up
on it is read by the host's *next* command. During a start on a bad line (an adapter
plugged back) that is a SETUP, TUBE STATUS or IDENTIFICATION reply, and the next command
is often a POLL. Read as POLL data, a 33-byte IDENTIFICATION made up coins: before the fix
the unplug run with faults during starts credited 130 more than the changer took (and the
ACK sent for it told the changer to forget its real data). A POLL reply carries 16 data
bytes at most, so a longer one is skipped."""

from __future__ import annotations

from faults import fates, scripted

from vendhw.devices.cash import CashEvent, CashEventKind
from vendhw.devices.mdb import MdbCoinChanger, MdbLink
from vendhw.errors import NoResponseError
from vendhw.sim.mdb import MdbChangerSimulator


def test_a_late_identification_is_not_read_as_the_held_poll_data_of_the_next_start() -> None:
    sim = MdbChangerSimulator()
    first = MdbCoinChanger(MdbLink(scripted(sim, lambda reply: None), response_timeout=0.02))
    first.start()
    first.enable()
    sim.insert_coin(3)  # 0.50, never polled: the adapter went away
    checkpoint = first.checkpoint()
    # Plugged back on a bad line: the next start's IDENTIFICATION reply comes late, its start
    # fails; the one after it reads the changer's held data first.
    line = scripted(sim, fates("late", match=b"SIM-CHANGER"))
    cut = MdbCoinChanger(MdbLink(line, response_timeout=0.02))
    cut.restore(checkpoint)
    seen: list[CashEvent] = []
    try:
        cut.start(seen.append)
    except NoResponseError:
        pass
    again = MdbCoinChanger(MdbLink(line, response_timeout=0.02))
    again.restore(cut.checkpoint())
    again.start(seen.append)
    credits = [e for e in seen if e.kind is CashEventKind.CREDIT]
    assert sum(e.value for e in credits) == 50 and len({e.event_id for e in credits}) == 1
    assert all(e.kind in (CashEventKind.CREDIT, CashEventKind.FAULT) for e in seen)


def test_a_reply_too_long_for_a_poll_is_skipped_and_the_polls_own_read() -> None:
    sim = MdbChangerSimulator()
    line = scripted(sim, lambda reply: None)
    dev = MdbCoinChanger(MdbLink(line, response_timeout=0.02))
    dev.start()
    dev.enable()
    line.plan.late.append(sim._data(bytes(range(1, 24))))  # a SETUP-sized late reply
    sim.insert_coin(3)
    events = dev.poll()
    assert [(e.kind, e.value) for e in events] == [(CashEventKind.CREDIT, 50)]
