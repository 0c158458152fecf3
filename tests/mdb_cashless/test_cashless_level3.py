"""Cashless level 3 options the host handles: TIME/DATE REQUEST answered with EXPANSION WRITE
TIME/DATE, DISPLAY REQUEST parsed (time and text)."""

from __future__ import annotations

from datetime import datetime

from vendhw.devices.mdb_cashless import (
    CashlessCore,
    Request,
    open_cashless,
    parse_poll,
)
from vendhw.framing.mdb import CashlessPoll


def test_time_date_request_is_answered_with_the_clock_in_bcd() -> None:
    reader = open_cashless("sim://mdb-cashless?time_request=1&tap_after=-1")
    sim = reader.link.transport.simulator  # type: ignore[attr-defined]
    reader.clock = lambda: datetime(2026, 12, 5, 8, 47, 9)  # a Saturday, ISO week 49
    try:
        reader.start()
        reader.enable()
        assert sim.time_date is None
        assert [e.kind for e in reader.poll()] == ["time_date_request"]
        assert sim.time_date == bytes.fromhex("26 12 05 08 47 09 06 49 00 00")
        assert not reader.core.time_requested
        assert reader.poll() == []  # answered once
        assert sim.commands[-2] == "7:03" + "26120508470906490000"
    finally:
        reader.close()


def test_the_core_asks_nothing_until_the_reader_requests_the_time() -> None:
    core = CashlessCore()
    op = core.time_date_op(datetime(2027, 1, 4, 0, 0, 0))  # Monday, week 1
    step = next(op)
    assert step == Request(7, bytes.fromhex("03 27 01 04 00 00 00 01 01 00 00"))


def test_display_request_carries_its_time_and_text() -> None:
    (event,) = parse_poll(bytes((CashlessPoll.DISPLAY_REQUEST, 30)) + b"Insert card     ", level=3)
    assert event.kind == "display_request"
    assert event.detail == {"seconds": 3.0, "text": "Insert card"}
    reader = open_cashless("sim://mdb-cashless?display=Hello&tap_after=-1")
    try:
        reader.start()
        reader.enable()
        shown = [e.detail for e in reader.poll() if e.kind == "display_request"]
        assert shown == [{"seconds": 3.0, "text": "Hello"}]
    finally:
        reader.close()
