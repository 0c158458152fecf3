"""The customer's screen: a small local web page served by the agent.

Pages: the product list (``/``), an order with its payment QR and a countdown
(``/order/<id>``), and the code keypad (``/code``). The QR is an SVG drawn by ``qrcode`` with
no image library. The page refreshes itself while an order is in progress; everything it
shows comes from the backend through the agent, so the screen holds no state of its own.
It binds 127.0.0.1 by default: the kiosk browser runs on the same controller.
"""

from __future__ import annotations

import html
import io
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger(__name__)

REFRESH_SECONDS = 1
"""How often an order page reloads while the sale is in progress."""
FINAL = {"delivered", "refunded", "needs_review", "expired", "cancelled"}
MESSAGES = {
    "awaiting_payment": "Scan the code to pay",
    "paid": "Paid, thank you! Preparing your product...",
    "dispensing": "Dispensing...",
    "delivered": "Enjoy! Please take your product.",
    "refunding": "Sorry, the product could not be delivered. Refunding...",
    "refunded": "Sorry, the product could not be delivered. Your payment was refunded.",
    "needs_review": "Sorry, something went wrong. Staff have been notified.",
    "expired": "The payment time ran out.",
    "cancelled": "The order was cancelled.",
}


class AgentLike(Protocol):
    def products(self) -> list[dict[str, Any]]: ...

    def buy(self, slot: str) -> Any: ...

    def redeem(self, code: str) -> Any: ...

    def order(self, order_id: str) -> Any: ...


def cash_balance(agent: Any) -> int | None:
    """The inserted credit when the agent takes cash, else None (the page hides cash)."""
    get = getattr(agent, "cash_balance", None)
    return get() if callable(get) else None


def qr_svg(text: str) -> bytes:
    """The QR for ``text`` as an SVG document."""
    import qrcode
    import qrcode.image.svg

    out = io.BytesIO()
    qrcode.make(text, image_factory=qrcode.image.svg.SvgPathImage, border=2).save(out)
    return out.getvalue()


def _page(title: str, body: str, refresh: bool = False) -> bytes:
    meta = f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">' if refresh else ""
    return (f"<!doctype html><html><head><meta charset='utf-8'>{meta}"
            f"<title>{html.escape(title)}</title><style>"
            "body{font-family:sans-serif;margin:2em;font-size:1.4em}"
            "button{font-size:1.2em;padding:.6em 1.2em;margin:.3em}"
            ".product{display:inline-block;border:1px solid #ccc;padding:1em;margin:.5em}"
            "</style></head><body>" + body + "</body></html>").encode()


def _money(amount: int, currency: str) -> str:
    return f"{amount / 100:.2f} {html.escape(currency)}"


