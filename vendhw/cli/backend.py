"""``vendhw backend``: run the reference backend and administer it from the shell.

``serve`` runs the HTTP server; the other commands open the same database directly (no
server needed, safe while one runs: SQLite transactions are ``BEGIN IMMEDIATE``), so a demo
or a deployment script can register machines and print codes without an operator token.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.table import Column, Table

from vendhw.errors import ConfigurationError
from vendhw.server.settings import (
    DEFAULT_DB_URL,
    ServerSettings,
    load_provider_file,
    parse_duration,
)

if TYPE_CHECKING:
    from vendhw.server.service import Backend


class Duration(click.ParamType):
    """``90``, ``90s``, ``500ms``, ``2h``, ``1m30s`` -> seconds."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        try:
            return parse_duration(str(value))
        except ConfigurationError as exc:
            self.fail(str(exc), param, ctx)


DURATION = Duration()

ONLINE_WITHIN_S = 30.0
"""A machine long-polls about every 25 s: seen within twice that counts as online."""

GRACEFUL_SHUTDOWN = 3
"""Seconds a stopping server lets requests finish before it cuts them. Machines hold
instruction long polls open for up to 25 s; cut, they simply ask again after the restart."""


def db_url(value: str) -> str:
    """A SQLAlchemy URL, or a plain file path meaning a SQLite file."""
    return value if "://" in value else f"sqlite:///{Path(value).expanduser()}"


db_option = click.option(
    "--db", "db", default=DEFAULT_DB_URL, envvar="VENDHW_BACKEND_DB", show_default=True,
    help="SQLAlchemy URL (sqlite:///file.db, postgresql+psycopg://...) or a SQLite file path.")
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def _require_server_extra() -> None:
    try:
        import fastapi  # noqa: F401
        import sqlalchemy  # noqa: F401
    except ImportError as exc:
        raise click.ClickException(
            f"the backend needs the server extra: pip install 'vendhw[server]' ({exc})"
        ) from exc


def _check_listen(host: str, port: int) -> None:
    """A busy or forbidden address is one line naming --port, not a uvicorn traceback."""
    import socket

    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise click.BadParameter(f"cannot resolve {host!r} ({exc})", param_hint="--host") \
            from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            reason = "is in use (another server?)" if exc.errno == 98 else f"({exc.strerror})"
            raise click.BadParameter(f"{host}:{port} {reason}", param_hint="--port") from None


def check_db(db: str, *, create: bool = False) -> None:
    """A mistyped ``--db`` is an error, not a new empty database.

    Only the commands that set a backend up (``serve``, ``load``, ``machines add``) may
    create a SQLite file, and only in a folder that exists.
    """
    url = db_url(db)
    if not url.startswith("sqlite:///") or url == "sqlite:///:memory:":
        return
    path = Path(url[len("sqlite:///"):])
    if path.is_file():
        return
    if not create:
        raise click.BadParameter(
            f"no database file {path} (check the path; `vendhw backend serve` or "
            "`vendhw backend machines add` creates a new one)", param_hint="--db")
    if not path.parent.is_dir():
        raise click.BadParameter(f"folder {path.parent} does not exist, so {path.name} "
                                 "cannot be created there", param_hint="--db")


def _open(db: str, providers: str | None = None, *, create: bool = False) -> Backend:
    _require_server_extra()
    check_db(db, create=create)
    from vendhw.server.service import Backend

    settings = ServerSettings(db_url=db_url(db), run_poller=False)
    if providers:
        settings.providers = load_provider_file(providers)
    return Backend(settings)


def _read_document(path: str) -> dict[str, Any]:
    text = Path(path).read_text(encoding="utf-8")
    if path.endswith(".toml"):
        from vendhw.server.settings import tomllib

        return dict(tomllib.loads(text))
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"{path}: not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigurationError(f"{path}: the catalogue must be a JSON object")
    return data


@click.group()
def backend() -> None:
    """Run the reference backend (QR payment, codes, machine push, refunds)."""


@backend.command()
@db_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535),
              help="TCP port.")
@click.option("--public-url", default=None,
              help="Base URL phones and providers reach [default: http://HOST:PORT].")
@click.option("--provider", default="sandbox", show_default=True,
              type=click.Choice(["sandbox", "wechat", "alipay"]),
              help="Provider of new orders.")
@click.option("--providers", "providers_file", default=None, envvar="VENDHW_BACKEND_PROVIDERS",
              type=click.Path(exists=True, dir_okay=False),
              help="TOML file with [wechat] / [alipay] / [sandbox] option tables.")
