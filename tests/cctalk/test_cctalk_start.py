"""A ccTalk start on a bad line (an adapter plugged back while the line still misbehaves):
the channel table it reads decides what every later credit is worth.

ccTalk replies do not name their command. Before the fix a coin id read that went
unanswered was sent once only and its channel dropped; its reply, arriving late, was read as
the *next* channel's id, so that channel was worth the wrong amount (a 0.50 coin credited
0.20, or the reverse) and the dropped channel's waiting coins were credited 0, all without a
flag (the unplug runs with ``VENDHW_UNPLUG_LINE_FAULTS=0.04``: 360 to 5,500 per 2,000 polls).
"""

from __future__ import annotations

from typing import Any

from faults import Fate, fates, scripted

from vendhw.devices.cash import CashEventKind
from vendhw.devices.cctalk import CcTalkBillValidator, CcTalkBus, CcTalkCoinAcceptor
from vendhw.framing.cctalk import Header
from vendhw.sim.cctalk import CcTalkBillSimulator, CcTalkCoinSimulator
from vendhw.transport import SimTransport

K = CashEventKind
COINS = {1: 5, 2: 10, 3: 20, 4: 50, 5: 100, 6: 200}


def bad_line(sim: Any, fate: Fate) -> CcTalkBus:
    return CcTalkBus(scripted(sim, fate), reply_timeout=0.02)


def test_a_late_coin_id_is_not_read_as_the_next_channels() -> None:
    sim = CcTalkCoinSimulator(reply_delay=0)
    dev = CcTalkCoinAcceptor(bad_line(sim, fates("late", match=b"EU020A")))
    dev.start()
    assert dev.values == COINS and dev.unread == set()
    dev.enable()
    sim.insert_coin(4)
    assert [(e.kind, e.channel, e.value) for e in dev.poll()] == [(K.CREDIT, 4, 50)]


def test_an_unanswered_coin_id_leaves_its_channel_off_and_its_waiting_coin_to_an_operator(
        ) -> None:
    """Every resend of channel 3's id unanswered, the last reply late: the line is taken
    back in step (a SIMPLE POLL whose ACK carries no data) before channel 4 is asked. A coin
    on channel 3 that waited in the buffer from before (the previous driver had it enabled)
    cannot be valued: it goes to an operator, never credited as 0 or as another coin."""
    sim = CcTalkCoinSimulator(reply_delay=0)
    before = CcTalkCoinAcceptor(CcTalkBus(SimTransport(sim), reply_timeout=0.02))
    before.start()
    before.enable()
    sim.insert_coin(3)
    sim.insert_coin(4)  # both wait in the buffer: the adapter was pulled before a poll
    dev = CcTalkCoinAcceptor(bad_line(sim, fates("drop", "drop", "late", match=b"EU020A")))
    dev.restore(before.checkpoint())
    dev.start()
    assert dev.values == {c: v for c, v in COINS.items() if c != 3}
    dev.enable()
    assert not sim.channel_enabled(3)  # no value: not taken any more
    events = dev.poll()
    assert [(e.kind, e.channel) for e in events] == [(K.FAULT, 3), (K.CREDIT, 4)]
    assert events[0].detail["needs_review"] and events[0].value == 200  # highest known
    assert events[1].value == 50 and dev.unread == {3}


def test_an_unanswered_scaling_factor_leaves_the_bill_unvalued_not_misvalued() -> None:
    sim = CcTalkBillSimulator(reply_delay=0)
    scaling = bytes((3, CcTalkBillSimulator.address, 0, 100, 0, 2))  # EU: 100, 2 decimals
    dev = CcTalkBillValidator(bad_line(sim, fates("drop", "drop", "drop", match=scaling)))
    dev.start()
    assert 1 in dev.unread and 1 not in dev.values
    assert dev.values == {2: 1000, 3: 2000, 4: 5000}  # asked again for channel 2


def test_a_device_that_naks_an_id_is_not_taken_for_a_bad_line() -> None:
    sim = CcTalkCoinSimulator(reply_delay=0)
    original = sim.handle

    def handle(header: int, data: bytes) -> Any:
        if header == Header.REQUEST_COIN_ID and data == b"\x06":
            return Header.NAK, b""
        return original(header, data)

    sim.handle = handle  # type: ignore[method-assign]
    dev = CcTalkCoinAcceptor(CcTalkBus(SimTransport(sim), reply_timeout=0.02))
    dev.start()
    assert 6 not in dev.values and dev.unread == set()


def test_a_restart_whose_serial_read_goes_unanswered_names_a_repeated_coin_as_before() -> None:
    """The coin was journaled (with the checkpoint from just before it) and the controller
    died before the next checkpoint: the restarted host reads the coin again. Its serial
    number read lost on the line, it must still give the coin the id it had, or the journal
    counts it twice."""
    sim = CcTalkCoinSimulator(reply_delay=0)
    before = CcTalkCoinAcceptor(CcTalkBus(SimTransport(sim), reply_timeout=0.02))
    before.start()
    before.enable()
    sim.insert_coin(4)
    saved: list[dict[str, Any]] = []
    first = before.poll(lambda event: saved.append(before.checkpoint()))
    serial = bytes((3, CcTalkCoinSimulator.address, 0)) + sim.serial.to_bytes(3, "little")
    dev = CcTalkCoinAcceptor(bad_line(sim, fates("drop", "drop", "drop", match=serial)))
    dev.restore(saved[0])  # the journal's checkpoint: from before the coin
    dev.start()
    assert dev.identity.serial is None  # the read was lost
    again = dev.poll()
    assert [e.event_id for e in again] == [e.event_id for e in first]
