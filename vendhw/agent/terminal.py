"""The customer screen in a terminal, for controllers without a browser (or over SSH).

``vendhw machine run --config machine.toml --terminal`` runs it in the foreground: the
product list (numbered), the payment QR drawn with UTF-8 half blocks and a countdown, the code
entry, cash credit and change when cash devices are configured, and each sale's result. It
talks to the same :class:`~vendhw.agent.runner.Agent` methods as the web page, so both show
the same thing; input and output are injectable, which is how the tests drive it.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from vendhw.agent.screen import FINAL, MESSAGES, cash_balance

WAIT_POLL = 1.0
"""Seconds between order-status checks while a sale is in progress."""
COUNTDOWN_EVERY = 10
"""Print the time left every this many seconds while waiting for a payment."""


def terminal_qr(text: str) -> str:
    """The QR code as UTF-8 half blocks, for a terminal."""
    import qrcode

    qr = qrcode.QRCode(border=1)
    qr.add_data(text)
    out = io.StringIO()
    qr.print_ascii(out=out)
    return out.getvalue()


def _money(amount: int, currency: str = "") -> str:
    return f"{amount / 100:.2f}" + (f" {currency}" if currency else "")


class TerminalScreen:
    """A line-oriented kiosk: one question, one answer, results as they happen."""

    def __init__(self, agent: Any, *, console: Console | None = None,
                 ask: Callable[[str], str] | None = None, poll: float = WAIT_POLL,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.agent = agent
        self.console = console or Console()
        self.ask = ask or (lambda prompt: self.console.input(prompt))
        self.poll = poll
        self.sleep = sleep

    def run(self) -> None:
        """Serve customers until they type ``q`` (or input ends)."""
        while True:
            products = self.show_products()
            try:
                choice = self.ask("Number to buy, c = code, r = change, q = quit: ").strip()
            except EOFError:
                return
            if choice.lower() in ("q", "quit"):
                return
            try:
                self.handle(choice, products)
            except KeyboardInterrupt:
                self.console.print("[yellow]cancelled[/]")
            except Exception as exc:  # a refused code, a backend error: say it, keep selling
                self.console.print(f"[red]Sorry: {exc}[/]")

    def handle(self, choice: str, products: list[dict[str, Any]]) -> None:
        lowered = choice.lower()
        if lowered == "c":
            code = self.ask("Your code: ").strip()
            self.follow(self.agent.redeem(code))
        elif lowered == "r":
            paid = self.agent.return_change()
            self.console.print(f"Please take your change: {_money(paid)}" if paid
                               else "No change to return.")
        elif lowered.startswith("$") and lowered[1:].strip().isdigit():
            product = self._pick(lowered[1:].strip(), products)
            sale = self.agent.buy_cash(product["slot"])
            text = {"delivered": MESSAGES["delivered"],
                    "refunded": "Sorry, the product could not be delivered. Your credit was "
                                "returned."}.get(sale.state, MESSAGES["needs_review"])
            self.console.print(f"[bold]{text}[/]")
        elif lowered.isdigit():
            product = self._pick(lowered, products)
            self.follow(self.agent.buy(product["slot"]))
        else:
            self.console.print("Please type a product number, c, r or q.")

    def _pick(self, number: str, products: list[dict[str, Any]]) -> dict[str, Any]:
        index = int(number) - 1
        if not 0 <= index < len(products):
            raise ValueError(f"there is no product {number}")
        return products[index]

    def show_products(self) -> list[dict[str, Any]]:
        products = self.agent.products()
        table = Table(title="Choose a product")
        table.add_column("#", justify="right")
        table.add_column("Product")
        table.add_column("Price", justify="right")
        for i, product in enumerate(products, 1):
            table.add_row(str(i), product["name"], _money(product["price"],
                                                          product.get("currency", "")))
        self.console.print(table)
        balance = cash_balance(self.agent)
        if balance is not None:
            self.console.print(f"Credit: {_money(balance)}  (type $ and a number to pay "
                               "with it)")
        return products

    def follow(self, order: Any) -> str:
        """Show an order until it ends: its QR while unpaid, then progress, then the result."""
        shown_qr = False
        last_state = ""
        last_count = None
        while True:
            state = order.state
            if state == "awaiting_payment" and order.qr_text and not shown_qr:
                self.console.print(terminal_qr(order.qr_text), highlight=False)
                self.console.print(f"Scan to pay {_money(order.amount, order.currency)}")
                shown_qr = True
            if state != last_state:
                self.console.print(f"[bold]{MESSAGES.get(state, state)}[/]")
                last_state = state
            if state in FINAL:
                return str(state)
            if state == "awaiting_payment" and order.expires_at is not None:
                left = int(order.expires_at.timestamp() - time.time())
                tick = max(left, 0) // COUNTDOWN_EVERY
                if tick != last_count:
                    self.console.print(f"time left: {max(left, 0)} s")
                    last_count = tick
            self.sleep(self.poll)
            order = self.agent.order(order.id)


__all__ = ["TerminalScreen", "terminal_qr"]