@click.option("--order-ttl", type=DURATION, default="2m", show_default=True,
              help="How long a payment QR stays payable.")
@click.option("--query-interval", type=DURATION, default="2s", show_default=True,
              help="First provider query after the QR is issued (then doubling).")
@click.option("--query-max", type=DURATION, default="30s", show_default=True,
              help="Longest gap between provider queries.")
@click.option("--late-window", type=DURATION, default="2h", show_default=True,
              help="How long expired orders are watched for late payments to refund.")
@click.option("--redeliver-after", type=DURATION, default="10s", show_default=True,
              help="Resend an instruction the machine has not acknowledged after this.")
@click.option("--operator-token", envvar="VENDHW_OPERATOR_TOKEN", default=None,
              help="Bearer token of the operator API [default: generated and printed].")
@click.option("--bootstrap", "bootstrap", default=None,
              type=click.Path(exists=True, dir_okay=False),
              help="Catalogue (JSON or TOML: products, machines, slots) to load at start.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@click.option("--mqtt", "mqtt_broker", default=None, metavar="HOST[:PORT]",
              envvar="VENDHW_MQTT_BROKER",
              help="Also push instructions over MQTT through this broker (QoS 1).")
@click.option("--mqtt-user", default="vendhw-backend", show_default=True,
              envvar="VENDHW_MQTT_USER")
@click.option("--mqtt-password", default=None, envvar="VENDHW_MQTT_PASSWORD",
              help="[env VENDHW_MQTT_PASSWORD]")
@click.option("--idempotency-lease", type=DURATION, default="60s", show_default=True,
              help="Last resort: an Idempotency-Key in progress this long whose holder has "
                   "no heartbeat (an older server) belongs to a request that died; a retry "
                   "then runs it again.")
@click.option("--instance-heartbeat", type=DURATION, default="1s", show_default=True,
              help="How often this process renews its row in server_instances.")
@click.option("--instance-timeout", type=DURATION, default="5s", show_default=True,
              help="A process not seen this long is dead: retries take over the "
                   "Idempotency-Keys its requests held (at least twice the heartbeat).")
@click.option("--poller/--no-poller", default=True, show_default=True,
              help="Run the provider-query/expiry/refund loop here (one process of a fleet "
                   "is enough; running it in several is safe).")
@click.option("--allow-public-sandbox", is_flag=True,
              help="Serve the sandbox provider (its pay page pays without authentication) on "
                   "a non-loopback address anyway.")
