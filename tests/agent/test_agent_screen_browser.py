"""The customer screen in headless Chromium (Debian's), against a real backend process and an
in-process agent with a simulated board: every state a customer can meet, at a portrait
kiosk size (1080x1920), a phone (390x844) and, for the layout, landscape (1920x1080).

One world (backend + agent + browser) serves the module. Set VENDHW_SCREENSHOTS=<dir> to
keep the screenshots (docs/screen/ is made this way); VENDHW_SCREEN_TIMINGS=<file> appends
the measured time from "paid" at the backend to "Dispensing" on screen.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from vendhw.agent.demo import _free_port, _wait_ready
from vendhw.agent.runner import Agent, AgentConfig

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

SIZES = {"portrait": (1080, 1920, 0.5), "phone": (390, 844, 1), "landscape": (1920, 1080, 0.5)}
"""Viewport and device scale (half scale keeps the kiosk screenshots small)."""
SHOTS: list[Path] = [Path(".")]
PAGE_ERRORS: list[str] = []
"""Uncaught script errors of any page of the test (there must be none)."""
IDLE_SECONDS = 2
ORDER_TTL = "30s"
TEA_SVG = """<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 120 90">
<rect width="120" height="90" fill="#e3f1e6"/><rect x="38" y="18" width="44" height="62" rx="8"
fill="#3b8f5a"/><rect x="44" y="10" width="32" height="12" rx="3" fill="#2d6b44"/>
<text x="60" y="56" font-size="14" text-anchor="middle" fill="#fff" font-family="sans-serif">
TEA</text></svg>"""


def _chromium() -> str:
    """Debian's chromium (``.ci/run`` installs it); without one the browser tests skip,
    except in CI, where a missing browser must fail the run rather than hide the tests."""
    path = os.environ.get("VENDHW_CHROMIUM") or shutil.which("chromium") or ""
    if not path:
        if os.environ.get("CI"):
            pytest.fail("CI needs chromium for the browser test (.ci/run installs it)")
        pytest.skip("no chromium here (apt-get install chromium, or set VENDHW_CHROMIUM)")
    return path


@dataclass
class World:
    url: str
    token: str
    agent: Agent
    screen: str
    browser: Any
    tmp: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    def operator(self, method: str, path: str, **kw: Any) -> Any:
        response = httpx.request(method, f"{self.url}/operator/v1{path}", timeout=10,
                                 headers={"Authorization": f"Bearer {self.token}"}, **kw)
        response.raise_for_status()
        return response.json()

    def order(self, order_id: str) -> dict[str, Any]:
        data = self.operator("GET", f"/orders/{order_id}")
        return data.get("order", data)

    def pay(self, order_id: str) -> None:
        httpx.post(f"{self.url}/sandbox/orders/{order_id}/pay", timeout=10).raise_for_status()

    def code(self) -> str:
        return str(self.operator("POST", "/codes", json={"product": "tea"})["codes"][0]["code"])

    def start_backend(self) -> None:
        log = self.tmp / "backend.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vendhw", "backend", "serve", "--db",
             f"sqlite:///{self.tmp / 'b.db'}", "--host", "127.0.0.1", "--port", str(self.port),
             "--operator-token", self.token, "--query-interval", "200ms", "--order-ttl",
             ORDER_TTL, "--log-level", "warning"],
            stdout=subprocess.DEVNULL, stderr=log.open("a"))
        _wait_ready(self.url, self.proc, log)  # type: ignore[arg-type]

    def stop_backend(self) -> None:
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(timeout=10)

    @property
    def simulator(self) -> Any:
        return self.agent.machine.board.transport.simulator  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    sync_api = pytest.importorskip("playwright.sync_api")
    chromium = _chromium()
    tmp = tmp_path_factory.mktemp("screen")
    SHOTS[:] = [tmp / "shots"]
    SHOTS[0].mkdir()
    port, token, secret = _free_port(), secrets.token_hex(8), secrets.token_hex(16)
    (tmp / "images").mkdir()
    (tmp / "images" / "tea.svg").write_text(TEA_SVG)
    (tmp / "machine.toml").write_text(f'''
[backend]
url = "http://127.0.0.1:{port}"
machine_id = "m1"
secret = "{secret}"

[board]
profile = "easivend-column"
port = "sim://easivend-column?inventory=30"

[agent]
data_dir = "data"
screen_port = 0

[screen]
language = "en"
idle_timeout = {IDLE_SECONDS}
images = "images"
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
                             {"id": "cola", "name": "Cola", "price": 350},
                             {"id": "water", "name": "Water", "price": 200}],
                "machines": [{"id": machine, "secret": secret, "slots": [
                    {"slot": "1", "product": "tea", "price": 300},
                    {"slot": "2", "product": "cola", "price": 350},
                    {"slot": "3", "product": "water", "price": 200, "enabled": False}]}
                    for machine in ("m1", "m2")]})
            agent = Agent(AgentConfig.load(tmp / "machine.toml"))
            agent.start()
            assert agent.screen is not None
            w.agent, w.screen = agent, agent.screen.url
            yield w
        finally:
            browser.close()
            if agent is not None:
                agent.close()
            if w.proc is not None and w.proc.poll() is None:
                w.stop_backend()


def new_page(world: World, size: str) -> Any:
    width, height, scale = SIZES[size]
    context = world.browser.new_context(viewport={"width": width, "height": height},
                                        device_scale_factor=scale, has_touch=True,
                                        locale="en-GB")
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.on("pageerror", lambda error: PAGE_ERRORS.append(f"{size}: {error}"))
    return page


@pytest.fixture(autouse=True)
def no_script_errors() -> Iterator[None]:
    PAGE_ERRORS.clear()
    yield
    assert PAGE_ERRORS == []


def shot(page: Any, size: str, name: str) -> Path:
    """A screenshot of the state on screen (kept under VENDHW_SCREENSHOTS when set)."""
    folder = Path(os.environ.get("VENDHW_SCREENSHOTS") or SHOTS[0])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{size}-{name}.png"
    page.wait_for_timeout(150)  # let a CSS transition settle before the picture
    page.screenshot(path=str(path), animations="disabled")
    return path


def open_screen(world: World, size: str, path: str = "/") -> Any:
    page = new_page(world, size)
    page.goto(world.screen + path)
    return page


def wait_view(page: Any, view: str, state: str | None = None, timeout: float = 20_000) -> None:
    page.wait_for_function(
        "([v, s]) => document.body.dataset.view === v && (!s || document.body.dataset.state"
        " === s)", arg=[view, state], timeout=timeout)


def mirrors(world: World, page: Any) -> list[tuple[str, Any]]:
    """The same order opened at the other sizes (a deep link), to picture every state at
    every size from one sale."""
    pages = [("phone", open_screen(world, "phone", urlsplit(page.url).path)),
             ("landscape", open_screen(world, "landscape", urlsplit(page.url).path))]
    for _, other in pages:
        other.wait_for_function("document.body.dataset.view !== 'loading'")
    return pages


def shot_all(page: Any, others: list[tuple[str, Any]], name: str, view: str,
             state: str) -> None:
    wait_view(page, view, state)
    shot(page, "portrait", name)
    for size, other in others:
        wait_view(other, view, state)
        shot(other, size, name)


def close_all(others: list[tuple[str, Any]]) -> None:
    for _, other in others:
        other.context.close()


def tap_product(page: Any, name: str) -> None:
    page.locator(".tile", has_text=name).click()


def small_targets(page: Any) -> list[str]:
    """Visible buttons smaller than 48x48 CSS px (a finger's minimum)."""
    return page.evaluate("""() => [...document.querySelectorAll('button')]
        .filter(b => b.offsetParent !== null)
        .map(b => [b.id || b.textContent.trim(), b.getBoundingClientRect()])
        .filter(([, r]) => r.width < 48 || r.height < 48)
        .map(([n, r]) => `${n} ${Math.round(r.width)}x${Math.round(r.height)}`)""")


def pay_url_from_screenshot(png: Path) -> str:
    import cv2

    image = cv2.imread(str(png))
    text, _, _ = cv2.QRCodeDetector().detectAndDecode(image)
    return str(text)


@pytest.fixture(scope="module")
def expiring(world: World) -> Iterator[tuple[Any, list[tuple[str, Any]]]]:
    """An order left alone at every size; started by the module's first test, so its payment
    window runs out while the other tests run (test_expiry, last, sees the end)."""
    page = open_screen(world, "portrait")
    wait_view(page, "products")
    tap_product(page, "Green tea")
    wait_view(page, "pay")
    others = mirrors(world, page)
    shot_all(page, others, "payment", "pay", "awaiting_payment")
    for each in [page] + [other for _, other in others]:
        each.evaluate(WATCH_STATES)
    yield page, others
    page.context.close()
    close_all(others)


WATCH_STATES = """() => { window.__states = [];
    new MutationObserver(() => window.__states.push(document.body.dataset.state))
        .observe(document.body, {attributes: true, attributeFilter: ['data-state']}); }"""
"""Records every state the page shows (window.__states)."""


def test_an_order_left_alone_shows_its_qr(expiring: tuple[Any, list]) -> None:
    page, _ = expiring
    assert page.locator("#qr").is_visible() and page.locator("#cancel").is_visible()


# --- the product list -----------------------------------------------------------------------


@pytest.mark.parametrize("size", ["portrait", "phone", "landscape"])
def test_product_tiles(world: World, size: str) -> None:
    page = open_screen(world, size)
    wait_view(page, "products")
    assert page.evaluate("document.documentElement.lang") == "en"
    tea = page.locator(".tile", has_text="Green tea")
    assert "¥3.00" in tea.inner_text()
    # The picture from images/: loaded (waited for: on a busy machine it may still be on
    # its way when the tiles are drawn; a broken image never gets a natural width).
    page.wait_for_function("i => i.complete && i.naturalWidth > 0",
                           arg=tea.locator("img").element_handle())
    water = page.locator(".tile", has_text="Water")
    assert water.is_disabled() and "Sold out" in water.inner_text()
    assert page.locator(".tile", has_text="Cola").locator(".letter").count() == 1
    assert small_targets(page) == []
    width = SIZES[size][0]
    assert page.evaluate("document.documentElement.scrollWidth") <= width  # viewport meta
    shot(page, size, "products")
    page.context.close()


def test_language_switch_and_live_region(world: World) -> None:
    page = open_screen(world, "phone")
    wait_view(page, "products")
    page.locator("#lang").click()
    assert page.evaluate("document.documentElement.lang") == "zh-CN"
    assert page.locator("#view-products h1").inner_text() == "请选择商品"
    assert "¥3.00" in page.locator(".tile", has_text="Green tea").inner_text()
    assert page.locator("[aria-live]").count() >= 1
    page.locator("#to-code").click()
    wait_view(page, "code")
    assert page.locator("#live").inner_text() == "请输入取货码"  # announced on change
    shot(page, "phone", "code-zh")
    page.locator("#code-back").click()
    wait_view(page, "products")
    assert page.evaluate("document.documentElement.lang") == "zh-CN"  # the customer's choice
    # Left alone on the product list, the screen returns to the machine's language.
    page.wait_for_function("document.documentElement.lang === 'en'")
    assert page.locator("#view-products h1").inner_text() == "Choose a product"
    page.context.close()


# --- a QR sale ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", ["portrait", "phone"])
def test_qr_sale_in_place(world: World, size: str) -> None:
    """Tap, pay at the backend, watch the page follow by itself; the QR decodes to the pay
    URL and stays on screen (same element, same place) through 5 s of polling."""
    page = open_screen(world, size)
    wait_view(page, "products")
    tap_product(page, "Green tea")
    wait_view(page, "pay")
    order_id = page.url.rsplit("/", 1)[1]
    order = world.order(order_id)
    assert page.locator("#pay-product").inner_text() == "Green tea"
    assert page.locator("#pay-amount").inner_text() == "¥3.00"
    assert "Sandbox" in page.locator("#pay-provider").inner_text()
    assert "awaiting_payment" not in page.locator("main").inner_text()
    page.wait_for_function("i => i.complete && i.naturalWidth > 0",
                           arg=page.locator("#qr").element_handle())
    assert re.fullmatch(r"0[12]:[0-5]\d|00:\d\d", page.locator("#left").inner_text())
    assert small_targets(page) == []
    png = page.locator("#qr").screenshot(path=str(SHOTS[0] / f"{size}-qr.png"))
    assert pay_url_from_screenshot(SHOTS[0] / f"{size}-qr.png") == order["qr_text"]
    assert png
    if size == "portrait":
        # Watch 5 s of polling from inside the page: the QR element must be the same node,
        # loaded, visible and unmoved at every sample, and the document must not reload.
        page.evaluate("""() => {
            const qr = document.getElementById('qr');
            const where = (id) => JSON.stringify(document.getElementById(id)
                .getBoundingClientRect());
            const first = {qr: where('qr'), amount: where('pay-amount'), left: where('left')};
            window.__watch = {samples: 0, bad: [], polls: 0};
            const fetch0 = window.fetch;
            window.fetch = (...a) => { window.__watch.polls++; return fetch0(...a); };
            window.__timer = setInterval(() => {
                const w = window.__watch; w.samples++;
                const now = document.getElementById('qr');
                if (now !== qr || !now.complete || now.naturalWidth === 0 ||
                    now.offsetParent === null || where('qr') !== first.qr ||
                    where('pay-amount') !== first.amount || where('left') !== first.left)
                    w.bad.push(w.samples);
            }, 40);
        }""")
        page.wait_for_timeout(5000)
        watch = page.evaluate("() => { clearInterval(window.__timer); return window.__watch }")
        assert watch["samples"] > 0 and watch["bad"] == []
        assert watch["polls"] >= 2  # it did poll the order meanwhile (in place)
    page.evaluate("""() => { window.__states = [];
        new MutationObserver(() => window.__states.push([document.body.dataset.state,
            Date.now()])).observe(document.body, {attributes: true,
            attributeFilter: ['data-state']}); }""")
    paid_at = time.time()
    world.pay(order_id)
    wait_view(page, "result", "delivered")
    assert "take your product" in page.locator("#result-text").inner_text()
    states = page.evaluate("window.__states")
    shown = [t for s, t in states if s in ("dispensing", "delivered")]
    assert shown, states
    latency_ms = shown[0] - paid_at * 1000
    if os.environ.get("VENDHW_SCREEN_TIMINGS"):
        with open(os.environ["VENDHW_SCREEN_TIMINGS"], "a") as out:
            out.write(json.dumps({"size": size, "paid_to_dispensing_ms": round(latency_ms),
                                  "states": [s for s, _ in states]}) + "\n")
    shot(page, size, "delivered")
    wait_view(page, "products")  # the idle time-out returns to the products by itself
    assert world.order(order_id)["state"] == "delivered"
    page.context.close()


def test_paid_and_dispensing_are_shown(world: World) -> None:
    """A slow motor keeps one sale dispensing while a second, paid, waits its turn: the
    screen shows "paid", then the dispensing animation, then the result."""
    page = open_screen(world, "portrait")
    wait_view(page, "products")
    tap_product(page, "Green tea")
    wait_view(page, "pay")
    second = page.url.rsplit("/", 1)[1]
    others = mirrors(world, page)
    first = world.agent.client.create_order("2")
    world.simulator.set_fault("slow_motor", 4)
    try:
        world.pay(first.id)
        deadline = time.monotonic() + 20
        while world.order(first.id)["state"] != "dispensing" and time.monotonic() < deadline:
            time.sleep(0.05)
        world.pay(second)
        wait_view(page, "progress", "paid")
        assert "Paid" in page.locator("#progress-title").inner_text()
        shot_all(page, others, "paid", "progress", "paid")
        wait_view(page, "progress", "dispensing")
        assert "take your product from the tray below" in page.locator(
            "#progress-text").inner_text()
        shot_all(page, others, "dispensing", "progress", "dispensing")
    finally:
        world.simulator.set_fault("slow_motor", False)
    shot_all(page, others, "delivered", "result", "delivered")
    page.context.close()
    close_all(others)


def test_jam_is_refunded_in_plain_words(world: World) -> None:
    page = open_screen(world, "portrait")
    wait_view(page, "products")
    world.simulator.set_fault("jam", True)
    try:
        tap_product(page, "Cola")
        wait_view(page, "pay")
        order_id = page.url.rsplit("/", 1)[1]
        others = mirrors(world, page)
        world.pay(order_id)
        wait_view(page, "result", "refunded", timeout=30_000)
    finally:
        world.simulator.set_fault("jam", False)
    text = page.locator("#view-result").inner_text()
    assert "¥3.50 has been refunded to the account you paid with" in text
    assert f"Order reference: {order_id[-6:].upper()}" in text
    assert "refunded" == world.order(order_id)["state"]
    for internal in ("jammed", "409", "Error", "backend"):  # as words: the reference may hold "409"
        assert not re.search(rf"\b{internal}\b", text), internal
    shot_all(page, others, "refunded", "result", "refunded")
    page.context.close()
    close_all(others)


def test_cancel_returns_to_the_products(world: World) -> None:
    page = open_screen(world, "phone")
    wait_view(page, "products")
    tap_product(page, "Green tea")
    wait_view(page, "pay")
    order_id = page.url.rsplit("/", 1)[1]
    page.locator("#cancel").click()
    wait_view(page, "products")
    assert page.url.endswith("/")
    assert world.order(order_id)["state"] == "cancelled"
    page.context.close()


def test_declined_payment_shows_cancelled_then_products(world: World) -> None:
    page = open_screen(world, "portrait")
    wait_view(page, "products")
    tap_product(page, "Green tea")
    wait_view(page, "pay")
    order_id = page.url.rsplit("/", 1)[1]
    others = mirrors(world, page)
    httpx.post(f"{world.url}/sandbox/orders/{order_id}/decline", timeout=10)
    wait_view(page, "result", "cancelled")
    assert "Nothing was charged" in page.locator("#result-text").inner_text()
    shot_all(page, others, "cancelled", "result", "cancelled")
    wait_view(page, "products")
    page.context.close()
    close_all(others)


# --- the code keypad ------------------------------------------------------------------------


def key_in(page: Any, digits: str) -> None:
    for digit in digits:
        page.locator(f"[data-key='{digit}']").click()


@pytest.mark.parametrize("size", ["portrait", "phone", "landscape"])
def test_code_keypad(world: World, size: str) -> None:
    page = open_screen(world, size)
    wait_view(page, "products")
    page.locator("#to-code").click()
    wait_view(page, "code")
    assert page.locator("#slots .slot").count() == 10
    assert small_targets(page) == []
    key_in(page, "12345")
    assert page.locator("#key-ok").is_disabled()  # too short: nothing is sent
    shot(page, size, "code-keypad")
    page.locator("#key-del").click()
    assert page.locator("#slots .filled").count() == 4
    for _ in range(4):
        page.locator("#key-del").click()
    wrong = "".join(secrets.choice("0123456789") for _ in range(10))
    key_in(page, wrong)
    page.locator("#key-ok").click()
    page.get_by_text("This code is not valid").wait_for()
    shot(page, size, "code-wrong")
    code = world.code()
    key_in(page, code)
    page.locator("#key-ok").click()
    wait_view(page, "result", "delivered")
    wait_view(page, "products")
    page.locator("#to-code").click()
    key_in(page, code)
    page.locator("#key-ok").click()
    page.get_by_text("This code has already been used").wait_for()
    assert "409" not in page.locator("main").inner_text()
    shot(page, size, "code-used")
    wait_view(page, "products")  # the keypad left alone returns to the products too
    page.context.close()


# --- outages --------------------------------------------------------------------------------


def test_backend_outage_keeps_the_qr_and_recovers(world: World) -> None:
    """The backend goes away for a while: the product list turns to "out of service", the
    payment page keeps its QR and says it is retrying; both recover by themselves, and the
    order is still paid and delivered."""
    products = open_screen(world, "portrait")
    wait_view(products, "products")
    landscape = open_screen(world, "landscape")
    wait_view(landscape, "products")
    payment = open_screen(world, "phone")
    wait_view(payment, "products")
    tap_product(payment, "Green tea")
    wait_view(payment, "pay")
    order_id = payment.url.rsplit("/", 1)[1]
    world.stop_backend()
    try:
        wait_view(products, "service", timeout=30_000)
        payment.locator("#reconnecting").wait_for(state="visible", timeout=30_000)
        assert payment.locator("#qr").is_visible()
        assert "Errno" not in payment.locator("main").inner_text()
        shot(products, "portrait", "out-of-service")
        wait_view(landscape, "service", timeout=30_000)
        shot(landscape, "landscape", "out-of-service")
        payment.reload()  # the kiosk browser restarts mid-outage: it waits for the order
        wait_view(payment, "service")
    finally:
        world.start_backend()
    wait_view(products, "products", timeout=30_000)
    wait_view(payment, "pay", timeout=30_000)
    payment.wait_for_function("i => i.complete && i.naturalWidth > 0",
                              arg=payment.locator("#qr").element_handle())
    assert payment.locator("#reconnecting").is_hidden()
    world.pay(order_id)
    wait_view(payment, "result", "delivered")
    for page in (products, payment, landscape):
        page.context.close()


def test_silent_board_is_out_of_service(world: World) -> None:
    page = open_screen(world, "phone")
    wait_view(page, "products")
    world.simulator.set_fault("silent", True)
    try:
        wait_view(page, "service", timeout=60_000)
        shot(page, "phone", "out-of-service")
    finally:
        world.simulator.set_fault("silent", False)
    wait_view(page, "products", timeout=60_000)
    page.context.close()


def test_cash_credit_buys_on_a_tap(world: World) -> None:
    """A machine with a note validator: the credit shows in the bar, a tile the credit covers
    sells for cash on a tap, and the change comes back on a button."""
    config = world.tmp / "cash.toml"
    config.write_text((world.tmp / "machine.toml").read_text()
                      .replace('machine_id = "m1"', 'machine_id = "m2"')
                      .replace('data_dir = "data"', 'data_dir = "cash-data"') + """
[[cash]]
protocol = "ssp"
port = "sim://ssp?speed=50"
options = { reply_timeout = "0.2", retries = "3" }
""")
    agent = Agent(AgentConfig.load(config))
    agent.start()
    try:
        assert agent.cash is not None and agent.screen is not None
        sim = agent.cash.acceptor.devices[0].transport.simulator  # type: ignore[attr-defined]
        page = new_page(world, "portrait")
        page.goto(agent.screen.url + "/")
        wait_view(page, "products")
        sim.insert_note(1)  # 5.00
        page.get_by_text("Credit: ¥5.00").wait_for(timeout=30_000)
        tea = page.locator(".tile", has_text="Green tea")
        tea.get_by_text("Pay with cash").wait_for()
        shot(page, "portrait", "cash-credit")
        tea.click()
        wait_view(page, "result", "delivered")
        wait_view(page, "products")
        page.get_by_text("Credit: ¥2.00").wait_for()
        assert page.locator(".tile", has_text="Green tea").locator(".badge").count() == 0
        page.locator("#change").click()
        # The simulated validator holds notes only: it cannot pay 2.00 back. The payout was
        # journaled before it was tried, so the credit is gone from the screen and an
        # operator settles it; the customer is told so in plain words.
        wait_view(page, "result", "error")
        assert page.locator("#result-text").inner_text().startswith(
            "Sorry, your change could not be paid out. Staff have been notified")
        shot(page, "portrait", "cash-change-failed")
        wait_view(page, "products")
        page.get_by_text("Credit: ¥0.00").wait_for()
        page.context.close()
    finally:
        agent.close()
    rows = world.operator("GET", "/orders", params={"machine": "m2"})
    rows = rows["orders"] if isinstance(rows, dict) else rows
    assert [(o["kind"], o["state"], o["amount"]) for o in rows] == [("cash", "delivered", 300)]


def test_expiry(world: World, expiring: tuple[Any, list]) -> None:
    """Last in the module: the order left alone at the start has expired by now (or soon)."""
    page, others = expiring
    order_id = page.evaluate("document.getElementById('qr').dataset.order")
    for each in [page] + [other for _, other in others]:
        # Each page showed "expired" by itself, then went back to the products.
        each.wait_for_function("window.__states.includes('expired')", timeout=60_000)
        wait_view(each, "products")
    assert world.order(order_id)["state"] == "expired"
    for size, each in [("portrait", page), *others]:  # the result again, for its picture
        each.goto(f"{world.screen}/order/{order_id}")
        wait_view(each, "result", "expired")
        assert each.locator("#result-title").inner_text() == "The time to pay ran out"
        assert each.locator("#result-text").inner_text() == "Nothing was charged."
        shot(each, size, "expired")
