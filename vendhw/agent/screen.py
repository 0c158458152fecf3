"""The customer's screen: a small local web app served by the agent.

The page (``static/``: plain HTML, CSS and JavaScript, no build step, no network) is one
document that never reloads: it follows the sale through a small JSON API of the agent
(``/api/state``, ``/api/orders/<id>``...) and swaps views in place, so the payment QR stays
on screen while the order is polled. Everything it shows comes from the backend and the
board through the agent: the screen holds no sale state of its own, and a reload at any
moment shows the same thing again.

Errors reach the page as stable words (``code_used``, ``unavailable``...) that it turns into
plain sentences in the customer's language; exception text only goes to the log.
It binds 127.0.0.1 by default: the kiosk browser runs on the same controller.
"""

from __future__ import annotations

import html
import io
import ipaddress
import json
import logging
import mimetypes
import re
import secrets
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from vendhw.errors import ConfigurationError, DisconnectedError, TransportError, VendhwError

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
"""The page's files, shipped in the wheel."""
LANGUAGES = ("zh-CN", "en")
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
"""English one-liners per order state (the terminal screen uses them too)."""
CUSTOMER_ERRORS = {"code_invalid", "code_malformed", "code_used", "code_expired",
                   "code_revoked", "code_in_use", "code_locked", "unknown_order",
                   "not_cancellable", "unknown_slot"}
"""Backend refusals the page explains as they are; any other becomes ``refused``."""
IMAGE_TYPES = (".png", ".jpg", ".jpeg", ".webp", ".svg")
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class ScreenSettings:
    """What a machine's ``[screen]`` table sets (see :class:`vendhw.agent.runner.AgentConfig`)."""

    language: str = "zh-CN"
    """The language a new customer sees first (``zh-CN`` or ``en``); a switch on screen."""
    idle_seconds: float = 15.0
    """A result, error or keypad page goes back to the products after this long untouched."""
    images: Path | None = None
    """A directory of product pictures named ``<product id>.png`` (``.jpg``, ``.webp``,
    ``.svg``); pictures the catalogue links (``image_url``) are cached in ``cache_dir``."""
    cache_dir: Path | None = None
    code_length: int = 10
    """Digits of a pickup code (the backend's ``code_digits``): the keypad sends no other."""
    code_length_fixed: bool = True
    """False when ``[screen] code_length`` is not set: the backend's catalogue says it
    (``code_digits``), ``code_length`` until it has answered."""
    poll_ms: int = 500
    """How often the page asks for the order while a sale runs."""

    def __post_init__(self) -> None:
        if self.language not in LANGUAGES:
            raise ConfigurationError(f"[screen] language must be one of {', '.join(LANGUAGES)}"
                                     f", not {self.language!r}")
        if not 1 <= self.idle_seconds <= 3600:
            raise ConfigurationError("[screen] idle_timeout must be 1..3600 seconds")
        if not 4 <= self.code_length <= 32:
            raise ConfigurationError("[screen] code_length must be 4..32 digits")


class AgentLike(Protocol):
    def products(self) -> list[dict[str, Any]]: ...

    def buy(self, slot: str) -> Any: ...

    def redeem(self, code: str) -> Any: ...

    def order(self, order_id: str) -> Any: ...


CARD_WAITING = {"tap", "dispensing"}
"""Card sale states still running; the others are final (``delivered``, ``refunded``: the
vend failed and the reader did not charge, ``needs_review``, ``denied``, ``cancelled``,
``no_card``: the time to tap ran out, ``error``: nothing vended, see ``error``)."""


class CardBusy(VendhwError):
    """A card sale is already running on the machine's one reader."""


class UnknownCardSale(VendhwError):
    """No card sale of that id (the agent restarted, or it is long gone)."""


def has_card_reader(agent: Any) -> bool:
    """True when the agent has a card reader configured (it may be offline right now)."""
    return getattr(agent, "card", None) is not None and callable(getattr(agent, "buy_card",
                                                                          None))


def card_ready(agent: Any) -> bool:
    """True when the agent's card reader can take a card now (the page offers "Pay by
    card"); False without one or while its port is away (``card_ok``)."""
    if not has_card_reader(agent):
        return False
    ok = getattr(agent, "card_ok", None)
    return bool(ok()) if callable(ok) else True