def serve(db: str, host: str, port: int, public_url: str | None, provider: str,
          providers_file: str | None, order_ttl: float, query_interval: float,
          query_max: float, late_window: float, redeliver_after: float,
          operator_token: str | None, bootstrap: str | None, log_level: str,
          mqtt_broker: str | None, mqtt_user: str, mqtt_password: str | None,
          idempotency_lease: float, instance_heartbeat: float, instance_timeout: float,
          poller: bool, allow_public_sandbox: bool) -> None:
    """Serve the backend over HTTP (creates the schema on first start).

    OpenAPI documentation at /docs; readiness at /healthz.
    """
    _require_server_extra()
    if not instance_heartbeat > 0 or instance_timeout < 2 * instance_heartbeat:
        raise click.BadParameter("must be at least twice --instance-heartbeat (positive)",
                                 param_hint="--instance-timeout")
    provider_tables = load_provider_file(providers_file) if providers_file else {}
    if (provider == "sandbox" or "sandbox" in provider_tables) and not _is_loopback(host):
        if not allow_public_sandbox:
            raise click.ClickException(
                f"refusing to serve the sandbox provider on {host!r}: anyone who reaches its "
                "pay page can mark orders paid. Bind 127.0.0.1, use --provider wechat/alipay, "
                "or pass --allow-public-sandbox.")
        click.echo(f"WARNING: the sandbox provider is reachable on {host}: anyone who reaches "
                   "/sandbox/pay/... can mark orders paid (no money moves).", err=True)
    check_db(db, create=True)
    _check_listen(host, port)
    import uvicorn

    # Request threads queue for the database; hand the GIL over sooner than the default 5 ms
    # so the thread holding the database is not kept waiting by one that is not (+30 % here).
    sys.setswitchinterval(0.001)

    from vendhw.server.app import create_app
    from vendhw.server.service import Backend

    local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    url_host = f"[{local}]" if ":" in local else local
    settings = ServerSettings(
        db_url=db_url(db), public_url=public_url or f"http://{url_host}:{port}",
        internal_url=f"http://{url_host}:{port}" if port else None, provider=provider,
        providers=provider_tables,
        operator_token=operator_token or "", order_ttl=order_ttl,
        query_interval=query_interval, query_max=query_max, late_window=late_window,
        redeliver_after=redeliver_after, run_poller=poller,
        idempotency_lease=idempotency_lease, instance_heartbeat=instance_heartbeat,
        instance_timeout=instance_timeout)
    generated = not settings.operator_token
    settings.ensure_operator_token()
    the_backend = Backend(settings)
    if bootstrap:
        counts = the_backend.load_catalogue(_read_document(bootstrap))
        click.echo(f"loaded {bootstrap}: {counts}", err=True)
    app = create_app(backend=the_backend)
    click.echo(f"vendhw backend on http://{url_host}:{port} (db {settings.db_url}, "
               f"providers {', '.join(sorted(the_backend.providers))})", err=True)
    if generated:
        click.echo(f"operator token: {settings.operator_token}", err=True)
    from vendhw.agent.screen import is_loopback_url

    if is_loopback_url(settings.public_url):
        click.secho(f"warning: payment QR codes will point at {settings.public_url}, a loopback "
                    "address no phone can reach; set --public-url to this server's address "
                    "on the network", fg="yellow", err=True)
    bridge = None
    if mqtt_broker:
        from vendhw.server.mqtt import MqttBridge

        broker_host, _, broker_port = mqtt_broker.rpartition(":")
        if not broker_host or not broker_port.isdigit():
            broker_host, broker_port = mqtt_broker, "1883"
        bridge = MqttBridge(the_backend, broker_host, int(broker_port), username=mqtt_user,
                            password=mqtt_password)
        bridge.start()
        click.echo(f"MQTT push through {broker_host}:{broker_port}", err=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False,
                    timeout_graceful_shutdown=GRACEFUL_SHUTDOWN)
    finally:
        if bridge is not None:
            bridge.stop()


def _is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    import ipaddress

    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


@backend.command("migrate")
@db_option
@json_option
def migrate(db: str, as_json: bool) -> None:
    """Apply the database migrations (``serve`` also does at every start)."""
    _require_server_extra()
    from vendhw.server.db import Database

    database = Database(db_url(db))
    try:
        result = database.migrate()
    finally:
        database.dispose()
    if as_json:
        click.echo(json.dumps({"db": database.url, **result}))
    else:
        click.echo(f"{database.url}: schema {result['from'] or '(new)'} -> {result['to']}")


@backend.command("load")
@click.argument("catalogue", type=click.Path(exists=True, dir_okay=False))
@db_option
def load(catalogue: str, db: str) -> None:
    """Load a catalogue file (products, machines with secrets, slots and prices)."""
    counts = _open(db, create=True).load_catalogue(_read_document(catalogue))
    click.echo(json.dumps(counts))


@backend.group()
def machines() -> None:
    """Register and list machines."""


def _parse_slot(text: str) -> tuple[str, str, int | None]:
    slot, sep, rest = text.partition("=")
    product, _, price = rest.partition(":")
    if not sep or not slot or not product:
        raise click.BadParameter(f"{text!r}: use SLOT=PRODUCT[:PRICE], e.g. A1=cola:350")
    try:
        return slot, product, int(price) if price else None
    except ValueError:
        raise click.BadParameter(f"{text!r}: the price is an integer of fen/cents") from None


@machines.command("add")
@click.argument("machine_id")
@click.option("--secret", default=None, help="Shared HMAC secret, 16+ characters "
                                             "[default: generated and printed].")
@click.option("--name", default="", help="A human name (location).")
@click.option("--currency", default="CNY", show_default=True)
@click.option("--slot", "slots", multiple=True, metavar="SLOT=PRODUCT[:PRICE]",
              help="A slot and what it sells (repeatable); unknown products are created.")
