"""Cash in the machine agent: the backend's cash-sale booking, CashSales, the config, the
terminal screen and the web page with credit."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from cashpoll import poll_until
from rich.console import Console

from vendhw.agent.cash import CashSales
from vendhw.agent.runner import AgentConfig
from vendhw.agent.screen import ScreenServer
from vendhw.agent.terminal import TerminalScreen, terminal_qr
from vendhw.client import BackendClient
from vendhw.devices.cash import CashEventKind
from vendhw.devices.ssp import SspDevice
from vendhw.errors import ConfigurationError
from vendhw.machine import Machine
from vendhw.machine.cash import CashAcceptor, CashJournal, InsufficientCredit
from vendhw.server.states import FAILURE_OUTCOMES
from vendhw.sim.ssp import SspSimulator
from vendhw.testing.backend import BASE_URL, InProcessServer
from vendhw.transport import SimTransport


@pytest.fixture
def server() -> Iterator[InProcessServer]:
    srv = InProcessServer()
    srv.add_machine("m1", slots={"1": ("tea", 500), "2": ("cake", 1500)})
    yield srv
    srv.close()


# --- the backend books cash sales ------------------------------------------------------


def test_cash_sale_is_booked_once_and_failures_are_refunded(server: InProcessServer,
                                                            tmp_path: Path) -> None:
    client = server.client(outbox=tmp_path / "outbox.db")
    receipt = client.report_cash_sale("sale:1:abc", "1", 500, "delivered", {"drop_ms": 40})
    assert receipt.order is not None and receipt.order.state == "delivered"
    again = client.report_cash_sale("sale:1:abc", "1", 500, "delivered", {"drop_ms": 40})
    assert again.order is not None and again.order.id == receipt.order.id
    direct = server.backend.record_cash_sale("m1", "sale:1:abc", "1", 500, "delivered")
    assert direct["id"] == receipt.order.id  # the reference alone finds the same order
    failed = client.report_cash_sale("sale:2:def", "2", 1500, "jammed")
    assert failed.order is not None and failed.order.state == "refunded"
    unknown = client.report_cash_sale("sale:2:ghi", "2", 1500, "unknown")
    assert unknown.order is not None and unknown.order.state == "needs_review"
    booked = server.operator("GET", f"/operator/v1/orders/{receipt.order.id}").json()
    assert booked["amount"] == 500 and booked["kind"] == "cash"


def test_cash_sale_while_the_backend_is_down_is_queued_then_booked(server: InProcessServer,
                                                                   tmp_path: Path) -> None:
    down = httpx.Client(transport=httpx.MockTransport(
        lambda request: (_ for _ in ()).throw(httpx.ConnectError("down"))))
    client = BackendClient(BASE_URL, "m1", server.secrets["m1"], http=down, retries=0,
                           backoff=0.0, clock=server.clock.now, outbox=tmp_path / "outbox.db")
    receipt = client.report_cash_sale("sale:1:zz", "1", 500, "delivered")
    assert receipt.queued
    client.http = server.http  # the link returns
    client.flush()
    order_id = server.backend.record_cash_sale("m1", "sale:1:zz", "1", 500, "delivered")["id"]
    assert server.state(order_id) == "delivered"
    assert client.outbox.pending() == []


# --- CashSales: spend, vend, settle, book -------------------------------------------------


class Rig:
    def __init__(self, server: InProcessServer, tmp_path: Path, board: str) -> None:
        self.sim = SspSimulator(reply_delay=0, speed=50, levels="500:4")
        self.device = SspDevice(SimTransport(self.sim), reply_timeout=0.05, retries=3)
        self.device.start()
        self.journal = CashJournal(tmp_path / "cash.db")
        self.acceptor = CashAcceptor([self.device], self.journal)
        self.acceptor.enable()
        self.machine = Machine("easivend-column", board, journal=tmp_path / "vends.db")
        self.client = server.client(outbox=tmp_path / "outbox.db")
        self.sales = CashSales(self.acceptor, self.machine, self.client)

    def insert(self, channel: int) -> None:
        self.sim.insert_note(channel)
        poll_until(self.acceptor.poll_once, {CashEventKind.CREDIT}, seconds=3)

    def close(self) -> None:
        self.machine.close()
        self.device.close()
        self.journal.close()
        self.client.close()


@pytest.fixture
def rig(server: InProcessServer, tmp_path: Path, request: pytest.FixtureRequest
        ) -> Iterator[Rig]:
    board = getattr(request, "param", "sim://easivend-column?inventory=3&motor_time=0.01")
    r = Rig(server, tmp_path, board)
    yield r
    r.close()


def test_cash_sale_delivered_spends_credit_and_books_the_order(rig: Rig,
                                                               server: InProcessServer) -> None:
    rig.insert(2)  # EUR 10
    assert rig.sales.balance() == 1000
    with pytest.raises(InsufficientCredit):
        rig.sales.sell("2", 1500)
    sale = rig.sales.sell("1", 500)
    assert sale.outcome == "delivered" and sale.state == "delivered"
    assert rig.sales.balance() == 500
    assert rig.journal.settled(sale.reference) == "delivered"
    order = server.backend.record_cash_sale("m1", sale.reference, "1", 500, "delivered")
    assert order["state"] == "delivered"
    assert rig.sales.return_change() == 500
    assert rig.sales.balance() == 0
    poll_until(rig.acceptor.poll_once, {CashEventKind.PAYOUT_DONE}, seconds=3)
    assert rig.sim.paid_out == [500]


@pytest.mark.parametrize("rig", ["sim://easivend-column?inventory=3&motor_time=0.01&jam=1"],
                         indirect=True)
def test_jammed_cash_sale_gives_the_credit_back(rig: Rig, server: InProcessServer) -> None:
    rig.insert(1)
    sale = rig.sales.sell("1", 500)
    assert sale.outcome in FAILURE_OUTCOMES  # the column board reports a jam as a timeout
    assert sale.refunded and sale.state == "refunded"
    assert rig.sales.balance() == 500
    order = server.backend.record_cash_sale("m1", sale.reference, "1", 500, sale.outcome)
    assert order["state"] == "refunded"


def test_recovery_refunds_a_spend_whose_vend_never_began(rig: Rig) -> None:
    rig.insert(1)
    rig.journal.spend(500, "sale:1:crashed")  # the power went before the vend was journaled
    assert rig.sales.balance() == 0
    (done,) = rig.sales.recover()
    assert done.outcome == "not_started" and rig.sales.balance() == 500
    assert rig.sales.recover() == []


def test_recovery_replays_a_journaled_vend_and_never_vends_twice(rig: Rig) -> None:
    rig.insert(1)
    rig.journal.spend(500, "sale:1:halfway")
    first = rig.machine.dispense("1", vend_id="sale:1:halfway")  # then the crash
    vends = len(rig.machine.history())
    (done,) = rig.sales.recover()
    assert done.outcome == first.outcome.value == "delivered"
    assert len(rig.machine.history()) == vends  # replayed from the journal
    assert rig.sales.balance() == 0


# --- configuration -----------------------------------------------------------------------


def test_config_reads_cash_sections(tmp_path: Path) -> None:
    path = tmp_path / "machine.toml"
    path.write_text('''
[backend]
url = "http://127.0.0.1:1"
machine_id = "m1"
secret = "s"
[board]
profile = "easivend-column"
port = "sim://easivend-column"
[[cash]]
protocol = "ssp"
port = "sim://ssp"
options = { reply_timeout = "0.1" }
[[cash]]
protocol = "cctalk-coin"
port = "sim://cctalk-coin"
''')
    config = AgentConfig.load(path)
    assert [(c.protocol, c.port) for c in config.cash] == [("ssp", "sim://ssp"),
                                                           ("cctalk-coin", "sim://cctalk-coin")]
    assert config.cash[0].options == {"reply_timeout": "0.1"}
    path.write_text(path.read_text() + '[[cash]]\nport = "x"\n')
    with pytest.raises(ConfigurationError, match="entry 3 needs protocol"):
        AgentConfig.load(path)


# --- the terminal screen and the web page ------------------------------------------------


class FakeAgent:
    def __init__(self, *, cash: bool = True) -> None:
        self.balance = 700 if cash else None
        expires = datetime.now(timezone.utc) + timedelta(seconds=60)
        self.states = iter(["awaiting_payment", "paid", "dispensing", "delivered"])
        self.order_obj = SimpleNamespace(id="vo1", state="awaiting_payment",
                                         qr_text="weixin://wxpay/x", amount=500,
                                         currency="CNY", expires_at=expires)
        self.sold: list[str] = []

    def products(self) -> list[dict[str, Any]]:
        return [{"slot": "1", "name": "Green tea", "price": 500, "currency": "CNY"},
                {"slot": "2", "name": "Cake", "price": 1500, "currency": "CNY"}]

    def buy(self, slot: str) -> Any:
        return self.order_obj

    def order(self, order_id: str) -> Any:
        return SimpleNamespace(**{**vars(self.order_obj), "state": next(self.states)})

    def redeem(self, code: str) -> Any:
        if code != "12345678":
            raise ValueError("no such code")
        return SimpleNamespace(**{**vars(self.order_obj), "state": "delivered"})

    def cash_balance(self) -> int | None:
        return self.balance

    def buy_cash(self, slot: str) -> Any:
        self.sold.append(slot)
        return SimpleNamespace(state="delivered" if slot == "1" else "refunded")

    def return_change(self) -> int:
        paid, self.balance = self.balance or 0, 0
        return paid


def terminal(agent: Any, answers: list[str]) -> str:
    out = io.StringIO()
    feed = iter(answers)

    def ask(prompt: str) -> str:
        try:
            return next(feed)
        except StopIteration:
            raise EOFError from None

    TerminalScreen(agent, console=Console(file=out, width=100, color_system=None), ask=ask,
                   poll=0, sleep=lambda s: None).run()
    return out.getvalue()


def test_terminal_qr_sale_shows_the_qr_and_follows_to_delivered() -> None:
    text = terminal(FakeAgent(), ["1", "q"])
    assert "Green tea" in text and "5.00 CNY" in text
    assert terminal_qr("weixin://wxpay/x").splitlines()[1] in text
    assert "Scan to pay 5.00 CNY" in text and "time left:" in text
    assert text.index("Scan the code to pay") < text.index("Enjoy! Please take your product.")


def test_terminal_code_cash_and_change() -> None:
    agent = FakeAgent()
    text = terminal(agent, ["c", "000", "c", "12345678", "$1", "$2", "r", "9", "x"])
    assert "Sorry: no such code" in text
    assert "Credit: 7.00" in text and agent.sold == ["1", "2"]
    assert "Your credit was returned." in text
    assert "Please take your change: 7.00" in text
    assert "there is no product 9" in text and "Please type a product number" in text


def test_web_page_shows_credit_and_sells_for_cash() -> None:
    agent = FakeAgent()
    screen = ScreenServer(agent, "127.0.0.1", 0)
    screen.start()
    try:
        state = httpx.get(screen.url + "/api/state").json()
        assert state["ok"] and state["cash"] == 700
        assert [p["price"] for p in state["products"]] == [500, 1500]
        sold = httpx.post(screen.url + "/api/cash/buy", json={"slot": "1"}).json()
        assert sold["state"] == "delivered" and agent.sold == ["1"]
        refunded = httpx.post(screen.url + "/api/cash/buy", json={"slot": "2"}).json()
        assert refunded["state"] == "refunded"
        assert httpx.post(screen.url + "/api/cash/change", json={}).json() == {"paid": 700}
        # The first screen's form posts still answer.
        assert "Enjoy!" in httpx.post(screen.url + "/buy-cash", data={"slot": "1"}).text
        assert "No change to return" in httpx.post(screen.url + "/change").text
        plain = ScreenServer(FakeAgent(cash=False), "127.0.0.1", 0)
        plain.start()
        try:
            assert httpx.get(plain.url + "/api/state").json()["cash"] is None
        finally:
            plain.close()
    finally:
        screen.close()



def test_screen_a_browser_gone_mid_reply_is_no_traceback(
        capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    """Kiosk browsers cancel requests all the time: a broken pipe is routine, not stderr noise."""
    screen = ScreenServer(FakeAgent(), "127.0.0.1", 0)
    screen.start()
    try:
        with caplog.at_level(logging.DEBUG, logger="vendhw.agent.screen"):
            try:
                raise BrokenPipeError(32, "Broken pipe")
            except BrokenPipeError:
                screen.httpd.handle_error(None, ("127.0.0.1", 5555))
            try:
                raise RuntimeError("a real bug")
            except RuntimeError:
                screen.httpd.handle_error(None, ("127.0.0.1", 5556))
    finally:
        screen.close()
    assert "Traceback" not in capfd.readouterr().err
    gone = [r for r in caplog.records if "went away" in r.getMessage()]
    failed = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(gone) == 1 and gone[0].levelno == logging.DEBUG
    assert len(failed) == 1 and failed[0].exc_info is not None  # a real bug stays visible