def cash_balance(agent: Any) -> int | None:
    """The inserted credit when the agent takes cash, else None (the page hides cash)."""
    get = getattr(agent, "cash_balance", None)
    return get() if callable(get) else None


def qr_svg(text: str) -> bytes:
    """The QR for ``text`` as an SVG document, with the standard 4-module quiet zone."""
    import qrcode
    import qrcode.image.svg

    out = io.BytesIO()
    qrcode.make(text, image_factory=qrcode.image.svg.SvgPathImage, border=4).save(out)
    return out.getvalue()


def is_loopback_url(url: str) -> bool:
    """True when ``url`` names this computer (a phone scanning it reaches nothing)."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def short_reference(order_id: str) -> str:
    """The last six characters of an order id, upper case: what a customer reads to staff."""
    return order_id[-6:].upper()


def order_view(order: Any, now: datetime | None = None) -> dict[str, Any]:
    """What the page needs of an order (no secrets; the pay URL only while it is payable)."""
    now = now or datetime.now(timezone.utc)
    left = total = None
    expires, created = order.expires_at, getattr(order, "created_at", None)
    if expires is not None:
        left = max(0.0, (expires - now).total_seconds())
        if created is not None:
            total = max(1.0, (expires - created).total_seconds())
    payable = order.state == "awaiting_payment" and bool(order.qr_text)
    return {"id": order.id, "ref": short_reference(order.id), "state": order.state,
            "final": order.state in FINAL, "kind": getattr(order, "kind", "qr"),
            "product_name": getattr(order, "product_name", ""),
            "slot": getattr(order, "slot", ""), "amount": order.amount,
            "currency": order.currency, "provider": getattr(order, "provider", ""),
            "pay_url": order.qr_text if payable else None,
            "seconds_left": left, "seconds_total": total}


def error_word(exc: BaseException) -> tuple[int, str, dict[str, Any]]:
    """The HTTP status, the page's error word and extras for ``exc`` (its text is logged)."""
    from vendhw.client.errors import BackendError, BackendUnavailable, RateLimitedError

    if isinstance(exc, CardBusy):
        return 409, "card_busy", {}
    if isinstance(exc, UnknownCardSale):
        return 404, "unknown_order", {}
    if isinstance(exc, RateLimitedError):
        return 429, "code_locked", {"retry_after": exc.retry_after}
    if isinstance(exc, BackendUnavailable | TransportError | OSError):
        return 503, "unavailable", {}
    if isinstance(exc, BackendError):
        if exc.status in (401, 403):
            return 503, "unavailable", {}
        word = exc.code if exc.code in CUSTOMER_ERRORS else "refused"
        return (404 if word == "unknown_order" else 409), word, {}
    if isinstance(exc, ConfigurationError | KeyError | ValueError):
        return 400, "bad_request", {}
    return 503, "unavailable", {}