class ScreenServer:
    """Serves the screen for ``agent`` on ``host:port`` from a daemon thread."""

    def __init__(self, agent: AgentLike, host: str = "127.0.0.1", port: int = 8765) -> None:
        self.agent = agent
        handler = self._handler()
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="screen",
                                       daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        agent = self.agent

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, fmt: str, *args: Any) -> None:
                log.debug("screen: " + fmt, *args)

            def _send(self, status: int, body: bytes, kind: str = "text/html") -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def _redirect(self, where: str) -> None:
                self.send_response(303)
                self.send_header("Location", where)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _form(self) -> dict[str, str]:
                length = int(self.headers.get("Content-Length") or 0)
                fields = parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
                return {k: v[0] for k, v in fields.items()}

            def _error(self, exc: Exception) -> None:
                self._send(400, _page("Sorry", f"<h1>Sorry</h1><p>{html.escape(str(exc))}</p>"
                                      "<p><a href='/'>Back</a></p>"))

            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                try:
                    if path == "/":
                        self._send(200, self._products())
                    elif path == "/code":
                        self._send(200, _page("Enter your code", (
                            "<h1>Pickup or prize code</h1><form method='post' action='/code'>"
                            "<input name='code' inputmode='numeric' autofocus size='12'>"
                            "<button>OK</button></form><p><a href='/'>Back</a></p>")))
                    elif path.startswith("/qr/") and path.endswith(".svg"):
                        order = agent.order(path[4:-4])
                        self._send(200, qr_svg(order.qr_text or ""), "image/svg+xml")
                    elif path.startswith("/order/"):
                        self._send(200, self._order(agent.order(path[7:])))
                    elif path == "/api/products":
                        self._send(200, json.dumps(agent.products()).encode(), "application/json")
                    else:
                        self._send(404, _page("Not found", "<h1>Not found</h1>"))
                except Exception as exc:
                    self._error(exc)

            def do_POST(self) -> None:
                path = urlsplit(self.path).path
                try:
                    form = self._form()
                    if path == "/buy":
                        order = agent.buy(form["slot"])
                        self._redirect(f"/order/{order.id}")
                    elif path == "/code":
                        order = agent.redeem(form.get("code", "").strip())
                        self._redirect(f"/order/{order.id}")
                    elif path == "/buy-cash":
                        sale = agent.buy_cash(form["slot"])  # type: ignore[attr-defined]
                        self._send(200, self._cash_sale(sale))
                    elif path == "/change":
                        paid = agent.return_change()  # type: ignore[attr-defined]
                        text = (f"Please take your change: {paid / 100:.2f}" if paid
                                else "No change to return.")
                        self._send(200, _page("Change", f"<h1>{html.escape(text)}</h1>"
                                              "<p><a href='/'>Back</a></p>"))
                    else:
                        self._send(404, _page("Not found", "<h1>Not found</h1>"))
                except Exception as exc:
                    self._error(exc)

            def _products(self) -> bytes:
                balance = cash_balance(agent)
                items = "".join(
                    f"<form class='product' method='post' action='/buy'>"
                    f"<h2>{html.escape(p['name'])}</h2><p>{_money(p['price'], p['currency'])}</p>"
                    f"<input type='hidden' name='slot' value='{html.escape(p['slot'])}'>"
                    f"<button>Buy</button>" + (
                        "" if balance is None else
                        f"<button formaction='/buy-cash'"
                        f"{'' if balance >= p['price'] else ' disabled'}>Pay with cash</button>")
                    + "</form>" for p in agent.products())
                cash = ""
                if balance is not None:
                    cash = (f"<p id='credit'>Credit: {balance / 100:.2f}</p>"
                            "<form method='post' action='/change'><button>Return change"
                            "</button></form>")
                return _page("Choose a product", "<h1>Choose a product</h1>" + cash + items
                             + "<p><a href='/code'>I have a code</a></p>", refresh=bool(cash))

            def _cash_sale(self, sale: Any) -> bytes:
                text = {"delivered": MESSAGES["delivered"],
                        "refunded": "Sorry, the product could not be delivered. "
                                    "Your credit was returned."}.get(
                    sale.state, MESSAGES["needs_review"])
                return _page("Your purchase", f"<h1>{html.escape(text)}</h1>"
                             f"<p id='state'>{html.escape(sale.state)}</p>"
                             "<p><a href='/'>Back to the products</a></p>")

            def _order(self, order: Any) -> bytes:
                state = order.state
                body = [f"<h1>{html.escape(MESSAGES.get(state, state))}</h1>",
                        f"<p id='state'>{html.escape(state)}</p>"]
                if state == "awaiting_payment" and order.qr_text:
                    body.append(f"<img src='/qr/{html.escape(order.id)}.svg' width='320' "
                                "alt='payment QR'>")
                    body.append(f"<p>{_money(order.amount, order.currency)}</p>")
                    if order.expires_at is not None:
                        stamp = order.expires_at.timestamp() * 1000
                        body.append(f"<p>Time left: <span id='left'></span> s</p><script>"
                                    f"var end={stamp:.0f};function t(){{document.getElementById"
                                    "('left').textContent=Math.max(0,Math.round((end-Date.now())"
                                    "/1000))}t();setInterval(t,500)</script>")
                if state in FINAL:
                    body.append("<p><a href='/'>Back to the products</a></p>")
                return _page("Your order", "".join(body), refresh=state not in FINAL)

        return Handler
