"""One MDB bus, several peripherals: a changer, a bill validator and a card reader share one
port (one :class:`MdbLink`, one lock) and are polled in turn."""

from __future__ import annotations

from vendhw.devices.cash import CashEventKind
from vendhw.devices.mdb import open_bill_validator, open_changer, shared_link
from vendhw.devices.mdb_cashless import open_cashless


def test_a_coin_a_note_and_a_card_sale_on_one_bus() -> None:
    url = "sim://mdb-bus?coins=4&notes=1&funds=1000"
    changer, bill, reader = open_changer(url), open_bill_validator(url), open_cashless(url)
    link = changer.link
    assert bill.link is link and reader.link is link and link.users == 3
    bus = link.transport.simulator  # type: ignore[attr-defined]
    try:
        changer.start()
        bill.start()
        assert reader.start().level == 3
        changer.enable()
        bill.enable()
        reader.enable()
        events = []
        card = []
        for _ in range(6):  # polled in turn, as the agent's loops do
            events += changer.poll()
            events += bill.poll()
            card += reader.poll()
        credits = [e for e in events if e.kind == CashEventKind.CREDIT]
        escrows = [e for e in events if e.kind == CashEventKind.ESCROW]
        assert [e.device for e in credits] == ["mdb-changer"]  # the 1 EUR coin (type 4), once
        assert len(escrows) == 1  # the 10 EUR note (type 1), once
        bill.stack()
        for _ in range(3):
            events += changer.poll() + bill.poll()
        assert [e.kind for e in events].count(CashEventKind.CREDIT) == 2  # coin + stacked note
        assert bus.member("mdb-bill").stacked == [1]
        assert [e.kind for e in card] == ["begin_session"]
        sale = reader.sell(3, 150, lambda: "delivered", session_timeout=5)
        assert sale.state == "delivered" and sale.approved == 150
        cashless = bus.member("mdb-cashless")
        assert cashless.settled == [{"result": "success", "price": 150, "item": 3,
                                     "reported_item": 3}]
        assert cashless.funds == 850
        assert bus.member("mdb-changer").tubes[4] == 11  # the 1 EUR coin into its tube
    finally:
        changer.close()
        bill.close()
        assert not link.transport.closed  # the reader still uses the bus
        reader.close()
    assert link.transport.closed


def test_separate_simulators_stay_separate_and_a_closed_bus_opens_again() -> None:
    first = open_changer("sim://mdb-changer")
    second = open_changer("sim://mdb-changer")
    assert first.link is not second.link  # one-device simulators are never shared
    first.close()
    second.close()
    link = shared_link("sim://mdb-bus")
    link.release()
    assert link.transport.closed
    again = shared_link("sim://mdb-bus")
    assert again is not link and not again.transport.closed
    again.release()


def test_mdb_scan_finds_the_three_peripherals_of_the_bus_simulator() -> None:
    import json

    from click.testing import CliRunner

    from vendhw.cli import cli

    result = CliRunner().invoke(cli, ["mdb", "scan", "--port", "sim://mdb-bus", "--json"])
    assert result.exit_code == 0, result.output
    found = [json.loads(line)["address"] for line in result.output.splitlines()
             if line.startswith("{")]
    assert found == ["0x08", "0x10", "0x30"]


def test_cash_poller_thread_and_card_sale_share_the_bus() -> None:
    """As in the agent: the cash devices are polled in a thread while a card sale runs in
    another; the link's lock keeps every command next to its ACK, so nothing repeats."""
    import threading

    url = "sim://mdb-bus?coins=4,5&notes=2"
    changer, bill, reader = open_changer(url), open_bill_validator(url), open_cashless(url)
    bus = changer.link.transport.simulator  # type: ignore[attr-defined]
    stop = threading.Event()
    events: list = []
    errors: list[BaseException] = []

    def cash_loop() -> None:
        try:
            while not stop.is_set():
                events.extend(changer.poll() + bill.poll())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    try:
        changer.start()
        bill.start()
        reader.start()
        reader.enable()
        poller = threading.Thread(target=cash_loop)
        poller.start()
        try:
            changer.enable()
            bill.enable()
            sale = reader.sell(7, 300, lambda: "delivered", session_timeout=5)
        finally:
            stop.set()
            poller.join()
        for _ in range(3):
            events.extend(changer.poll() + bill.poll())
        assert not errors
        assert sale.state == "delivered"
        assert bus.member("mdb-cashless").settled[0]["result"] == "success"
        credits = [e for e in events if e.kind == CashEventKind.CREDIT]
        assert sorted(e.value for e in credits) == [100, 200]  # each coin (types 4, 5) once
        assert len({e.event_id for e in credits}) == 2
        assert [e.kind for e in events].count(CashEventKind.ESCROW) == 1  # the note once
    finally:
        changer.close()
        bill.close()
        reader.close()
