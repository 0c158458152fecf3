"""``vendhw machine run --config machine.toml``: the long-running process on the controller.

It opens the board (``Machine``, with its vend journal), the signed backend client (with its
report outbox) and the shipping loop; finishes whatever a previous run left in flight
*before* selling again; then serves the customer's screen and ships what the backend
instructs. All state that must survive a crash lives in SQLite files under ``data_dir``.

The configuration file::

    [backend]
    url = "https://vending.example.com"
    machine_id = "m-0042"
    secret = "..."               # or secret_env = "VENDHW_MACHINE_SECRET"

    [board]
    profile = "easivend-column"  # a name from boards/ or a path to a TOML profile
    port = "/dev/ttyUSB0"        # any transport URL (sim://easivend-column for a dry run)

    [agent]
    data_dir = "/var/lib/vendhw" # journals: vends.db, ships.db, outbox.db, cash.db
    screen_host = "127.0.0.1"
    screen_port = 8765

    [[cashless]]                 # optional: an MDB card reader (vendhw.agent.card)
    port = "mdb9:///dev/ttyUSB0" #   or sim://mdb-cashless; address = 16 (0x10) or 96 (0x60)

    [screen]                     # optional: the customer's web screen
    language = "zh-CN"           # zh-CN or en: what a new customer sees first
    idle_timeout = 15            # seconds before a result page returns to the products
    images = "images"            # product pictures: <product id>.png/.jpg/.webp/.svg
    code_length = 10             # digits of a pickup code (the backend's code_digits)

    [[cash]]                     # optional, repeatable: coin/note acceptors, payout devices
    protocol = "ssp"             # cctalk-coin, cctalk-hopper, cctalk-bill, ssp, id003,
    port = "/dev/ttyACM0"        #   mdb-changer, mdb-bill (``vendhw cash --help``)
    options = { encryption = "auto" }

Products, slots and prices come from the backend's catalogue for this machine, so the
screen always sells what the backend will charge for.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vendhw.agent.card import (
    SESSION_TIMEOUT,
    CardConfig,
    CardSaleResult,
    CardSales,
    load_cashless,
)
from vendhw.agent.cash import CashSale, CashSales
from vendhw.agent.screen import ScreenServer, ScreenSettings
from vendhw.agent.shipper import Shipper
from vendhw.agent.soldout import FILE as SOLD_OUT_FILE
from vendhw.agent.soldout import SoldOut
from vendhw.errors import ConfigurationError, DisconnectedError, JournalError, VendhwError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger(__name__)

CARD_WAIT_SLICE = 0.5
"""Seconds of one wait for a card when the screen may cancel it (:meth:`Agent.buy_card`)."""
RECONNECT_FIRST = 0.5
"""Seconds before the first attempt to reopen a port that went away (a USB adapter
unplugged); each failed attempt doubles the wait, up to :data:`RECONNECT_MAX`."""
RECONNECT_MAX = 30.0
"""The longest wait between two attempts to reopen a port that went away."""
RECONNECT_JOIN = 5.0
"""Seconds :meth:`Agent.close` waits for a reopen in progress (a board probe) to end."""
PORT_WATCH = 1.0
"""Seconds between two looks at the board's port while it is up and idle (nothing is sent):
an adapter pulled out between sales takes the screen out of service before anyone pays."""


@dataclass(frozen=True)
class CashConfig:
    """One cash device of the machine: its protocol, port and driver options."""

    protocol: str
    port: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MqttConfig:
    """The broker a machine takes its instructions from when ``[backend] push = "mqtt"``."""

    host: str
    port: int = 1883
    username: str | None = None
    """Defaults to the machine id (one broker account per machine)."""
    password: str | None = None
    prefix: str = "vendhw"
    tls: bool = False


@dataclass(frozen=True)
class AgentConfig:
    backend_url: str
    machine_id: str
    secret: str
    board_profile: str
    board_port: str
    data_dir: Path
    screen_host: str = "127.0.0.1"
    screen_port: int = 8765
    cash: tuple[CashConfig, ...] = ()
    cashless: tuple[CardConfig, ...] = ()
    screen: ScreenSettings = field(default_factory=ScreenSettings)
    mqtt: MqttConfig | None = None
    """Set when ``[backend] push = "mqtt"``: instructions come over MQTT, not the long-poll."""

    @classmethod
    def load(cls, path: str | Path) -> AgentConfig:
        """Read and check a machine.toml; every mistake is one clear ConfigurationError."""
        file = Path(path)
        try:
            doc = tomllib.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigurationError(f"no configuration file {file}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"{file}: not valid TOML ({exc})") from None

        def need(section: str, key: str) -> Any:
            try:
                return doc[section][key]
            except KeyError:
                raise ConfigurationError(f"{file}: missing [{section}] {key}") from None

        backend = doc.get("backend", {})
        secret = backend.get("secret")
        if secret is None and backend.get("secret_env"):
            secret = os.environ.get(backend["secret_env"])
        if not secret:
            raise ConfigurationError(f"{file}: [backend] needs secret or secret_env (set)")
        agent = doc.get("agent", {})
        data_dir = Path(agent.get("data_dir", file.parent / "vendhw-data"))
        if not data_dir.is_absolute():
            data_dir = file.parent / data_dir
        cash = []
        for i, entry in enumerate(doc.get("cash", [])):
            if not isinstance(entry, dict) or "protocol" not in entry or "port" not in entry:
                raise ConfigurationError(f"{file}: [[cash]] entry {i + 1} needs protocol and "
                                         "port")
            cash.append(CashConfig(str(entry["protocol"]), str(entry["port"]),
                                   dict(entry.get("options", {}))))
        _check_port(file, "[board] port", str(need("board", "port")))
        for i, entry in enumerate(cash):
            _check_port(file, f"[[cash]] entry {i + 1} port", entry.port)
        cashless = load_cashless(doc.get("cashless", []), file)
        for i, card in enumerate(cashless):
            _check_port(file, f"[[cashless]] entry {i + 1} port", card.port)
        screen_port = agent.get("screen_port", 8765)
        if isinstance(screen_port, bool) or not isinstance(screen_port, int) \
                or not 0 <= screen_port <= 65535:
            raise ConfigurationError(f"{file}: [agent] screen_port must be a TCP port number "
                                     f"0..65535, not {screen_port!r}")
        return cls(str(need("backend", "url")).rstrip("/"), str(need("backend", "machine_id")),
                   str(secret), str(need("board", "profile")), str(need("board", "port")),
                   data_dir, str(agent.get("screen_host", "127.0.0.1")),
                   screen_port, tuple(cash), cashless,
                   _screen_settings(file, doc.get("screen", {}), data_dir),
                   _mqtt_config(file, backend))


def _check_port(file: Path, where: str, url: str) -> None:
    """A port URL that can never open is a configuration mistake, said now in one line; a
    port that is only missing now (a USB adapter not enumerated yet) is not: the agent
    starts with that device offline and opens it once it appears."""
    from vendhw.transport import check_url

    try:
        check_url(url)
    except ConfigurationError as exc:
        text = str(exc) if url and str(exc).startswith(url) else f"{url!r}: {exc}"
        raise ConfigurationError(f"{file}: {where}: {text}") from None


def _mqtt_config(file: Path, backend: Mapping[str, Any]) -> MqttConfig | None:
    """``[backend] push = "longpoll"`` (the default) or ``"mqtt"`` with its broker settings:
    ``mqtt_host``, ``mqtt_port`` (1883), ``mqtt_username`` (the machine id),
    ``mqtt_password`` or ``mqtt_password_env``, ``mqtt_prefix`` ("vendhw"), ``mqtt_tls``."""
    push = backend.get("push", "longpoll")
    if push == "longpoll":
        return None
    if push != "mqtt":
        raise ConfigurationError(f"{file}: [backend] push must be \"longpoll\" or \"mqtt\", "
                                 f"not {push!r}")
    host = backend.get("mqtt_host")
    if not isinstance(host, str) or not host:
        raise ConfigurationError(f"{file}: [backend] push = \"mqtt\" needs mqtt_host")
    port = backend.get("mqtt_port", 8883 if backend.get("mqtt_tls") else 1883)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port <= 65535:
        raise ConfigurationError(f"{file}: [backend] mqtt_port must be a TCP port number "
                                 f"1..65535, not {port!r}")
    tls = backend.get("mqtt_tls", False)
    if not isinstance(tls, bool):
        raise ConfigurationError(f"{file}: [backend] mqtt_tls must be true or false")
    password = backend.get("mqtt_password")
    if password is None and backend.get("mqtt_password_env"):
        password = os.environ.get(str(backend["mqtt_password_env"]))
    username = backend.get("mqtt_username")
    return MqttConfig(host, port, None if username is None else str(username),
                      None if password is None else str(password),
                      str(backend.get("mqtt_prefix", "vendhw")), tls)


class MqttInstructions:
    """The backend client, with instructions taken from the MQTT broker instead of the
    long-poll: the same messages; acknowledgements and results still go over HTTP.

    Connects on the first ask and again after a failed attempt (the shipper retries), so a
    broker down at start-up delays shipping instead of stopping the agent; once subscribed,
    paho reconnects by itself and the persistent session keeps what arrived meanwhile.
    """

    def __init__(self, client: Any, push: Any) -> None:
        self.client = client
        self.push = push

    @classmethod
    def open(cls, client: Any, machine_id: str, mqtt: MqttConfig) -> MqttInstructions:
        from vendhw.client.mqtt import MqttPush

        return cls(client, MqttPush(machine_id, mqtt.host, mqtt.port, username=mqtt.username,
                                    password=mqtt.password, prefix=mqtt.prefix,
                                    tls=mqtt.tls))

    def next_instructions(self, wait: float = 25.0) -> list[Any]:
        if not self.push.subscribed.is_set():
            self.push.connect()
        return list(self.push.next_instructions(wait=wait))

    def close(self) -> None:
        if self.push.subscribed.is_set():
            self.push.close()

    def __getattr__(self, name: str) -> Any:  # ack, report_result: the HTTP client's
        return getattr(self.client, name)


def _screen_settings(file: Path, table: Any, data_dir: Path) -> ScreenSettings:
    """The ``[screen]`` table; a wrong key or value is one clear ConfigurationError."""
    if not isinstance(table, dict):
        raise ConfigurationError(f"{file}: [screen] must be a table")
    known = {"language", "idle_timeout", "images", "code_length"}
    if set(table) - known:
        raise ConfigurationError(f"{file}: unknown [screen] keys {sorted(set(table) - known)}"
                                 f"; known: {', '.join(sorted(known))}")
    images = None
    if table.get("images"):
        images = Path(str(table["images"]))
        images = images if images.is_absolute() else file.parent / images
    try:
        return ScreenSettings(language=str(table.get("language", "zh-CN")),
                              idle_seconds=float(table.get("idle_timeout", 15)),
                              images=images, cache_dir=data_dir / "screen-images",
                              code_length=int(table.get("code_length", 10)),
                              code_length_fixed="code_length" in table)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{file}: [screen] idle_timeout and code_length are "
                                 "numbers") from None
    except ConfigurationError as exc:
        raise ConfigurationError(f"{file}: {exc}") from None


class Agent:
    """The machine's process: board, backend, shipping loop and screen."""

    def __init__(self, config: AgentConfig) -> None:
        from vendhw.client import BackendClient
        from vendhw.machine import Machine

        self.config = config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.client = BackendClient(config.backend_url, config.machine_id, config.secret,
                                    outbox=config.data_dir / "outbox.db")
        # A board whose port is missing now (a USB adapter that enumerates after the
        # controller booted) starts offline; the reconnect loop brings it up.
        self.machine = Machine(config.board_profile, config.board_port,
                               journal=config.data_dir / "vends.db", offline_ok=True)
        self.push: MqttInstructions | None = None
        if config.mqtt is not None:
            self.push = MqttInstructions.open(self.client, config.machine_id, config.mqtt)
        self.shipper = Shipper(self.push or self.client, self.machine,
                               config.data_dir / "ships.db")
        self.sold_out = SoldOut(config.data_dir / SOLD_OUT_FILE)
        self.machine.listeners.append(self._on_vend)
        self.cash: CashSales | None = None
        self._cash_missing: dict[str, Callable[[], Any]] = {}
        """Cash devices whose port could not be opened at start (``protocol@port`` -> its
        opener): offline until the reconnect loop opens them."""
        if config.cash:
            self.cash = self._open_cash(config)
        self.card: CardSales | None = None
        if config.cashless:  # one card reader: the first [[cashless]] entry
            self.card = CardSales.open(config.cashless[0], self.machine, self.client,
                                       journal=config.data_dir / "cards.db")
        self.stop = threading.Event()
        self.screen: ScreenServer | None = None
        self._board_down = False
        self._code_digits: int | None = None
        self._ports_changed = threading.Event()
        """Set when a port went away or came back, and at close: wakes the reconnect loop."""
        self._reconnect: threading.Thread | None = None
        self.machine.state_listeners.append(lambda online, why: self._ports_changed.set())
        if self.cash is not None:
            self.cash.acceptor.state_listeners.append(
                lambda name, online, why: self._ports_changed.set())
        if self.card is not None:
            self.card.state_listeners.append(lambda online, why: self._ports_changed.set())

    def _open_cash(self, config: AgentConfig) -> CashSales:
        from vendhw.devices.registry import open_cash_device
        from vendhw.machine.cash import CashAcceptor, CashJournal

        devices = []
        openers: dict[str, Callable[[], Any]] = {}
        try:
            for entry in config.cash:
                opener = functools.partial(open_cash_device, entry.protocol, entry.port,
                                           **entry.options)
                try:
                    devices.append(opener())
                except ConfigurationError:
                    raise  # a wrong protocol or option: no waiting fixes it
                except VendhwError as exc:  # its port is missing now: it may come
                    label = f"{entry.protocol}@{entry.port}"
                    log.warning("%s: cash device offline, its port could not be opened: "
                                "%s: %s (the agent keeps trying)", label,
                                type(exc).__name__, exc)
                    self._cash_missing[label] = opener
                    continue
                openers[devices[-1].name] = opener  # reopens it after an unplug
        except Exception:
            for device in devices:
                device.close()
            raise
        acceptor = CashAcceptor(devices, CashJournal(config.data_dir / "cash.db"),
                                openers=openers)
        return CashSales(acceptor, self.machine, self.client)

    # --- what the screen asks for ----------------------------------------------------------

    def products(self) -> list[dict[str, Any]]:
        """What the screen sells; raises while a journal cannot be written (a full disk, a
        read-only file), so the screen shows why instead of taking money it cannot ship."""
        self._check_journals()
        catalogue = self.client.catalogue()
        sold_out = self.sold_out.slots()
        return [{"slot": s["slot"], "name": s["product_name"], "price": s["price"],
                 "currency": catalogue.get("currency", "")}
                for s in catalogue.get("slots", [])
                if s.get("enabled", True) and s["slot"] not in sold_out]

    def _on_vend(self, result: Any) -> None:
        """The board found the slot empty: sold out on the screen until an operator clears
        it (``vendhw machine sold-out --clear``)."""
        if getattr(result.outcome, "value", result.outcome) == "empty":
            self.sold_out.mark(str(result.slot), result.vend_id)
            log.warning("slot %s is empty (vend %s): sold out on the screen until cleared "
                        "(vendhw machine sold-out --clear %s)", result.slot, result.vend_id,
                        result.slot)

    def _check_journals(self) -> None:
        if self.shipper.fault:
            raise JournalError(f"this machine cannot sell right now: {self.shipper.fault}")
        if not self._board_online():
            raise DisconnectedError(
                "this machine cannot sell right now: the motor board's port went away "
                f"({self.machine.offline_reason}); it sells again once the port is back")

    def screen_products(self) -> list[dict[str, Any]]:
        """Every slot of the catalogue for the screen: disabled ones show as sold out."""
        catalogue = self.client.catalogue()
        if isinstance(catalogue.get("code_digits"), int):
            self._code_digits = catalogue["code_digits"]
        empty = self.sold_out.slots()
        return [{"slot": s["slot"], "product_id": s.get("product_id", s["slot"]),
                 "name": s["product_name"], "price": s["price"],
                 "currency": catalogue.get("currency", ""),
                 "sold_out": not s.get("enabled", True) or s["slot"] in empty,
                 "image_url": s.get("image_url")}
                for s in catalogue.get("slots", [])]

    def code_digits(self) -> int | None:
        """The backend's pickup-code length, from the last catalogue read (None before)."""
        return self._code_digits

    def board_ok(self) -> bool:
        """Whether the board answers (else the screen is out of service until it does).
        Its ``ok`` flag is not used: some boards clear it while busy with a vend."""
        if not self._board_online():
            return False  # its port went away (the machine logged it; the agent reconnects)
        try:
            self.machine.status()
        except Exception as exc:
            if not self._board_down:
                log.warning("board not answering: %s", exc)
            self._board_down = True
            return False
        if self._board_down:
            log.warning("board answers again")
        self._board_down = False
        return True

    def buy(self, slot: str) -> Any:
        self._check_journals()
        if slot in self.sold_out.slots():
            raise ConfigurationError(f"slot {slot!r} is sold out (the board found it empty)")
        return self.client.create_order(slot)

    def cancel(self, order_id: str) -> Any:
        """The customer gave up on an unpaid order (a payment arriving later is refunded
        by the backend)."""
        return self.client.cancel_order(order_id)

    def redeem(self, code: str) -> Any:
        self._check_journals()
        redemption = self.client.redeem_code(code)
        if redemption.instruction is not None:
            # The ship instruction comes with the answer; ship it now, on its own thread,
            # so the screen shows progress (the journal dedupes a redelivery).
            threading.Thread(target=self._ship_now, args=(redemption.instruction,),
                             daemon=True).start()
        return redemption.order

    def _ship_now(self, instruction: Any) -> None:
        try:
            self.shipper.process(instruction)
        except Exception as exc:  # not acknowledged: the shipping loop gets it again
            log.error("instruction %s for order %s: %s: %s (shipped when redelivered)",
                      instruction.id, instruction.order_id, type(exc).__name__, exc)

    def order(self, order_id: str) -> Any:
        return self.client.order_status(order_id)

    def cash_balance(self) -> int | None:
        """The customer's inserted credit, or None when the machine takes no cash."""
        return None if self.cash is None else self.cash.balance()

    def buy_cash(self, slot: str) -> CashSale:
        """Sell ``slot`` from the inserted credit at the catalogue price."""
        if self.cash is None:
            raise ConfigurationError("this machine has no cash devices ([[cash]] in the "
                                     "configuration)")
        prices = {p["slot"]: p["price"] for p in self.products()}
        if slot not in prices:
            raise ConfigurationError(f"slot {slot!r} is not for sale")
        return self.cash.sell(slot, prices[slot])

    def buy_card(self, slot: str, *, session_timeout: float | None = None,
                 on_approved: Callable[[], None] | None = None,
                 cancelled: threading.Event | None = None) -> CardSaleResult:
        """Sell ``slot`` by card at the catalogue price (waits for the customer's card).

        ``cancelled`` (the screen's Cancel): the wait for a card is cut in short slices and
        ends, with nothing taken or vended, once it is set; a card already tapped when it is
        set still goes on to the reader's answer (a vend approved is always finished).
        """
        if self.card is None:
            raise ConfigurationError("this machine has no card reader ([[cashless]] in the "
                                     "configuration)")
        if not self.card.online:
            raise DisconnectedError("this machine cannot take cards right now: the card "
                                    f"reader is offline ({self.card.offline_reason}); "
                                    "nothing was taken")
        prices = {p["slot"]: p["price"] for p in self.products()}
        if slot not in prices:
            raise ConfigurationError(f"slot {slot!r} is not for sale")
        timeout = SESSION_TIMEOUT if session_timeout is None else session_timeout
        if cancelled is None:
            return self.card.sell(slot, prices[slot], session_timeout=timeout,
                                  on_approved=on_approved)
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            result = self.card.sell(slot, prices[slot], session_timeout=max(0.05, min(
                CARD_WAIT_SLICE, left)), on_approved=on_approved)
            if result.state != "no_card":
                return result
            if cancelled.is_set():
                return replace(result, state="cancelled")
            if time.monotonic() >= end:
                return result

    def return_change(self) -> int:
        return 0 if self.cash is None else self.cash.return_change()

    # --- ports that go away and come back ---------------------------------------------------

    def _board_online(self) -> bool:
        """False while the board's port is gone; a machine without that notion (a test
        double, an older integration) counts as online."""
        return bool(getattr(self.machine, "online", True))

    def card_ok(self) -> bool:
        """Whether the card reader can take a card now (False while its port is away)."""
        return self.card is not None and self.card.online

    def offline(self) -> list[str]:
        """What is offline because its port went away or could not be opened yet:
        ``"board"``, ``"card"`` and cash device names (``protocol@port`` for one never
        opened)."""
        down = [] if self._board_online() else ["board"]
        if self.card is not None and not self.card.online:
            down.append("card")
        if self.cash is not None:
            down += sorted(self.cash.acceptor.offline)
        down += sorted(self._cash_missing)
        return down

    def _reopen(self, part: str) -> None:
        if part == "board":
            self.machine.reopen()
        elif part == "card":
            assert self.card is not None
            self.card.reopen()
        elif part in self._cash_missing:  # first open of a device missing at start
            assert self.cash is not None
            opener = self._cash_missing[part]
            self.cash.acceptor.add(opener(), opener)
            del self._cash_missing[part]
        else:
            assert self.cash is not None
            self.cash.acceptor.reopen(part)

    def reconnect_once(self, failing: dict[str, str] | None = None) -> list[str]:
        """Try once to reopen every part whose port went away; returns what is still down.

        ``failing`` remembers each part's last error, so a retry that fails the same way
        is not logged again (one line per state change, not per retry)."""
        failing = {} if failing is None else failing
        for part in self.offline():
            try:
                self._reopen(part)
            except VendhwError as exc:
                why = f"{type(exc).__name__}: {exc}"
                if failing.get(part) != why:
                    log.warning("%s: not back yet (%s); trying again with backoff up to "
                                "%g s", part, why, RECONNECT_MAX)
                failing[part] = why
                continue
            failing.pop(part, None)
        return self.offline()

    def _reconnect_loop(self) -> None:
        """Reopen ports that went away, with backoff; look at the board's port when idle.
        Waits on an event (a port went away, the agent stops), never sleep-polls."""
        failing: dict[str, str] = {}
        delay = RECONNECT_FIRST
        while not self.stop.is_set():
            if not self.offline():
                delay = RECONNECT_FIRST
                self._ports_changed.wait(PORT_WATCH)
                self._ports_changed.clear()
                if self.stop.is_set():
                    return
                try:
                    self.machine.check_port()
                except Exception as exc:  # never lose the reconnect thread
                    log.debug("port check: %s", exc)
                continue
            # Something went away: wait a moment (the adapter is being plugged back, udev
            # makes its node), then try; double the wait after each failed try.
            self._ports_changed.wait(delay)
            self._ports_changed.clear()
            if self.stop.is_set():
                return
            try:
                down = self.reconnect_once(failing)
            except Exception:  # never lose the reconnect thread
                log.exception("reconnect attempt failed")
                down = self.offline()
            delay = min(delay * 2, RECONNECT_MAX) if down else RECONNECT_FIRST

    # --- life cycle -----------------------------------------------------------------------

    def start(self, *, screen: bool = True) -> None:
        """Reconcile, then ship and serve. Nothing is sold before the journal is settled."""
        recovered = self.shipper.recover()
        for item in recovered:
            log.warning("finished an interrupted instruction for order %s: %s", item.order_id,
                        item.outcome)
        if self.cash is not None:
            for sale in self.cash.recover():
                log.warning("finished an interrupted cash sale %s: %s", sale.reference,
                            sale.outcome)
            # Held credits journaled before any reset; a device whose start fails (silent,
            # pulled meanwhile) stays offline for the reconnect loop instead of stopping us.
            self.cash.acceptor.start_devices(offline_ok=True)
            self.cash.acceptor.enable()
            self.cash.acceptor.start()
        if self.card is not None:
            for reference in self.card.recover():
                log.warning("booked an interrupted card sale %s", reference)
            self.card.start(poll=True, offline_ok=True)
        threading.Thread(target=self.shipper.run, args=(self.stop,), name="shipper",
                         daemon=True).start()  # close() waits via shipper.wait_idle()
        self._reconnect = threading.Thread(target=self._reconnect_loop, name="reconnect",
                                           daemon=True)
        self._reconnect.start()
        if screen:
            self.screen = ScreenServer(self, self.config.screen_host, self.config.screen_port,
                                       self.config.screen)
            self.screen.start()

    def close(self) -> None:
        self.stop.set()
        self._ports_changed.set()
        if self._reconnect is not None:
            self._reconnect.join(timeout=RECONNECT_JOIN)
        if self.screen is not None:
            self.screen.close()
        # A vend in progress finishes; an idle long poll is abandoned (the thread is a daemon
        # and returns without shipping anything once the backend answers it).
        self.shipper.wait_idle()
        if self.cash is not None:
            self.cash.acceptor.stop()
            for device in self.cash.acceptor.devices:
                try:
                    device.disable()
                except Exception as exc:  # closing anyway; the device may be gone
                    log.info("%s: disable failed: %s", device.name, exc)
                device.close()
            self.cash.journal.close()
        if self.card is not None:
            self.card.close()
        self.shipper.close()
        if self.push is not None:
            self.push.close()
        self.client.close()
        self.machine.close()
        self.sold_out.close()
