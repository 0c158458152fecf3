"""The screen's gaps closed: pictures from the catalogue's ``image_url`` (backend -> agent
cache -> screen, offline), and slots the board found empty shown sold out."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_agent_screen import write_config

from vendhw.agent.demo import _free_port, _wait_ready
from vendhw.agent.runner import Agent, AgentConfig


@dataclass
class Backend:
    url: str
    token: str
    secret: str
    proc: subprocess.Popen[bytes]

    def catalogue(self, doc: dict[str, Any]) -> None:
        httpx.post(f"{self.url}/operator/v1/catalogue", timeout=10, json=doc,
                   headers={"Authorization": f"Bearer {self.token}"}).raise_for_status()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[Backend]:
    port, token, secret = _free_port(), secrets.token_hex(8), secrets.token_hex(16)
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "backend.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vendhw", "backend", "serve", "--db",
         f"sqlite:///{tmp_path / 'b.db'}", "--host", "127.0.0.1", "--port", str(port),
         "--operator-token", token, "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=log.open("w"))
    b = Backend(url, token, secret, proc)
    try:
        _wait_ready(url, proc, log)  # type: ignore[arg-type]
        yield b
    finally:
        b.stop()

PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00"
       b"\x00\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\xcf\xc0\xf0\x1f\x00\x05\x00\x01\xff"
       b"\x89\x99=\x1d\x00\x00\x00\x00IEND\xaeB`\x82")


@pytest.fixture
def pictures() -> Iterator[tuple[str, list[str], ThreadingHTTPServer]]:
    """A tiny picture server on 127.0.0.1 (the operator's CDN); records what it served."""
    served: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            served.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(PNG)))
            self.end_headers()
            self.wfile.write(PNG)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", served, httpd
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_catalogue_picture_is_cached_and_served_offline(
        tmp_path: Path, backend: Backend,
        pictures: tuple[str, list[str], ThreadingHTTPServer]) -> None:
    base, served, httpd = pictures
    backend.catalogue({
        "products": [{"id": "tea", "name": "Green tea", "price": 300,
                      "image_url": f"{base}/cdn/tea.png"}],
        "machines": [{"id": "m1", "secret": backend.secret,
                      "slots": [{"slot": "1", "product": "tea"}]}]})
    agent = Agent(AgentConfig.load(write_config(tmp_path, backend.url, backend.secret)))
    agent.start()
    try:
        assert agent.screen is not None
        screen = httpx.Client(base_url=agent.screen.url, timeout=10)
        state = screen.get("/api/state").json()
        assert [(p["product_id"], p["image"]) for p in state["products"]] == [
            ("tea", "/img/tea")]
        first = screen.get("/img/tea")  # what the page's <img> asks for
        assert first.status_code == 200 and first.content == PNG
        assert first.headers["content-type"] == "image/png"
        assert served == ["/cdn/tea.png"]
        assert (tmp_path / "data" / "screen-images" / "tea.png").read_bytes() == PNG
        screen.get("/img/tea")
        assert served == ["/cdn/tea.png"]  # downloaded once
        httpd.shutdown()  # the picture's server and the backend both gone
        backend.stop()
        again = screen.get("/img/tea")
        assert again.status_code == 200 and again.content == PNG
        assert screen.get("/api/state").json()["ok"] is False  # the backend is really away
        screen.close()
    finally:
        agent.close()



def _wait_final(screen: httpx.Client, order_id: str) -> dict[str, Any]:
    for _ in range(400):
        order = screen.get(f"/api/orders/{order_id}").json()
        if order.get("final"):
            return order
        threading.Event().wait(0.05)
    raise AssertionError(f"order {order_id} never finished: {order}")


def _sold_out(screen: httpx.Client) -> dict[str, bool]:
    return {p["slot"]: p["sold_out"] for p in screen.get("/api/state").json()["products"]}


