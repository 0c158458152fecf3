"""The customer screen's "Pay by card", in headless Chromium, against a real backend
process and an in-process agent with a simulated board and a simulated MDB cashless reader
(``sim://mdb-cashless``): approved then delivered, declined, cancelled while asked to tap.

The reader's card is "tapped" by the test (the simulator's clock), after the page shows the
"tap your card" state. VENDHW_SCREENSHOTS=<dir> keeps the screenshots (docs/screen/).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from test_agent_screen_browser import (
    PAGE_ERRORS,
    SHOTS,
    WATCH_STATES,
    World,
    _chromium,
    open_screen,
    shot,
    small_targets,
    tap_product,
    wait_view,
)

from vendhw.agent.demo import _free_port
from vendhw.agent.runner import Agent, AgentConfig

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    sync_api = pytest.importorskip("playwright.sync_api")
    chromium = _chromium()
    tmp = tmp_path_factory.mktemp("screen-card")
    SHOTS[:] = [tmp / "shots"]
    SHOTS[0].mkdir()
    port, token, secret = _free_port(), secrets.token_hex(8), secrets.token_hex(16)
    (tmp / "machine.toml").write_text(f'''
[backend]
url = "http://127.0.0.1:{port}"
machine_id = "m1"
secret = "{secret}"

[board]
profile = "easivend-column"
port = "sim://easivend-column?inventory=30"

[[cashless]]
port = "sim://mdb-cashless?tap_after=-1&funds=100000"

[agent]
data_dir = "data"
screen_port = 0

[screen]
language = "en"
idle_timeout = 2
code_length = 10
''')
    with sync_api.sync_playwright() as play:
        browser = play.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        agent: Agent | None = None
        w = World(f"http://127.0.0.1:{port}", token, None, "", browser, tmp,  # type: ignore
                  port)
        try:
            w.start_backend()
            w.operator("POST", "/catalogue", json={
                "products": [{"id": "tea", "name": "Green tea", "price": 300},
                             {"id": "cola", "name": "Cola", "price": 350}],
                "machines": [{"id": "m1", "secret": secret, "slots": [
                    {"slot": "1", "product": "tea", "price": 300},
                    {"slot": "2", "product": "cola", "price": 350}]}]})
            agent = Agent(AgentConfig.load(tmp / "machine.toml"))
            agent.start()
            assert agent.screen is not None and agent.card is not None
            w.agent, w.screen = agent, agent.screen.url
            yield w
        finally:
            browser.close()
            if agent is not None:
                agent.close()
            if w.proc is not None and w.proc.poll() is None:
                w.stop_backend()


@pytest.fixture(autouse=True)
def no_script_errors() -> Iterator[None]:
    PAGE_ERRORS.clear()
    yield
    assert PAGE_ERRORS == []


def reader(world: World) -> Any:
    assert world.agent.card is not None
    return world.agent.card.reader.link.transport.simulator


def tap_card(world: World) -> None:
    """The customer holds a card on the reader (the simulator's next POLL reports it)."""
    sim = reader(world)
    sim.tap_after = 0.0
    sim.enabled_at = -1e9


def to_card(world: World, size: str, product: str, zh: bool = False) -> Any:
    page = open_screen(world, size)
    wait_view(page, "products")
    if zh:
        page.locator("#lang").click()
    tap_product(page, product)
    wait_view(page, "pay")
    assert page.locator("#pay-card").is_visible()  # beside the QR and the code button
    page.locator("#pay-card").click()
    wait_view(page, "card", "tap")
    page.evaluate(WATCH_STATES)
    return page


@pytest.mark.parametrize("size", ["portrait", "phone"])
def test_card_approved_then_delivered(world: World, size: str) -> None:
    sim = reader(world)
    settled = len(sim.settled)
    page = to_card(world, size, "Green tea")
    assert page.locator("#view-card h1").inner_text() == "Tap your card on the reader"
    assert "¥3.00" in page.locator("#card-amount").inner_text()
    assert page.locator("#card-cancel").is_visible() and small_targets(page) == []
    page.wait_for_function("document.getElementById('card-left').textContent !== '--:--'")
    shot(page, size, "card-tap")
    assert sim.settled[settled:] == []  # nothing happens at the reader before the card
    tap_card(world)
    wait_view(page, "result", "delivered")
    sale = httpx.get(f"{world.screen}/api/card/{page.evaluate('card.id')}", timeout=10).json()
    assert sale["steps"] == ["tap", "dispensing", "delivered"]  # approved, then the motor
    assert page.locator("#result-title").inner_text() == "Enjoy!"
    assert page.locator("#result-ref").is_visible()
    shot(page, size, "card-delivered")
    assert sim.settled[settled:] == [{"result": "success", "price": 300, "item": 1,
                                      "reported_item": 1}]
    # The QR order the customer left is cancelled; the card sale is booked as a card sale.
    orders = world.operator("GET", "/orders", params={"limit": 5})
    rows = orders.get("orders", orders) if isinstance(orders, dict) else orders
    assert any(o.get("kind") == "card" and o.get("state") == "delivered" for o in rows)
    wait_view(page, "products")  # back by itself after the idle time
    page.context.close()


@pytest.mark.parametrize("size", ["portrait", "phone"])
def test_card_denied_shows_a_plain_message_then_the_products(world: World, size: str) -> None:
    sim = reader(world)
    settled = len(sim.settled)
    vends = len(world.agent.machine.history())
    sim.set_fault("deny")
    try:
        page = to_card(world, size, "Cola")
        tap_card(world)
        wait_view(page, "result", "denied")
        assert page.locator("#result-title").inner_text() == "Your card was declined"
        assert "Nothing was charged" in page.locator("#result-text").inner_text()
        shot(page, size, "card-denied")
        sale = httpx.get(f"{world.screen}/api/card/{page.evaluate('card.id')}",
                         timeout=10).json()
        assert sale["steps"] == ["tap", "denied"]
        wait_view(page, "products")
    finally:
        sim.set_fault("deny", False)
    assert sim.settled[settled:] == []
    assert len(world.agent.machine.history()) == vends  # the motor never turned
    page.context.close()


def test_card_cancel_while_asked_to_tap_in_chinese(world: World) -> None:
    sim = reader(world)
    settled = len(sim.settled)
    page = to_card(world, "phone", "Green tea", zh=True)
    assert page.locator("#view-card h1").inner_text() == "请在读卡器上刷卡"
    assert page.locator("#card-cancel").inner_text() == "取消"
    shot(page, "phone", "card-tap-zh")
    page.locator("#card-cancel").click()
    wait_view(page, "products")
    assert sim.settled[settled:] == []
    # The reader is free again: the next customer can pay by card.
    page.locator(".tile", has_text="Green tea").click()
    wait_view(page, "pay")
    page.context.close()


def test_card_vend_failure_says_the_card_was_not_charged(world: World) -> None:
    """The board finds slot 2 empty after the approval: VEND FAILURE goes back to the
    reader (which does not charge) and the screen says so in plain words."""
    sim = reader(world)
    settled = len(sim.settled)
    world.simulator.set_fault("empty", True)
    try:
        page = to_card(world, "portrait", "Cola")
        tap_card(world)
        wait_view(page, "result", "refunded")
        assert page.locator("#result-text").inner_text() == "Your card was not charged."
        shot(page, "portrait", "card-not-charged")
        sale = httpx.get(f"{world.screen}/api/card/{page.evaluate('card.id')}",
                         timeout=10).json()
        assert sale["steps"] == ["tap", "dispensing", "refunded"]
    finally:
        world.simulator.set_fault("empty", False)
    assert [s["result"] for s in sim.settled[settled:]] == ["failure"]
    page.context.close()