@db_option
@json_option
def machines_add(machine_id: str, secret: str | None, name: str, currency: str,
                 slots: tuple[str, ...], db: str, as_json: bool) -> None:
    """Register (or update) a machine and its slots."""
    import secrets as _secrets

    parsed = [_parse_slot(s) for s in slots]
    new_secret = secret or _secrets.token_hex(16)
    products = [{"id": p} for p in dict.fromkeys(p for _, p, _ in parsed)]
    document: dict[str, Any] = {"products": products, "machines": [{
        "id": machine_id, "secret": new_secret, "name": name, "currency": currency,
        "slots": [{"slot": s, "product": p, **({"price": pr} if pr is not None else {})}
                  for s, p, pr in parsed]}]}
    if not slots:
        del document["machines"][0]["slots"]
    the_backend = _open(db, create=True)
    the_backend.load_catalogue(document)
    result = {"id": machine_id, "secret": new_secret, **the_backend.catalogue(machine_id)}
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(f"machine {machine_id}  secret {new_secret}")
        for slot in result["slots"]:
            click.echo(f"  {slot['slot']}: {slot['product_id']} {slot['price']}")


@machines.command("list")
@db_option
@json_option
def machines_list(db: str, as_json: bool) -> None:
    """List machines: last seen, online, pending instructions, open orders."""
    from vendhw.server.operators import Operators

    rows = Operators(_open(db)).machines()
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    table = Table(_id_column(rows, "id"), "name", "currency", "last seen", "online",
                  "pending instr.", "open orders")
    for row in rows:
        table.add_row(row["id"], row["name"], row["currency"], row["last_seen"] or "-",
                      "yes" if row["online"] else "no", str(row["pending_instructions"]),
                      str(row["open_orders"]))
    Console().print(table)


@backend.group()
def codes() -> None:
    """Pickup and lottery codes."""


@codes.command("create")
@click.option("--product", required=True, help="Product id the codes are good for.")
@click.option("--count", default=1, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--valid-for", type=DURATION, default="2h", show_default=True)
@click.option("--machine", default=None, help="Bind the codes to one machine.")
@click.option("--kind", default="pickup", show_default=True,
              type=click.Choice(["pickup", "lottery"]))
@db_option
@json_option
def codes_create(product: str, count: int, valid_for: float, machine: str | None, kind: str,
                 db: str, as_json: bool) -> None:
    """Create single-use numeric codes and print them (the only time they are shown)."""
    from vendhw.server.service import ApiError

    try:
        created = _open(db).create_codes(product, count, valid_for, machine_id=machine,
                                         kind=kind)
    except ApiError as exc:
        raise click.ClickException(exc.detail) from exc
    if as_json:
        click.echo(json.dumps({"codes": created}))
        return
    for item in created:
        click.echo(item["code"])
    click.echo(f"{count} {kind} code(s) for {product}, valid until "
               f"{created[0]['expires_at']}, batch {created[0]['batch_id']}", err=True)


@codes.command("list")
@click.option("--status", "--state", "status", default=None,
              type=click.Choice(["active", "reserved", "consumed", "revoked"]))
@click.option("--product", default=None)
@click.option("--machine", default=None)
@click.option("--batch", default=None, help="Only this batch ('codes create' prints it).")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100_000))
@db_option
@json_option
def codes_list(status: str | None, product: str | None, machine: str | None,
               batch: str | None, limit: int, db: str, as_json: bool) -> None:
    """Codes, newest first (their digits are never stored, only shown at creation)."""
    rows = _open(db).list_codes(status, product, machine, limit, batch_id=batch)
    if as_json:
        for row in rows:  # one object per line, as every --json list
            click.echo(json.dumps(row))
        return
    table = Table("id", "kind", "product", "machine", "batch", "status", "expires", "order")
    for row in rows:
        table.add_row(str(row["id"]), row["kind"], row["product_id"], row["machine_id"] or "*",
                      row["batch_id"] or "-", row["status"], row["expires_at"],
                      row["order_id"] or "")
    Console().print(table)


@codes.command("revoke")
@click.argument("code_ids", nargs=-1, type=int)
@click.option("--batch", default=None, help="Every code of this batch ('codes create' "
                                            "prints it).")
@click.option("--code", "digits", default=None,
              help="The code itself, as the customer has it (instead of its id).")