class ScreenModel:
    """The screen's questions to the agent, answered as plain JSON-ready dicts."""

    def __init__(self, agent: AgentLike, settings: ScreenSettings) -> None:
        self.agent = agent
        self.settings = settings
        self._image_urls: dict[str, str] = {}
        self._warned_loopback = False
        self._backend_was_ok = True
        self._pay_urls: dict[str, str] = {}
        self._lock = threading.Lock()
        self._cards: dict[str, dict[str, Any]] = {}
        self._card_lock = threading.Lock()

    def products(self) -> list[dict[str, Any]]:
        """Every slot the catalogue lists, sold-out ones included (shown, not tappable)."""
        listing = getattr(self.agent, "screen_products", None)
        rows = listing() if callable(listing) else [
            {**p, "product_id": p.get("product_id", p["slot"]), "sold_out": False}
            for p in self.agent.products()]
        out = []
        for row in rows:
            product_id = str(row.get("product_id") or row["slot"])
            if row.get("image_url"):
                self._image_urls[product_id] = str(row["image_url"])
            has_image = self._image_path(product_id) is not None \
                or product_id in self._image_urls
            out.append({"slot": row["slot"], "product_id": product_id, "name": row["name"],
                        "price": row["price"], "currency": row["currency"],
                        "sold_out": bool(row.get("sold_out")),
                        "image": f"/img/{product_id}" if has_image else None})
        return out

    def state(self) -> dict[str, Any]:
        """The products and whether the machine can sell now (else: out of service)."""
        board = getattr(self.agent, "board_ok", None)
        service = {"backend": True, "board": board() if callable(board) else True}
        products: list[dict[str, Any]] = []
        try:
            products = self.products()
        except Exception as exc:
            if self._backend_was_ok:
                log.warning("screen: out of service, no catalogue: %s", exc)
            service["backend"] = False
        if service["backend"] and not self._backend_was_ok:
            log.warning("screen: the catalogue answers again")
        self._backend_was_ok = service["backend"]
        ok = service["backend"] and service["board"]
        return {"ok": ok, "service": service, "products": products,
                "cash": cash_balance(self.agent), "card": card_ready(self.agent),
                "code_length": self.code_length()}

    # --- card sales (the machine's own reader) ---------------------------------------------

    def card_buy(self, slot: str) -> dict[str, Any]:
        """Start a card sale of ``slot``: the reader waits for a card on its own thread and
        the page polls :meth:`card` (the vend is approved before the motor turns)."""
        from vendhw.agent.card import SESSION_TIMEOUT

        if not has_card_reader(self.agent):
            raise ConfigurationError("this machine has no card reader")
        if not card_ready(self.agent):  # its port went away: 503 "unavailable", not 400
            raise DisconnectedError("the card reader is offline (its port went away)")
        product = next((p for p in self.products() if p["slot"] == slot), None)
        if product is None or product["sold_out"]:
            raise ConfigurationError(f"slot {slot!r} is not for sale")
        with self._card_lock:
            if any(c["state"] in CARD_WAITING for c in self._cards.values()):
                raise CardBusy("a card sale is already running")
            session: dict[str, Any] = {
                "id": secrets.token_hex(8), "slot": slot, "state": "tap", "kind": "card",
                "product_name": product["name"], "amount": product["price"],
                "currency": product["currency"], "ref": None, "error": None, "steps": ["tap"],
                "seconds_total": SESSION_TIMEOUT, "_end": time.monotonic() + SESSION_TIMEOUT,
                "_cancel": threading.Event()}
            self._cards[session["id"]] = session
            while len(self._cards) > 32:
                del self._cards[next(iter(self._cards))]
        threading.Thread(target=self._card_sale, args=(session,), name="screen-card",
                         daemon=True).start()
        return self._card_view(session)

    def _card_sale(self, session: dict[str, Any]) -> None:
        def approved() -> None:
            self._card_step(session, "dispensing")

        try:
            result = self.agent.buy_card(  # type: ignore[attr-defined]
                session["slot"], session_timeout=session["seconds_total"],
                on_approved=approved, cancelled=session["_cancel"])
        except Exception as exc:
            if session["state"] == "dispensing":  # the motor may have turned: an operator
                log.error("screen: card sale of %s failed after approval: %s",
                          session["slot"], exc)
                self._card_step(session, "needs_review")
            else:  # nothing was vended
                _, word, _ = error_word(exc)
                log.warning("screen: card sale of %s failed: %s", session["slot"], exc)
                session["error"] = word
                self._card_step(session, "error")
            return
        session["ref"] = short_reference(result.order_id or result.reference)
        self._card_step(session, result.state)

    @staticmethod
    def _card_step(session: dict[str, Any], state: str) -> None:
        session["steps"] = [*session["steps"], state]
        session["state"] = state

    def card(self, sale_id: str) -> dict[str, Any]:
        session = self._cards.get(sale_id)
        if session is None:
            raise UnknownCardSale(sale_id)
        return self._card_view(session)

    def card_cancel(self, sale_id: str) -> dict[str, Any]:
        """The customer cancelled while asked to tap: the wait ends, nothing is taken. A
        card already tapped goes on to the reader's answer (the page keeps following it)."""
        session = self._cards.get(sale_id)
        if session is None:
            raise UnknownCardSale(sale_id)
        session["_cancel"].set()
        return self._card_view(session)

    @staticmethod
    def _card_view(session: dict[str, Any]) -> dict[str, Any]:
        view = {k: v for k, v in session.items() if not k.startswith("_")}
        view["final"] = session["state"] not in CARD_WAITING
        view["seconds_left"] = (max(0.0, session["_end"] - time.monotonic())
                                if session["state"] == "tap" else None)
        return view

    def order(self, order_id: str) -> dict[str, Any]:
        return self._remember(order_view(self.agent.order(order_id)))

    def buy(self, slot: str) -> dict[str, Any]:
        return self._remember(order_view(self.agent.buy(slot)))

    def cancel(self, order_id: str) -> dict[str, Any]:
        """Cancel at the backend; an order paid meanwhile is followed, never dropped."""
        from vendhw.client.errors import BackendError

        cancel = getattr(self.agent, "cancel", None)
        if not callable(cancel):
            raise ConfigurationError("this agent cannot cancel orders")
        try:
            return order_view(cancel(order_id))
        except BackendError as exc:
            if exc.code != "not_cancellable":
                raise
            return self.order(order_id)

    def code_length(self) -> int:
        """The digits of a pickup code: ``[screen] code_length`` when set, else the backend's
        ``code_digits`` from the last catalogue the agent read."""
        learned = getattr(self.agent, "code_digits", None)
        if not self.settings.code_length_fixed and callable(learned):
            digits = learned()
            if isinstance(digits, int) and 4 <= digits <= 32:
                return digits
        return self.settings.code_length

    def redeem(self, code: str) -> dict[str, Any]:
        length = self.code_length()
        if not code.isdigit() or len(code) != length:
            raise ConfigurationError(f"a code has {length} digits")
        return order_view(self.agent.redeem(code))

    def qr(self, order_id: str) -> bytes:
        """The order's QR; drawn from the pay URL already seen, so a page (re)loading the
        image while the backend is away still gets it."""
        url = self._pay_urls.get(order_id)
        if url is None:
            url = self.agent.order(order_id).qr_text or ""
        return qr_svg(url)

    def _remember(self, view: dict[str, Any]) -> dict[str, Any]:
        if view["pay_url"]:
            self._pay_urls[view["id"]] = view["pay_url"]
            while len(self._pay_urls) > 32:
                del self._pay_urls[next(iter(self._pay_urls))]
            self._check_pay_url(view["pay_url"])
        return view

    def _check_pay_url(self, url: str | None) -> None:
        if url and not self._warned_loopback and is_loopback_url(url):
            self._warned_loopback = True
            log.warning("the payment QR points at %s, a loopback address no phone can reach: "
                        "start the backend with --public-url (its address on the network)",
                        urlsplit(url).netloc)

    # --- product pictures ------------------------------------------------------------------

    def _image_path(self, product_id: str) -> Path | None:
        if not _SAFE_ID.match(product_id):
            return None
        for folder in (self.settings.images, self.settings.cache_dir):
            if folder is None:
                continue
            for ext in IMAGE_TYPES:
                path = folder / f"{product_id}{ext}"
                if path.is_file():
                    return path
        return None

    def image(self, product_id: str) -> Path | None:
        """The product's picture on disk: the operator's folder, else the cached download
        of the catalogue's ``image_url`` (fetched once, then served offline)."""
        path = self._image_path(product_id)
        url = self._image_urls.get(product_id)
        if path is not None or url is None or self.settings.cache_dir is None:
            return path
        with self._lock:
            path = self._image_path(product_id)
            if path is None:
                path = self._download(product_id, url)
        return path

    def _download(self, product_id: str, url: str) -> Path | None:
        import httpx

        try:
            response = httpx.get(url, timeout=10, follow_redirects=True)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            log.warning("screen: picture of %s not fetched from %s: %s", product_id, url, exc)
            return None
        kind = response.headers.get("content-type", "").split(";")[0].strip()
        ext = mimetypes.guess_extension(kind) or Path(urlsplit(url).path).suffix.lower()
        ext = ".jpg" if ext == ".jpe" else ext
        if ext not in IMAGE_TYPES:
            log.warning("screen: picture of %s at %s is %r, not an image", product_id, url,
                        kind)
            return None
        assert self.settings.cache_dir is not None
        self.settings.cache_dir.mkdir(parents=True, exist_ok=True)
        path = self.settings.cache_dir / f"{product_id}{ext}"
        part = path.with_suffix(ext + ".part")
        part.write_bytes(response.content)
        part.replace(path)
        return path


