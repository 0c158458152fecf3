"""The machine agent and its screen, over HTTP, against a real backend process."""

from __future__ import annotations

import json
import logging
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from vendhw.agent.demo import _free_port, _wait_ready
from vendhw.agent.runner import Agent, AgentConfig
from vendhw.errors import ConfigurationError


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    port, token, secret = _free_port(), secrets.token_hex(8), secrets.token_hex(16)
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "backend.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vendhw", "backend", "serve", "--db",
         f"sqlite:///{tmp_path / 'b.db'}", "--host", "127.0.0.1", "--port", str(port),
         "--operator-token", token, "--query-interval", "200ms", "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=log.open("w"))
    try:
        _wait_ready(url, proc, log)  # type: ignore[arg-type]
        httpx.post(f"{url}/operator/v1/catalogue", headers={"Authorization": f"Bearer {token}"},
                   json={"products": [{"id": "tea", "name": "Green tea", "price": 300}],
                         "machines": [{"id": "m1", "secret": secret, "slots": [
                             {"slot": "1", "product": "tea", "price": 300}]}]},
                   timeout=10).raise_for_status()
        yield url, token, secret
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def write_config(tmp_path: Path, url: str, secret: str, screen_port: int = 0) -> Path:
    path = tmp_path / "machine.toml"
    path.write_text(f'''
[backend]
url = "{url}"
machine_id = "m1"
secret = "{secret}"

[board]
profile = "easivend-column"
port = "sim://easivend-column?inventory=2"

[agent]
data_dir = "data"
screen_port = {screen_port}
''')
    return path


