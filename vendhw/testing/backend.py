"""An in-process backend for tests: the real app, a fake clock, no sockets.

Used by vendhw's own tests and meant for integrators' (and the machine agent's) tests too::

    server = InProcessServer(tmp_path / "b.db")
    server.add_machine("m1", slots={"A1": ("cola", 350)})
    client = server.client("m1")            # a real BackendClient over the ASGI app
    order = client.create_order("A1")
    server.pay(order.id)                    # the sandbox's Pay button
    [ship] = client.next_instructions(wait=0)

Time moves only through :meth:`advance`, which also runs the background pass (queries,
expiry, refunds) the way the app's loop would.
"""

from __future__ import annotations

import secrets
import warnings
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

with warnings.catch_warnings():  # newer Starlette nudges towards httpx2; httpx still works
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from vendhw.client import BackendClient
from vendhw.server.app import create_app
from vendhw.server.service import Backend
from vendhw.server.settings import Clock, FakeClock, ServerSettings

OPERATOR_TOKEN = "test-operator-token"
BASE_URL = "http://testserver"


class InProcessServer:
    """The app behind a TestClient, with helpers for the operator's and customer's sides."""

    def __init__(self, db: str | Path | None = None, *, clock: Clock | None = None,
                 http: httpx.Client | None = None, **overrides: Any) -> None:
        url = "sqlite://" if db is None else f"sqlite:///{db}"
        self.clock: Clock = clock or FakeClock()
        options: dict[str, Any] = {"db_url": url, "operator_token": OPERATOR_TOKEN,
                                   "run_poller": False, "public_url": BASE_URL}
        options.update(overrides)
        self.settings = ServerSettings(**options)
        self.app: FastAPI = create_app(self.settings, clock=self.clock, http=http)
        self.backend: Backend = self.app.state.backend
        self.http = TestClient(self.app, base_url=BASE_URL)
        self.secrets: dict[str, str] = {}

    @property
    def operator_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.operator_token}"}

    def operator(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """An operator API call (bearer token added)."""
        return self.http.request(method, path, headers=self.operator_headers, **kwargs)

    def add_machine(self, machine_id: str = "m1", *, secret: str | None = None,
                    slots: dict[str, tuple[str, int]] | None = None,
                    currency: str = "CNY") -> str:
        """Register a machine with ``{slot: (product, price)}``; returns its secret."""
        secret = secret or secrets.token_hex(16)
        slots = slots if slots is not None else {"A1": ("cola", 350), "A2": ("chips", 500)}
        products = sorted({product for product, _ in slots.values()})
        document = {
            "currency": currency,
            "products": [{"id": p, "name": p.title()} for p in products],
            "machines": [{"id": machine_id, "secret": secret, "slots": [
                {"slot": slot, "product": product, "price": price}
                for slot, (product, price) in slots.items()]}],
        }
        response = self.operator("POST", "/operator/v1/catalogue", json=document)
        response.raise_for_status()
        self.secrets[machine_id] = secret
        return secret

    def client(self, machine_id: str = "m1", **options: Any) -> BackendClient:
        """A real :class:`BackendClient` for a registered machine, over the in-process app."""
        options.setdefault("clock", self.clock.now)
        options.setdefault("backoff", 0.0)
        return BackendClient(BASE_URL, machine_id, self.secrets[machine_id], http=self.http,
                             **options)

    def pay(self, order_id: str, notify: int = 1) -> httpx.Response:
        """The sandbox's Pay button (``notify=0`` loses the notification)."""
        return self.http.post(f"/sandbox/orders/{order_id}/pay", params={"notify": notify})

    def decline(self, order_id: str, notify: int = 1) -> httpx.Response:
        return self.http.post(f"/sandbox/orders/{order_id}/decline", params={"notify": notify})

    def state(self, order_id: str) -> str:
        return str(self.backend.get_order(order_id)["state"])

    def advance(self, seconds: float) -> float | None:
        """Move the (fake) clock and run the background pass once; returns its next-due delay."""
        if not isinstance(self.clock, FakeClock):
            raise TypeError("advance() needs the server's FakeClock")
        self.clock.advance(seconds)
        return self.backend.run_due_work()

    def close(self) -> None:
        self.http.close()
        self.backend.close()


__all__ = ["BASE_URL", "OPERATOR_TOKEN", "InProcessServer"]