@click.option("--note", default="", help="Why (kept in the audit log).")
@db_option
@json_option
def codes_revoke(code_ids: tuple[int, ...], batch: str | None, digits: str | None, note: str,
                 db: str, as_json: bool) -> None:
    """Withdraw unused codes by id, --code or --batch (a code being used or already used is
    refused, the others are revoked)."""
    from vendhw.server.operators import Operators
    from vendhw.server.service import ApiError

    if sum(1 for given in (code_ids, batch, digits) if given) != 1:
        raise click.UsageError("give code ids, --code CODE or --batch ID")
    backend_ = _open(db)
    if batch:
        code_ids = tuple(Operators(backend_).batch_code_ids(batch))
        if not code_ids:
            raise click.ClickException(f"no codes in batch {batch!r}")
    elif digits:
        found = Operators(backend_).find_code(digits)
        if found is None:
            raise click.ClickException("no such code")
        code_ids = (found,)
    results: list[dict[str, Any]] = []
    failed = False
    for code_id in code_ids:
        try:
            results.append(backend_.revoke_code(code_id, note))
        except ApiError as exc:
            failed = True
            results.append({"id": code_id, "error": exc.code, "detail": exc.detail})
    if as_json:
        for result in results:  # one object per line, as every --json list
            click.echo(json.dumps(result))
    else:
        for row in results:
            click.echo(f"{row['id']}: {row.get('status') or row['error'] + ' - ' + row['detail']}")
    if failed:
        sys.exit(1)


def _id_column(rows: list[dict[str, Any]], key: str) -> Column:
    """A column that never cuts an id another command needs (rich folds it otherwise)."""
    width = max([len(str(r.get(key, ""))) for r in rows] + [len(key)])
    return Column(key, no_wrap=True, min_width=width)


@backend.group()
def orders() -> None:
    """Look at orders and settle the ones that need a person."""


@orders.command("list")
@click.option("--state", default=None, help="Only this state (e.g. needs_review).")
@click.option("--machine", default=None)
@click.option("--limit", default=50, show_default=True)
@db_option
@json_option
def orders_list(state: str | None, machine: str | None, limit: int, db: str,
                as_json: bool) -> None:
    """The latest orders."""
    rows = _open(db).list_orders(state, machine, limit)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    from vendhw.money import format_money

    table = Table(_id_column(rows, "id"), "machine", "slot", "amount", "state", "outcome",
                  "created")
    for row in rows:
        table.add_row(row["id"], row["machine_id"], row["slot"],
                      format_money(row["amount"], row.get("currency") or ""),
                      row["state"], row["outcome"] or "", row["created_at"])
    Console().print(table)


@orders.command("show")
@click.argument("order_id")
@db_option
def orders_show(order_id: str, db: str) -> None:
    """One order with its payment, refund and audit trail (JSON)."""
    from vendhw.server.service import ApiError

    try:
        click.echo(json.dumps(_open(db).order_detail(order_id)))
    except ApiError as exc:
        raise click.ClickException(exc.detail) from exc


@orders.command("refund")
@click.argument("order_id")
@click.option("--note", default="", help="Why (kept in the audit log).")
@click.option("--providers", "providers_file", default=None, envvar="VENDHW_BACKEND_PROVIDERS",
              type=click.Path(exists=True, dir_okay=False),
              help="Provider options, so the refund can be made from here; otherwise the "
                   "running server's loop makes it.")
@db_option
@json_option
def orders_refund(order_id: str, note: str, providers_file: str | None, db: str,
                  as_json: bool) -> None:
    """Refund a paid order whose machine never took it (its instruction is withdrawn)."""
    from vendhw.server.service import ApiError

    try:
        result = _open(db, providers_file).operator_refund(order_id, note)
    except ApiError as exc:
        raise click.ClickException(exc.detail) from exc
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(f"{result['id']}: {result['state']}")


@orders.command("resolve")
@click.argument("order_id")
@click.option("--delivered", "decision", flag_value="delivered",
              help="The customer got the product.")
@click.option("--refund", "decision", flag_value="refund", help="Refund the customer.")
@click.option("--note", default="", help="Why (kept in the audit log).")
@click.option("--providers", "providers_file", default=None, envvar="VENDHW_BACKEND_PROVIDERS",
              type=click.Path(exists=True, dir_okay=False),
              help="Provider options, so the refund can be made from here; otherwise the "
                   "running server's loop makes it.")
@db_option
def orders_resolve(order_id: str, decision: str | None, note: str,
                   providers_file: str | None, db: str) -> None:
    """Settle a needs_review order (an unknown dispense outcome)."""
    from vendhw.server.service import ApiError

    if decision is None:
        raise click.UsageError("give --delivered or --refund")
    try:
        result = _open(db, providers_file).resolve(order_id, decision, note)
    except ApiError as exc:
        raise click.ClickException(exc.detail) from exc
    click.echo(json.dumps(result))


from vendhw.cli import backend_ops  # noqa: E402,F401  (registers its commands)

if __name__ == "__main__":  # pragma: no cover
    backend(sys.argv[1:])