def wait_for(client: httpx.Client, path: str, text: str, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    page = ""
    while time.monotonic() < deadline:
        page = client.get(path).text
        if text in page:
            return page
        time.sleep(0.1)
    return page


def wait_state(client: httpx.Client, order_id: str, state: str, timeout: float = 20.0
               ) -> dict:
    deadline = time.monotonic() + timeout
    view: dict = {}
    while time.monotonic() < deadline:
        view = client.get(f"/api/orders/{order_id}").json()
        if view.get("state") == state:
            break
        time.sleep(0.1)
    return view


@pytest.mark.timeout(120)
def test_buy_pay_and_deliver_through_the_screen(tmp_path: Path, backend: tuple) -> None:
    url, token, secret = backend
    agent = Agent(AgentConfig.load(write_config(tmp_path, url, secret)))
    agent.start()
    try:
        assert agent.screen is not None
        with httpx.Client(base_url=agent.screen.url, timeout=10) as web:
            home = web.get("/")
            assert home.status_code == 200 and 'lang="zh-CN"' in home.text
            assert "width=device-width" in home.text and "/static/screen.js" in home.text
            state = web.get("/api/state").json()
            assert state["ok"] and state["cash"] is None
            assert [(p["name"], p["price"], p["sold_out"]) for p in state["products"]] == [
                ("Green tea", 300, False)]
            bought = web.post("/api/orders", json={"slot": "1"})
            assert bought.status_code == 201
            view = bought.json()
            assert view["state"] == "awaiting_payment" and view["product_name"] == "Green tea"
            assert view["provider"] == "sandbox" and view["pay_url"].endswith(view["id"])
            assert 0 < view["seconds_left"] <= view["seconds_total"]
            svg = web.get(f"/qr/{view['id']}.svg")
            assert svg.headers["content-type"] == "image/svg+xml" and b"<svg" in svg.content
            httpx.post(f"{url}/sandbox/orders/{view['id']}/pay", timeout=10).raise_for_status()
            done = wait_state(web, view["id"], "delivered")
            assert done["final"] and done["pay_url"] is None and done["ref"] == \
                view["id"][-6:].upper()

            code = httpx.post(f"{url}/operator/v1/codes", json={"product": "tea"}, timeout=10,
                              headers={"Authorization": f"Bearer {token}"}).json()["codes"][0]
            keyed = web.post("/api/codes", json={"code": code["code"]})
            assert keyed.status_code == 201
            assert wait_state(web, keyed.json()["id"], "delivered")["state"] == "delivered"
            again = web.post("/api/codes", json={"code": code["code"]})
            assert (again.status_code, again.json()) == (409, {"error": "code_used"})
            short = web.post("/api/codes", json={"code": "123"})
            assert (short.status_code, short.json()) == (400, {"error": "bad_request"})
            # Bad input: one word back, never a traceback or a 500.
            for method, path, body, status, word in [
                    ("POST", "/api/orders", {}, 400, "bad_request"),
                    ("POST", "/api/orders", {"slot": "99"}, 409, "unknown_slot"),
                    ("GET", "/api/orders/vo-nope", None, 404, "unknown_order"),
                    ("POST", "/api/orders/vo-nope/cancel", {}, 404, "unknown_order"),
                    ("POST", "/api/nothing", {}, 404, "not_found")]:
                answer = web.request(method, path, json=body)
                assert (answer.status_code, answer.json()) == (status, {"error": word}), path
            garbled = web.post("/api/codes", content=b"{not json",
                               headers={"Content-Type": "application/json"})
            assert (garbled.status_code, garbled.json()) == (400, {"error": "bad_request"})
            assert web.get("/static/../runner.py").status_code == 404
            assert web.get("/img/..%2Fsecret").status_code == 404
            # The first screen's form posts still work for scripts that use them.
            legacy = web.post("/code", data={"code": code["code"]})
            assert legacy.status_code == 400 and "already been used" in legacy.text
            assert "409" not in legacy.text and "code_used" not in legacy.text
    finally:
        agent.close()
    from vendhw.machine import Machine

    with Machine("easivend-column", "sim://easivend-column",
                 journal=tmp_path / "data" / "vends.db") as again:
        assert [r.outcome for r in again.history()].count("delivered") == 2


def test_config_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no configuration file"):
        AgentConfig.load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text('[backend]\nurl = "http://x"\nmachine_id = "m"\n')
    with pytest.raises(ConfigurationError, match="secret"):
        AgentConfig.load(bad)


@pytest.mark.timeout(60)
def test_machine_run_command(tmp_path: Path, backend: tuple) -> None:
    url, _, secret = backend
    config = write_config(tmp_path, url, secret, screen_port=_free_port())
    proc = subprocess.Popen([sys.executable, "-m", "vendhw", "machine", "run", "--config",
                             str(config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("screen at http://127.0.0.1:")
        screen = line.split("screen at ", 1)[1].strip()
        state = httpx.get(screen + "/api/state", timeout=10).json()
        assert [p["name"] for p in state["products"]] == ["Green tea"]
        products = json.loads(httpx.get(screen + "/api/products", timeout=10).text)
        assert products == [{"slot": "1", "name": "Green tea", "price": 300, "currency": "CNY"}]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.timeout(120)
def test_cash_sale_through_the_screen_is_booked_by_the_backend(tmp_path: Path,
                                                                backend: tuple) -> None:
    url, token, secret = backend
    config = write_config(tmp_path, url, secret)
    config.write_text(config.read_text() + '''
[[cash]]
protocol = "ssp"
port = "sim://ssp?speed=50"
options = { reply_timeout = "0.2", retries = "3" }
''')
    agent = Agent(AgentConfig.load(config))
    agent.start()
    try:
        assert agent.cash is not None and agent.screen is not None
        sim = agent.cash.acceptor.devices[0].transport.simulator  # type: ignore[attr-defined]
        sim.insert_note(1)  # EUR 5.00
        with httpx.Client(base_url=agent.screen.url, timeout=10) as web:
            assert '"cash": 500' in wait_for(web, "/api/state", '"cash": 500')
            sold = web.post("/api/cash/buy", json={"slot": "1"})
            assert sold.status_code == 200 and sold.json()["state"] == "delivered"
            assert web.get("/api/state").json()["cash"] == 200
        headers = {"Authorization": f"Bearer {token}"}
        orders = httpx.get(f"{url}/operator/v1/orders", headers=headers, timeout=10).json()
        rows = orders["orders"] if isinstance(orders, dict) else orders
        cash_orders = [o for o in rows if o["kind"] == "cash"]
        assert [(o["state"], o["amount"]) for o in cash_orders] == [("delivered", 300)]
    finally:
        agent.close()


@pytest.mark.timeout(60)
def test_a_loopback_qr_is_warned(tmp_path: Path, backend: tuple,
                                 caplog: pytest.LogCaptureFixture) -> None:
    """The backend serves on 127.0.0.1 without --public-url: its start says the QR would
    point at a loopback address, and the agent says so at the first QR it shows."""
    url, _, secret = backend
    assert "loopback address no phone can reach" in (tmp_path / "backend.log").read_text()
    agent = Agent(AgentConfig.load(write_config(tmp_path, url, secret)))
    agent.start()
    try:
        assert agent.screen is not None
        with caplog.at_level(logging.WARNING, logger="vendhw.agent.screen"):
            httpx.post(agent.screen.url + "/api/orders", json={"slot": "1"}, timeout=10)
            httpx.post(agent.screen.url + "/api/orders", json={"slot": "1"}, timeout=10)
        warnings = [r.getMessage() for r in caplog.records if "loopback" in r.getMessage()]
        assert len(warnings) == 1 and "--public-url" in warnings[0]
    finally:
        agent.close()


def test_loopback_urls() -> None:
    from vendhw.agent.screen import is_loopback_url

    for url in ("http://127.0.0.1:8080/sandbox/pay/x", "http://localhost/p", "http://[::1]:80/",
                "http://127.8.0.3/"):
        assert is_loopback_url(url), url
    for url in ("https://pay.example.com/x", "http://192.168.1.20:8080/", "weixin://wxpay/x"):
        assert not is_loopback_url(url), url


def test_screen_config(tmp_path: Path) -> None:
    path = write_config(tmp_path, "http://127.0.0.1:9", "s3cret")
    default = AgentConfig.load(path).screen
    assert (default.language, default.idle_seconds, default.code_length) == ("zh-CN", 15, 10)
    assert default.cache_dir == tmp_path / "data" / "screen-images"
    path.write_text(path.read_text() + '[screen]\nlanguage = "en"\nidle_timeout = 4.5\n'
                    'images = "pics"\ncode_length = 8\n')
    screen = AgentConfig.load(path).screen
    assert (screen.language, screen.idle_seconds, screen.code_length) == ("en", 4.5, 8)
    assert screen.images == tmp_path / "pics"
    base = write_config(tmp_path, "http://127.0.0.1:9", "s3cret").read_text()
    for table, message in [('language = "fr"', "language must be one of zh-CN, en"),
                           ("idle_timeout = 0", "idle_timeout must be 1..3600"),
                           ('idle_timeout = "soon"', "are numbers"),
                           ("code_length = 2", "code_length must be 4..32"),
                           ("colour = 1", "unknown [screen] keys ['colour']")]:
        path.write_text(f"{base}[screen]\n{table}\n")
        with pytest.raises(ConfigurationError, match=re.escape(message)):
            AgentConfig.load(path)


def test_catalogue_pictures_are_cached_for_offline(tmp_path: Path) -> None:
    """A picture the catalogue links is fetched once, then served from the machine's disk
    (the link may be gone); the operator's folder wins over a link."""
    png = b"\\x89PNG\\r\\n\\x1a\\n" + b"\\0" * 32
    served: list[str] = []

    class Pictures(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            served.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(png)))
            self.end_headers()
            self.wfile.write(png)

        def log_message(self, *args: object) -> None:
            pass

    pictures = ThreadingHTTPServer(("127.0.0.1", 0), Pictures)
    threading.Thread(target=pictures.serve_forever, daemon=True).start()
    link = f"http://127.0.0.1:{pictures.server_address[1]}/tea"
    (tmp_path / "own").mkdir()
    (tmp_path / "own" / "cola.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")

    class Catalogue:
        def screen_products(self) -> list[dict]:
            return [{"slot": "1", "product_id": "tea", "name": "Tea", "price": 300,
                     "currency": "CNY", "image_url": link},
                    {"slot": "2", "product_id": "cola", "name": "Cola", "price": 350,
                     "currency": "CNY", "image_url": link + "?cola"},
                    {"slot": "3", "product_id": "../etc", "name": "Bad", "price": 1,
                     "currency": "CNY"}]

    from vendhw.agent.screen import ScreenModel, ScreenSettings

    settings = ScreenSettings(images=tmp_path / "own", cache_dir=tmp_path / "cache")
    model = ScreenModel(Catalogue(), settings)  # type: ignore[arg-type]
    try:
        images = {p["product_id"]: p["image"] for p in model.products()}
        assert images == {"tea": "/img/tea", "cola": "/img/cola", "../etc": None}
        assert model.image("tea") == tmp_path / "cache" / "tea.png"
        assert model.image("cola") == tmp_path / "own" / "cola.svg"
        assert model.image("../etc") is None
    finally:
        pictures.shutdown()
        pictures.server_close()
    assert model.image("tea") == tmp_path / "cache" / "tea.png"  # offline now
    assert (tmp_path / "cache" / "tea.png").read_bytes() == png and served == ["/tea"]


@pytest.mark.timeout(120)
def test_regression_no_reload_no_internals(tmp_path: Path, backend: tuple) -> None:
    """Regression (first screen): the order page reloaded itself every second (the QR blinked
    out), had no viewport or lang, and a refused code showed ``backend refused (409
    code_used)``. Only the first screen's addresses are used, so this runs on both."""
    url, token, secret = backend
    agent = Agent(AgentConfig.load(write_config(tmp_path, url, secret)))
    agent.start()
    try:
        assert agent.screen is not None
        with httpx.Client(base_url=agent.screen.url, timeout=10) as web:
            bought = web.post("/buy", data={"slot": "1"})
            assert bought.status_code == 303
            page = web.get(bought.headers["location"]).text
            assert "http-equiv" not in page.lower()  # no meta refresh: the page never reloads
            assert 'name="viewport"' in page and '<html lang="' in page
            code = httpx.post(f"{url}/operator/v1/codes", json={"product": "tea"}, timeout=10,
                              headers={"Authorization": f"Bearer {token}"}).json()["codes"][0]
            first = web.post("/code", data={"code": code["code"]}).headers["location"]
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and httpx.get(
                    f"{url}/operator/v1/orders/{first.rsplit('/', 1)[1]}", timeout=10,
                    headers={"Authorization": f"Bearer {token}"}).text.count('"delivered"') == 0:
                time.sleep(0.1)
            used = web.post("/code", data={"code": code["code"]}).text
            assert "already been used" in used
            for internal in ("409", "code_used", "backend refused", "Errno"):
                assert internal not in used
    finally:
        agent.close()
