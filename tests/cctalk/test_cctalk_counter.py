"""The event counter: diff, 255 -> 1 wrap, 0 = reset, lost events, never twice, never lost."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vendhw.devices.cash import CashEvent, CashEventKind
from vendhw.devices.cctalk import (
    CcTalkBus,
    CcTalkCoinAcceptor,
    CounterState,
    counter_advance,
    counter_distance,
    parse_value_id,
    read_buffer,
)
from vendhw.errors import ConfigurationError, UnexpectedReplyError, VendhwError
from vendhw.sim.cctalk import CcTalkCoinSimulator
from vendhw.transport import SimTransport

K = CashEventKind


def acceptor(**options: Any) -> tuple[CcTalkCoinAcceptor, CcTalkCoinSimulator]:
    sim = CcTalkCoinSimulator(reply_delay=0, **options)
    dev = CcTalkCoinAcceptor(CcTalkBus(SimTransport(sim), reply_timeout=0.05))
    dev.start()
    dev.enable()
    return dev, sim


@pytest.mark.parametrize(("last", "counter", "expected"), [
    (0, 0, 0), (0, 5, 5), (10, 10, 0), (10, 12, 2), (255, 1, 1), (250, 3, 8), (1, 255, 254),
    (2, 1, 254),
])
def test_counter_distance(last: int, counter: int, expected: int) -> None:
    assert counter_distance(last, counter) == expected


@given(st.integers(0, 255), st.integers(0, 254))
def test_advance_inverts_distance_and_never_reaches_zero(last: int, steps: int) -> None:
    after = counter_advance(last, steps)
    assert 0 < after <= 255 or (steps == 0 and after == last)
    if steps:
        assert counter_distance(last, after) == steps


def test_read_buffer_orders_oldest_first_and_counts_lost() -> None:
    state = CounterState(last=3)
    data = bytes([10, 6, 1, 5, 1, 4, 1, 3, 1, 2, 1])  # newest first: coins 6, 5, 4, 3, 2
    read = read_buffer(state, data)
    assert read.lost == 2 and read.suspicious and not read.reset
    assert read.results == ((2, 1), (3, 1), (4, 1), (5, 1), (6, 1))
    assert read_buffer(CounterState(last=10), data).results == ()


def test_read_buffer_zero_means_reset_only_after_events() -> None:
    assert read_buffer(CounterState(last=7), bytes(11)).reset
    assert not read_buffer(CounterState(last=0), bytes(11)).reset
    with pytest.raises(ConfigurationError):
        read_buffer(CounterState(), bytes(11))  # no baseline yet
    with pytest.raises(UnexpectedReplyError):
        read_buffer(CounterState(last=0), b"")


@pytest.mark.parametrize(("text", "country", "value"), [
    ("EU200A", "EU", 200), ("EU005A", "EU", 5), ("GB050B", "GB", 50),
    # Part 3 v4.7 §2.1: "." is a decimal point in the id's own unit (cents for a coin):
    # ".50" is half a cent and "2.5" 2.5 centimes, which no host can credit.
    ("EU.50A", "EU", None), ("CH2.5A", "CH", None), ("CH5m0A", "CH", None),
    ("EU1.0A", "EU", 1), ("BN0.10A", "BN", 10), ("EU02.5A", "EU", 250),
    ("EU2K5A", "EU", 2500), ("EU0005A", "EU", 500), ("EU0050A", "EU", 5000),
    ("JP0100A", "JP", 100), ("TK001A", "TK", None), ("......", "", None), ("EU", "", None),
    ("EUxyzA", "EU", None),
])
def test_value_ids(text: str, country: str, value: int | None) -> None:
    assert parse_value_id(text) == (country, value)


def test_wrap_255_to_1_credits_every_coin_once() -> None:
    dev, sim = acceptor()
    sim.buffer.counter = 252  # as if 252 events had happened since power-up
    dev.counter.last = 252
    for channel in (1, 2, 3, 4, 5):  # counts 253, 254, 255, 1, 2
        sim.insert_coin(channel)
    events = dev.poll()
    assert [(e.kind, e.channel) for e in events] == [(K.CREDIT, c) for c in (1, 2, 3, 4, 5)]
    assert dev.counter.last == 2 and sim.buffer.counter == 2
    assert dev.poll() == []


def test_lost_events_are_reported_with_their_number() -> None:
    dev, sim = acceptor()
    for _ in range(8):
        sim.insert_coin(6)
    events = dev.poll()
    assert events[0].kind is K.FAULT and events[0].detail["lost"] == 3
    assert "3 event(s) lost" in (events[0].reason or "")
    assert [e.value for e in events[1:]] == [200] * 5
    assert len({e.event_id for e in events}) == 6


def test_lost_events_carry_the_value_at_risk_for_an_operator() -> None:
    # Regression (long line-fault run): the fault had no value, so the accounting could not
    # count the lost coins as reported. Each lost event was at most the highest enabled coin.
    dev, sim = acceptor()
    for _ in range(8):
        sim.insert_coin(1)
    fault = dev.poll()[0]
    assert fault.kind is K.FAULT and fault.detail["needs_review"]
    assert fault.value == 3 * max(dev.values.values()) and fault.currency == dev.currency
    assert fault.detail["value_is_upper_bound"]


def test_reset_is_reported_and_acceptance_restored() -> None:
    dev, sim = acceptor()
    sim.insert_coin(5)
    assert [e.kind for e in dev.poll()] == [K.CREDIT]
    sim.set_fault("reset")
    assert not sim.master_enabled  # power-up default
    events = dev.poll()
    assert [e.kind for e in events] == [K.DEVICE_RESET]
    assert sim.master_enabled and sim.mask  # the host re-applied its enable
    sim.insert_coin(5)
    (credit,) = dev.poll()
    assert credit.kind is K.CREDIT and credit.event_id.endswith("/1")
    assert credit.event_id.split("/")[1] != events[0].event_id.split("/")[1]  # new session


def test_reset_followed_by_events_is_not_mistaken_for_lost_events() -> None:
    dev, sim = acceptor()
    for channel in (1, 2, 3):
        sim.insert_coin(channel)
    dev.poll()
    sim.set_fault("reset")
    sim.insert_coin(4)  # inhibited after the reset: counter 1, less than the host's 3
    events = dev.poll()
    assert [e.kind for e in events] == [K.DEVICE_RESET, K.REJECTED]
    assert events[1].reason == "inhibited coin"


def test_reset_without_events_is_caught_by_the_master_inhibit() -> None:
    dev, sim = acceptor()
    sim.set_fault("reset")  # counter was 0 and stays 0: invisible to the counter
    assert dev.poll() == []
    sim.insert_coin(6)  # refused: the restarted device is inhibited
    events = dev.poll()
    assert [e.kind for e in events] == [K.REJECTED, K.DEVICE_RESET]
    assert sim.master_enabled
    sim.insert_coin(6)
    assert [(e.kind, e.value) for e in dev.poll()] == [(K.CREDIT, 200)]


def test_failing_sink_gets_the_same_events_again() -> None:
    dev, sim = acceptor()
    for channel in (1, 2, 3):
        sim.insert_coin(channel)
    seen: list[CashEvent] = []

    def sink(event: CashEvent) -> None:
        if event.channel == 2 and not any(e.channel == 2 for e in seen):
            seen.append(event)
            raise OSError("journal disk full")
        seen.append(event)

    with pytest.raises(OSError):
        dev.poll(sink)
    assert dev.counter.last == 1  # only the first coin was committed
    events = dev.poll(sink)
    assert [e.channel for e in events] == [2, 3]
    assert seen[1].event_id == seen[2].event_id  # the repeat carries the same id
    assert [e.channel for e in seen] == [1, 2, 2, 3]


def test_resume_from_checkpoint_recovers_buffered_credits() -> None:
    dev, sim = acceptor()
    sim.insert_coin(1)
    dev.poll()
    checkpoint = dev.checkpoint()
    sim.insert_coin(6)  # arrives while the host is down
    again = CcTalkCoinAcceptor(CcTalkBus(SimTransport(sim), reply_timeout=0.05),
                               resume=checkpoint)
    again.start()
    (credit,) = again.poll()
    assert credit.value == 200
    assert credit.event_id.split("/")[1] == checkpoint["session"]
    fresh = CcTalkCoinAcceptor(CcTalkBus(SimTransport(sim), reply_timeout=0.05))
    fresh.start()
    assert fresh.poll() == []  # without a checkpoint, old buffer content is not re-credited


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 9), st.booleans(), st.booleans()), min_size=1,
                max_size=25))
def test_credits_never_doubled_never_silently_lost(
        script: list[tuple[int, bool, bool]]) -> None:
    """Each step: maybe a power cut, then N coins, then a poll whose sink may fail once.

    Every coin ends up credited exactly once, counted in a 'lost' fault, or refused by an
    inhibit (returned to the customer, reported as rejected); a failing sink only delays
    events; every reset the counter can show is reported.
    """
    dev, sim = acceptor()
    journal: dict[str, CashEvent] = {}
    inserted = 0
    visible_resets = 0
    events_since_reset = False
    fail_next = False

    def sink(event: CashEvent) -> None:
        nonlocal fail_next
        if fail_next:
            fail_next = False
            raise OSError("journal down")
        journal.setdefault(event.event_id, event)

    for count, flaky, reset in script:
        if reset:
            dev.poll(sink)
            sim.set_fault("reset")
            visible_resets += events_since_reset
            events_since_reset = False
            dev.poll(sink)
        for _ in range(count):
            sim.insert_coin(1 + inserted % 6)
            inserted += 1
        events_since_reset = events_since_reset or count > 0
        fail_next = flaky
        try:
            dev.poll(sink)
        except OSError:
            dev.poll(sink)
        fail_next = False  # a failure armed for a poll with nothing to deliver
    dev.poll(sink)
    kinds = [e.kind for e in journal.values()]
    lost = sum(e.detail.get("lost", 0) for e in journal.values() if e.kind is K.FAULT)
    refused = sum(1 for e in journal.values()
                  if e.kind is K.REJECTED and e.reason == "inhibited coin")
    assert kinds.count(K.CREDIT) + lost + refused == inserted
    assert lost == sum(max(0, count - 5) for count, _, _ in script)
    assert visible_resets <= kinds.count(K.DEVICE_RESET) <= sum(r for _, _, r in script)
    assert sim.credited == [e.channel for e in journal.values() if e.kind is K.CREDIT] or lost


def test_short_buffer_reply_is_an_error_not_lost_events() -> None:
    with pytest.raises(UnexpectedReplyError, match="3 are new"):
        read_buffer(CounterState(last=4), bytes([7, 1, 1, 2, 1]))


class _Babbler(CcTalkCoinSimulator):
    """A coin acceptor whose replies to the buffer read are random (but valid packets)."""

    payload = b""

    def command(self, header: int, data: bytes) -> tuple[int, bytes] | None:
        if header == 229:
            return (0, self.payload)
        return super().command(header, data)


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=24), st.binary(max_size=24))
def test_random_replies_raise_only_vendhw_errors(first: bytes, second: bytes) -> None:
    sim = _Babbler(reply_delay=0)
    dev = CcTalkCoinAcceptor(CcTalkBus(SimTransport(sim), reply_timeout=0.02, retries=0))
    sim.payload = bytes(11)
    dev.start()
    dev.enable()
    for payload in (first, second):
        sim.payload = payload
        try:
            events = dev.poll()
        except VendhwError:
            continue
        assert all(isinstance(e, CashEvent) and e.event_id for e in events)


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=40), st.integers(1, 6))
def test_line_noise_before_a_reply_never_changes_the_credit(noise: bytes,
                                                            channel: int) -> None:
    dev, sim = acceptor()
    sim.insert_coin(channel)
    sim.set_fault("garbage", noise.hex())
    try:
        events = dev.poll()
    except VendhwError:
        events = dev.poll()
    assert [(e.kind, e.channel) for e in events] == [(K.CREDIT, channel)]
    assert dev.poll() == []