def _app_shell(settings: ScreenSettings, code_length: int | None = None) -> bytes:
    config = json.dumps({"language": settings.language, "languages": list(LANGUAGES),
                         "idle_seconds": settings.idle_seconds,
                         "code_length": code_length or settings.code_length,
                         "poll_ms": settings.poll_ms})
    page = (STATIC / "index.html").read_text(encoding="utf-8")
    page = page.replace("{{lang}}", settings.language)
    page = page.replace("{{config}}", html.escape(config, quote=True))
    return page.encode()


def _plain_page(title: str, body: str) -> bytes:
    """A minimal page for the old form posts (no script needed)."""
    return (f"<!doctype html><html><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width,initial-scale=1'>"
            f"<link rel='stylesheet' href='/static/screen.css'><title>{html.escape(title)}"
            f"</title></head><body class='plain'>{body}</body></html>").encode()


class _QuietHTTPServer(ThreadingHTTPServer):
    """Treats a browser that went away mid-reply as routine, not as a traceback on stderr.

    Kiosk browsers reload and cancel requests all the time; socketserver's default
    ``handle_error`` prints a full traceback for each ``BrokenPipeError``.
    """

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError):  # BrokenPipe, ConnectionReset, ConnectionAborted
            log.debug("screen: %s went away: %s", client_address, exc)
            return
        log.warning("screen: request from %s failed", client_address, exc_info=True)