def test_a_slot_the_board_finds_empty_is_sold_out_until_cleared(
        tmp_path: Path, backend: Backend) -> None:
    backend.catalogue({
        "products": [{"id": "tea", "name": "Green tea", "price": 300},
                     {"id": "cola", "name": "Cola", "price": 350}],
        "machines": [{"id": "m1", "secret": backend.secret, "slots": [
            {"slot": "11", "product": "tea"}, {"slot": "12", "product": "cola"}]}]})
    config = write_config(tmp_path, backend.url, backend.secret)
    # The FAFB lift board says "out of stock" (Easivend's column board cannot tell an empty
    # column from a product that did not drop: not_dropped, no sold-out mark).
    config.write_text(config.read_text().replace('profile = "easivend-column"',
                                                 'profile = "fafb-lift"').replace(
        'sim://easivend-column?inventory=2', 'sim://fafb-lift?inventory=2'))
    agent = Agent(AgentConfig.load(config))
    agent.start()
    try:
        assert agent.screen is not None
        screen = httpx.Client(base_url=agent.screen.url, timeout=10)
        assert _sold_out(screen) == {"11": False, "12": False}
        board = agent.machine.board.transport.simulator  # type: ignore[attr-defined]
        board.set_fault("empty", True)
        order = screen.post("/api/orders", json={"slot": "11"}).json()
        httpx.post(f"{backend.url}/sandbox/orders/{order['id']}/pay",
                   timeout=10).raise_for_status()
        assert _wait_final(screen, order["id"])["state"] == "refunded"
        board.set_fault("empty", False)
        assert _sold_out(screen) == {"11": True, "12": False}
        refused = screen.post("/api/orders", json={"slot": "11"})
        assert refused.status_code == 400 and refused.json() == {"error": "bad_request"}
        assert [p["slot"] for p in screen.get("/api/products").json()] == ["12"]
        screen.close()
    finally:
        agent.close()
    agent = Agent(AgentConfig.load(config))  # a restart keeps it
    agent.start()
    try:
        assert agent.screen is not None
        screen = httpx.Client(base_url=agent.screen.url, timeout=10)
        assert _sold_out(screen) == {"11": True, "12": False}
        cli = [sys.executable, "-m", "vendhw", "machine", "sold-out", "--config", str(config)]
        listed = subprocess.run([*cli, "--json"], capture_output=True, text=True, timeout=60)
        assert listed.returncode == 0, listed.stderr
        (row,) = [json.loads(line) for line in listed.stdout.splitlines()]
        assert row["slot"] == "11" and row["vend_id"]
        cleared = subprocess.run([*cli, "--clear", "11", "--clear", "12"], capture_output=True,
                                 text=True, timeout=60)
        assert cleared.returncode == 0, cleared.stderr
        assert cleared.stdout.splitlines() == ["slot 11: cleared", "slot 12: was not sold out"]
        assert _sold_out(screen) == {"11": False, "12": False}  # the running agent sees it
        order = screen.post("/api/orders", json={"slot": "11"}).json()
        httpx.post(f"{backend.url}/sandbox/orders/{order['id']}/pay",
                   timeout=10).raise_for_status()
        assert _wait_final(screen, order["id"])["state"] == "delivered"
        assert _sold_out(screen) == {"11": False, "12": False}
        screen.close()
    finally:
        agent.close()
    bad = subprocess.run([*cli, "--clear", "11", "--all"], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "error: give --clear SLOT or --all, not both"]


@pytest.mark.parametrize("configured", [None, 12])
def test_code_length_comes_from_the_backend_unless_configured(
        tmp_path: Path, configured: int | None) -> None:
    from vendhw.agent.screen import ScreenModel
    from vendhw.errors import ConfigurationError
    from vendhw.testing.backend import InProcessServer

    server = InProcessServer(code_digits=8)
    server.add_machine("m1", slots={"1": ("tea", 300)})
    config = write_config(tmp_path, "http://127.0.0.1:9", server.secrets["m1"])
    if configured is not None:
        config.write_text(config.read_text() + f"\n[screen]\ncode_length = {configured}\n")
    agent = Agent(AgentConfig.load(config))
    try:
        agent.client.close()
        agent.client = server.client(outbox=tmp_path / "outbox2.db")
        assert agent.client.catalogue()["code_digits"] == 8
        model = ScreenModel(agent, agent.config.screen)
        expected = configured or 8
        assert model.state()["code_length"] == expected
        with pytest.raises(ConfigurationError, match=f"a code has {expected} digits"):
            model.redeem("1" * 10)
    finally:
        agent.close()
        server.close()
