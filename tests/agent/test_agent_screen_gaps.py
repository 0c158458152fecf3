"""The screen's gaps closed: pictures from the catalogue's ``image_url`` (backend -> agent
cache -> screen, offline), and slots the board found empty shown sold out."""

from __future__ import annotations

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