class ScreenServer:
    """Serves the screen for ``agent`` on ``host:port`` from a daemon thread."""

    def __init__(self, agent: AgentLike, host: str = "127.0.0.1", port: int = 8765,
                 settings: ScreenSettings | None = None) -> None:
        self.agent = agent
        self.settings = settings or ScreenSettings()
        self.model = ScreenModel(agent, self.settings)
        self.httpd = _QuietHTTPServer((host, port), self._handler())
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
        agent, model, settings = self.agent, self.model, self.settings

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt: str, *args: Any) -> None:
                log.debug("screen: " + fmt, *args)

            def _send(self, status: int, body: bytes, kind: str = "text/html; charset=utf-8",
                      cache: str = "no-store") -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", cache)
                self.end_headers()
                self.wfile.write(body)

            def _json(self, status: int, data: Any) -> None:
                self._send(status, json.dumps(data).encode(), "application/json")

            def _redirect(self, where: str) -> None:
                self.send_response(303)
                self.send_header("Location", where)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _body(self) -> bytes:
                length = int(self.headers.get("Content-Length") or 0)
                if length > 65536:
                    raise ValueError("request too large")
                return self.rfile.read(length)

            def _form(self) -> dict[str, str]:
                fields = parse_qs(self._body().decode("utf-8", "replace"))
                return {k: v[0] for k, v in fields.items()}

            def _fields(self) -> dict[str, Any]:
                """A JSON object body (the page) or a form (old clients)."""
                if "json" in (self.headers.get("Content-Type") or ""):
                    data = json.loads(self._body() or b"{}")
                    if not isinstance(data, dict):
                        raise ValueError("expected a JSON object")
                    return data
                return self._form()

            def _api_error(self, exc: Exception) -> None:
                status, word, extra = error_word(exc)
                log.info("screen: %s %s -> %s (%s)", self.command, self.path, word, exc)
                self._json(status, {"error": word, **extra})

            def _file(self, path: Path | None, cache: str = "max-age=3600") -> None:
                if path is None or not path.is_file():
                    self._send(404, b"not found", "text/plain")
                    return
                kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
                if kind.startswith("text/") or kind.endswith("javascript"):
                    kind += "; charset=utf-8"
                self._send(200, path.read_bytes(), kind, cache)

            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                try:
                    if path in ("/", "/code") or re.fullmatch(r"/order/[\w-]+", path):
                        self._send(200, _app_shell(settings, model.code_length()))
                    elif path.startswith("/static/"):
                        name = path[len("/static/"):]
                        ok = re.fullmatch(r"[a-z0-9_-]+\.(css|js|svg|png)", name)
                        self._file(STATIC / name if ok else None, "no-cache")
                    elif path == "/api/state":
                        self._json(200, model.state())
                    elif path.startswith("/api/orders/"):
                        self._json(200, model.order(path[len("/api/orders/"):]))
                    elif m := re.fullmatch(r"/api/card/([0-9a-f]{1,32})", path):
                        self._json(200, model.card(m.group(1)))
                    elif path == "/api/products":
                        self._json(200, agent.products())
                    elif path.startswith("/img/"):
                        self._file(model.image(path[len("/img/"):]))
                    elif path.startswith("/qr/") and path.endswith(".svg"):
                        self._send(200, model.qr(path[4:-4]), "image/svg+xml",
                                   "max-age=3600")
                    else:
                        self._send(404, _plain_page("Not found", "<h1>Not found</h1>"))
                except Exception as exc:
                    if path.startswith("/api/"):
                        self._api_error(exc)
                    else:
                        log.info("screen: GET %s: %s", path, exc)
                        self._send(503, _plain_page("Sorry", "<h1>Sorry</h1><p>Please try "
                                                    "again.</p><p><a href='/'>Back</a></p>"))

            def do_POST(self) -> None:
                path = urlsplit(self.path).path
                try:
                    if path.startswith("/api/"):
                        self._api_post(path)
                    else:
                        self._form_post(path)
                except Exception as exc:
                    if path.startswith("/api/"):
                        self._api_error(exc)
                    else:
                        _, word, _ = error_word(exc)
                        log.info("screen: POST %s -> %s (%s)", path, word, exc)
                        self._send(400, _plain_page("Sorry", (
                            f"<h1>Sorry</h1><p>{html.escape(_PLAIN.get(word, _PLAIN['x']))}"
                            "</p><p><a href='/'>Back to the products</a></p>")))

            def _api_post(self, path: str) -> None:
                fields = self._fields()
                if path == "/api/orders":
                    self._json(201, model.buy(str(fields["slot"])))
                elif m := re.fullmatch(r"/api/orders/([\w-]+)/cancel", path):
                    self._json(200, model.cancel(m.group(1)))
                elif path == "/api/codes":
                    self._json(201, model.redeem(str(fields.get("code", "")).strip()))
                elif path == "/api/card":
                    self._json(201, model.card_buy(str(fields["slot"])))
                elif m := re.fullmatch(r"/api/card/([0-9a-f]{1,32})/cancel", path):
                    self._json(200, model.card_cancel(m.group(1)))
                elif path == "/api/cash/buy":
                    sale = agent.buy_cash(str(fields["slot"]))  # type: ignore[attr-defined]
                    self._json(200, {"state": sale.state, "ref": short_reference(
                        str(getattr(sale, "reference", "")))})
                elif path == "/api/cash/change":
                    try:
                        paid = agent.return_change()  # type: ignore[attr-defined]
                    except VendhwError as exc:  # journaled as spent: an operator settles it
                        log.warning("screen: change not paid out: %s", exc)
                        self._json(409, {"error": "change_failed"})
                        return
                    self._json(200, {"paid": paid})
                else:
                    self._json(404, {"error": "not_found"})

            def _form_post(self, path: str) -> None:
                """The form posts of the first screen, kept for scripts that use them."""
                form = self._form()
                if path == "/buy":
                    self._redirect(f"/order/{agent.buy(form['slot']).id}")
                elif path == "/code":
                    self._redirect(f"/order/{agent.redeem(form.get('code', '').strip()).id}")
                elif path == "/buy-cash":
                    sale = agent.buy_cash(form["slot"])  # type: ignore[attr-defined]
                    text = {"delivered": MESSAGES["delivered"],
                            "refunded": "Sorry, the product could not be delivered. "
                                        "Your credit was returned."}.get(
                        sale.state, MESSAGES["needs_review"])
                    self._send(200, _plain_page("Your purchase", (
                        f"<h1>{html.escape(text)}</h1><p id='state'>{html.escape(sale.state)}"
                        "</p><p><a href='/'>Back to the products</a></p>")))
                elif path == "/change":
                    paid = agent.return_change()  # type: ignore[attr-defined]
                    text = (f"Please take your change: {paid / 100:.2f}" if paid
                            else "No change to return.")
                    self._send(200, _plain_page("Change", f"<h1>{html.escape(text)}</h1>"
                                                "<p><a href='/'>Back</a></p>"))
                else:
                    self._send(404, _plain_page("Not found", "<h1>Not found</h1>"))

        return Handler


_PLAIN = {"code_used": "This code has already been used.",
          "code_invalid": "This code is not valid.",
          "code_expired": "This code has expired.",
          "unavailable": "The machine cannot reach its service right now. Please try later.",
          "x": "This did not work. Please try again."}

