"""Card payments in the agent: the backend books card sales, CardSales' workflow over a
simulated MDB reader and board, the [[cashless]] configuration, and ``vendhw demo --card``."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vendhw.agent.card import CardSales, load_cashless
from vendhw.agent.runner import AgentConfig
from vendhw.devices.mdb import MdbLink
from vendhw.devices.mdb_cashless import MdbCashlessReader
from vendhw.dex import collect
from vendhw.errors import ConfigurationError
from vendhw.machine import Machine
from vendhw.sim.mdb_cashless import MdbCashlessSimulator
from vendhw.testing.backend import InProcessServer
from vendhw.transport import SimTransport


@pytest.fixture
def server() -> Iterator[InProcessServer]:
    srv = InProcessServer()
    srv.add_machine("m1", slots={"1": ("tea", 500), "2": ("cake", 1500)})
    yield srv
    srv.close()


class Rig:
    def __init__(self, server: InProcessServer, tmp_path: Path, board: str,
                 **reader: Any) -> None:
        self.sim = MdbCashlessSimulator(**reader)
        self.reader = MdbCashlessReader(MdbLink(SimTransport(self.sim), response_timeout=0.1),
                                        sleep=lambda s: None)
        self.machine = Machine("easivend-column", board, journal=tmp_path / "vends.db")
        self.client = server.client(outbox=tmp_path / "outbox.db")
        self.sales = CardSales(self.reader, self.machine, self.client)
        self.sales.start()
        self.server = server
        self.journal = tmp_path / "vends.db"

    def close(self) -> None:
        self.sales.close()
        self.machine.close()
        self.client.close()


BOARD = "sim://easivend-column?inventory=3&motor_time=0.01"


@pytest.fixture
def rig(server: InProcessServer, tmp_path: Path) -> Iterator[Rig]:
    r = Rig(server, tmp_path, BOARD, funds=2000)
    yield r
    r.close()


def test_backend_books_card_sales(server: InProcessServer) -> None:
    sale = server.backend.record_cash_sale("m1", "card:1:a", "1", 500, "delivered",
                                           method="card")
    assert sale["state"] == "delivered" and sale["kind"] == "card"
    failed = server.backend.record_cash_sale("m1", "card:1:b", "1", 500, "jammed",
                                             method="card")
    assert failed["state"] == "refunded"
    unknown = server.backend.record_cash_sale("m1", "card:1:c", "1", 500, "unknown",
                                              method="card")
    assert unknown["state"] == "needs_review"
    cash = server.backend.record_cash_sale("m1", "sale:1:d", "1", 500, "delivered")
    assert cash["kind"] == "cash"  # the cash contract is unchanged


def test_card_sale_delivered_is_booked_and_audited(rig: Rig) -> None:
    result = rig.sales.sell("1", 500, session_timeout=1)
    assert result.state == "delivered" and result.outcome == "delivered"
    assert result.order_id is not None
    assert rig.server.state(result.order_id) == "delivered"
    order = rig.server.operator("GET", f"/operator/v1/orders/{result.order_id}").json()
    assert order["kind"] == "card" and order["amount"] == 500
    assert rig.sim.settled == [{"result": "success", "price": 500, "item": 1,
                                "reported_item": 1}]
    (vend,) = rig.machine.history()
    assert vend.vend_id == result.reference and vend.vend_id.startswith("card:1:")
    audit = collect(rig.journal, prices={"1": 500}, now=2e9)
    assert (audit.cashless1.count, audit.cashless1.value) == (1, 500)


def test_jammed_card_sale_tells_the_reader_vend_failure(server: InProcessServer,
                                                        tmp_path: Path) -> None:
    rig = Rig(server, tmp_path, BOARD + "&jam=1")
    try:
        result = rig.sales.sell("1", 500, session_timeout=1)
        assert result.state == "refunded" and result.outcome != "delivered"
        assert [s["result"] for s in rig.sim.settled] == ["failure"]
        assert result.order_id is not None and server.state(result.order_id) == "refunded"
    finally:
        rig.close()


def test_denied_card_never_vends_and_books_nothing(server: InProcessServer,
                                                   tmp_path: Path) -> None:
    rig = Rig(server, tmp_path, BOARD, deny=True)
    try:
        result = rig.sales.sell("2", 1500, session_timeout=1)
        assert result.state == "denied" and result.order_id is None
        assert rig.machine.history() == [] and rig.sim.settled == []
    finally:
        rig.close()


def test_config_reads_cashless(tmp_path: Path) -> None:
    path = tmp_path / "machine.toml"
    base = '''
[backend]
url = "http://127.0.0.1:1"
machine_id = "m1"
secret = "s"
[board]
profile = "easivend-column"
port = "sim://easivend-column"
'''
    path.write_text(base + '[[cashless]]\nport = "sim://mdb-cashless"\naddress = 96\n')
    config = AgentConfig.load(path)
    assert [(c.port, c.address) for c in config.cashless] == [("sim://mdb-cashless", 0x60)]
    path.write_text(base)
    assert AgentConfig.load(path).cashless == ()
    path.write_text(base + '[[cashless]]\nport = "x"\naddress = 32\n')
    with pytest.raises(ConfigurationError, match="16 \\(0x10\\) or 96"):
        AgentConfig.load(path)
    with pytest.raises(ConfigurationError, match="needs a port"):
        load_cashless([{"address": 16}])


@pytest.mark.timeout(120)
def test_demo_card_is_delivered() -> None:
    proc = subprocess.run([sys.executable, "-m", "vendhw", "demo", "--card", "--json"],
                          capture_output=True, text=True, timeout=110, stdin=subprocess.DEVNULL)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert events and events[-1]["event"] == "final", proc.stderr[-500:]
    assert events[-1]["state"] == "delivered" and proc.returncode == 0
    (sale,) = [e for e in events if e["event"] == "card_sale"]
    assert sale["events"] == ["begin_session", "vend_approved", "end_session"]


def test_reader_lost_after_the_vend_is_for_an_operator(server: InProcessServer,
                                                       tmp_path: Path) -> None:
    rig = Rig(server, tmp_path, BOARD)
    try:
        real = rig.machine.dispense

        def dispense_then_unplug(*args: object, **kwargs: object) -> object:
            result = real(*args, **kwargs)  # type: ignore[arg-type]
            rig.sim.set_fault("silent", True)  # the reader goes away during the vend
            return result

        rig.machine.dispense = dispense_then_unplug  # type: ignore[method-assign,assignment]
        result = rig.sales.sell("1", 500, session_timeout=1)
        assert result.state == "needs_review" and result.outcome == "unknown"
        assert result.order_id is not None
        assert server.state(result.order_id) == "needs_review"
        # The reader heard VEND SUCCESS but its ACK was lost: from the machine's side the
        # charge is uncertain, which is exactly what an operator settles.
        assert [s["result"] for s in rig.sim.settled] == ["success"]
    finally:
        rig.sim.set_fault("silent", False)
        rig.close()


def test_card_sales_set_a_restarted_reader_up_again(rig: Rig) -> None:
    rig.sim._power_up()  # the reader reboots between two customers
    result = rig.sales.sell("1", 500, session_timeout=1)
    assert result.state == "delivered"
    assert [s["result"] for s in rig.sim.settled] == ["success"]


def test_card_tapped_before_the_choice_is_seen_by_the_poller(server: InProcessServer,
                                                             tmp_path: Path) -> None:
    rig = Rig(server, tmp_path, BOARD)
    seen = threading.Event()
    rig.sales.listeners.append(lambda e: seen.set() if e.kind == "begin_session" else None)
    rig.sales.start(poll=True)  # the agent keeps the reader polled between sales
    try:
        assert seen.wait(10)  # the customer tapped first
        assert rig.reader.core.session_open
        result = rig.sales.sell("1", 500, session_timeout=1)
        assert result.state == "delivered"
        assert [s["result"] for s in rig.sim.settled] == ["success"]
    finally:
        rig.close()
