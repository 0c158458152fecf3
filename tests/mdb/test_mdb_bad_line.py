"""An MDB host starting on a bad line (an adapter plugged back while the line misbehaves).

MDB replies do not name their command, and their check is an 8-bit sum. Three ways a start
on a bad line made up money before the fixes (the unplug runs with faults during starts):

* a reply that came after the host gave up on it is read by the host's *next* command:
  a 33-byte IDENTIFICATION read as POLL data made up coins (130 more than the changer took,
  and the ACK sent for it told the changer to forget its real data). A POLL reply carries
  16 data bytes at most, so a longer one is skipped;
* a reply with one bit flipped can still sum right from its second byte on (a flip that
  adds what the first byte was, 1 for a bill validator's SETUP of level 1): the host took
  that fragment for the reply. A reply starts with its first byte: garbage first is a
  damaged reply (RET);
* a SETUP reply that lost a zero byte sums right and reads as another scaling: bills were
  credited at 12,801,000 instead of 2,000. SETUP values the whole session: one other than
  the device gave before (kept in the checkpoint) is asked until two replies in a row agree.
"""

from __future__ import annotations

import pytest
from faults import fates, scripted

from vendhw.devices.cash import CashEvent, CashEventKind
from vendhw.devices.engine import replay
from vendhw.devices.mdb import BillCore, MdbCoinChanger, MdbLink, Request, parse_bill_setup
from vendhw.errors import NoResponseError, UnexpectedReplyError
from vendhw.framing.mdb import Address, BillCommand, MdbFramer
from vendhw.sim.mdb import MdbBillSimulator, MdbChangerSimulator

BILLS = (500, 1000, 2000, 5000)


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


def _flipped(wire: bytes, at: int, bit: int) -> bytes:
    damaged = bytearray(wire)
    damaged[at] ^= 1 << bit
    return bytes(damaged)


def test_a_reply_whose_tail_sums_right_after_a_flip_is_asked_again_not_taken() -> None:
    sim = MdbBillSimulator()
    wire = sim._command(BillCommand.SETUP, b"")
    damaged = _flipped(wire, 7, 0)  # stacker capacity 0x01F4 -> 0x01F5: +1, the level's 1
    link = MdbLink(scripted(sim, fates(damaged, match=wire)), response_timeout=0.02)
    reply = link.transact(Address.BILL_VALIDATOR, BillCommand.SETUP)
    assert reply is not None and parse_bill_setup(reply).bill_values[:4] == BILLS


def test_a_setup_other_than_the_one_the_device_gave_before_is_asked_until_two_agree() -> None:
    wire = MdbBillSimulator()._command(BillCommand.SETUP, b"")
    setup = bytes(MdbFramer(wire="9bit").deframer("device").feed(wire)[0]["data"])
    lost_zero = setup[:3] + setup[4:]  # scaling 0x0064 read as 0x6402: sums the same
    first = BillCore()
    replay(first.read_setup_op(), [setup])
    checkpoint = first.checkpoint()  # the journal keeps what the device gave
    core = BillCore()
    core.restore(checkpoint)
    _, sent = replay(core.read_setup_op(), [lost_zero, setup, setup])
    assert core.setup is not None and core.setup.bill_values[:4] == BILLS
    assert sent == [Request(BillCommand.SETUP)] * 3
    same = BillCore()
    same.restore(checkpoint)
    _, sent = replay(same.read_setup_op(), [setup])
    assert sent == [Request(BillCommand.SETUP)]  # the usual case: asked once, as ever
    doubtful = BillCore()
    doubtful.restore(checkpoint)
    with pytest.raises(UnexpectedReplyError, match="no two in a row"):
        replay(doubtful.read_setup_op(), [lost_zero, setup, lost_zero])
