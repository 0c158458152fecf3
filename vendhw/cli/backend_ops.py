"""Operator commands of ``vendhw backend`` (see docs/backend-operators.md): partial refunds,
machines show, orders export (codes list/revoke live in backend.py). Like the other admin
commands they open the database directly. ``--json`` prints one JSON object per line, money
in minor units with the currency; the tables print money as "3.50 CNY"."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import IO, TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.table import Table

from vendhw.cli.backend import _open, backend, db_option, json_option, machines, orders

if TYPE_CHECKING:
    from vendhw.server.operators import Operators

REFUND_STATES = ("pending", "processing", "succeeded")
ORDER_STATES = ("created", "awaiting_payment", "paid", "dispensing", "delivered", "refunding",
                "refunded", "needs_review", "expired", "cancelled")

providers_option = click.option(
    "--providers", "providers_file", default=None, envvar="VENDHW_BACKEND_PROVIDERS",
    type=click.Path(exists=True, dir_okay=False),
    help="Provider options, so the refund is made from here; otherwise the running "
         "server's loop makes it.")


def _ops(db: str, providers_file: str | None = None) -> Operators:
    from vendhw.server.operators import Operators

    return Operators(_open(db, providers_file))


def _lines(rows: Iterable[dict[str, Any]]) -> None:
    for row in rows:
        click.echo(json.dumps(row))


def _fail(exc: Exception) -> click.ClickException:
    from vendhw.server.service import ApiError

    if isinstance(exc, ApiError):
        return click.ClickException(exc.detail)
    return click.ClickException(str(exc))


def _money(amount: int | None, currency: str) -> str:
    from vendhw.server.operators import money

    return money(amount, currency) if amount is not None else "-"


# --- refunds ------------------------------------------------------------------------------


@backend.group()
def refunds() -> None:
    """Refund part of a delivered order; list refunds."""


@refunds.command("create")
@click.argument("order_id")
@click.option("--amount", required=True, metavar="MAJOR",
              help="How much to refund, in major units (1.50 = 1 yuan 50 fen).")
@click.option("--reason", default="", help="Why (kept with the refund and in the audit log).")
@click.option("--operator", default="operator", show_default=True, help="Who asks.")
@click.option("--request-key", default=None,
              help="Idempotency key: repeating the command with it returns the first refund "
                   "instead of refunding again.")
@providers_option
@db_option
@json_option
def refunds_create(order_id: str, amount: str, reason: str, operator: str,
                   request_key: str | None, providers_file: str | None, db: str,
                   as_json: bool) -> None:
    """Refund AMOUNT of delivered order ORDER_ID (partial refund; the order stays delivered)."""
    from vendhw.server.operators import parse_money
    from vendhw.server.service import ApiError

    try:
        minor = parse_money(amount)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--amount") from None
    ops = _ops(db, providers_file)
    try:
        refund = ops.refund_part(order_id, minor, reason, operator=operator,
                                 request_key=request_key)
        detail = ops.backend.order_detail(order_id)
    except ApiError as exc:
        raise _fail(exc) from None
    if as_json:
        click.echo(json.dumps(refund))
        return
    cur = refund["currency"]
    click.echo(f"refund {refund['out_refund_no']}: {_money(refund['amount'], cur)} of order "
               f"{order_id}, {refund['status']}"
               + (f" ({refund['last_error']})" if refund["last_error"] else ""))
    paid = (detail.get("payment") or {}).get("amount")
    click.echo(f"order {order_id}: paid {_money(paid, cur)}, refunded "
               f"{_money(detail['refunded'], cur)}, pending "
               f"{_money(detail['refund_pending'], cur)}")


@refunds.command("list")
@click.option("--order", "order_id", default=None, help="Only this order's refunds.")
@click.option("--status", default=None, type=click.Choice(REFUND_STATES))
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10_000))
@db_option
@json_option
def refunds_list(order_id: str | None, status: str | None, limit: int, db: str,
                 as_json: bool) -> None:
    """Refunds, newest first (whole and partial)."""
    rows = _ops(db).list_refunds(order_id, status, limit)
    if as_json:
        _lines(rows)
        return
    table = Table("id", "order", "kind", "amount", "status", "reason", "operator", "created")
    for r in rows:
        table.add_row(r["out_refund_no"], r["order_id"], r["kind"],
                      _money(r["amount"], r["currency"]), r["status"], r["reason"],
                      r["operator"] or "-", r["created_at"])
    Console(width=200).print(table)


# --- machines -----------------------------------------------------------------------------


@machines.command("show")
@click.argument("machine_id")
@db_option
@json_option
def machines_show(machine_id: str, db: str, as_json: bool) -> None:
    """One machine: online, last seen, slots, pending instructions, open orders."""
    from vendhw.server.service import ApiError

    try:
        data = _ops(db).machine(machine_id)
    except ApiError as exc:
        raise _fail(exc) from None
    if as_json:
        click.echo(json.dumps(data))
        return
    seen = data["last_seen"] or "never"
    if data["seen_ago_s"] is not None:
        seen += f" ({data['seen_ago_s']:.0f} s ago)"
    click.echo(f"machine {data['id']} {data['name']!r} ({data['currency']})")
    click.echo(f"  online: {'yes' if data['online'] else 'no'}; last seen: {seen}")
    click.echo("  slots: " + ", ".join(
        f"{s['slot']}={s['product_id']} {_money(s['price'], data['currency'])}"
        + ("" if s["enabled"] else " (disabled)") for s in data["slot_list"]))
    click.echo(f"  pending instructions: {len(data['instructions'])}")
    for i in data["instructions"]:
        click.echo(f"    {i['id']} {i['type']} order {i['order_id']} "
                   f"(delivered {i['deliveries']}x)")
    click.echo(f"  open orders: {len(data['orders'])}")
    for o in data["orders"]:
        click.echo(f"    {o['id']} {o['state']} slot {o['slot']} "
                   f"{_money(o['amount'], o['currency'])} {o['created_at']}")
    if data["reserved_codes"]:
        click.echo("  codes in a running vend: " + ", ".join(
            str(c["id"]) for c in data["reserved_codes"]))


# --- orders export ------------------------------------------------------------------------


class IsoTime(click.ParamType):
    name = "iso-time"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        from vendhw.server.operator_routes import parse_time

        try:
            return parse_time(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


@orders.command("export")
@click.option("--format", "fmt", default="csv", show_default=True,
              type=click.Choice(["csv", "jsonl"]), help="jsonl = one JSON object per line.")
@click.option("--since", type=IsoTime(), default=None,
              help="Orders created at or after (ISO 8601; UTC unless an offset is given).")
@click.option("--until", type=IsoTime(), default=None, help="Orders created before.")
@click.option("--state", default=None, type=click.Choice(ORDER_STATES))
@click.option("--machine", default=None, help="Only this machine's orders.")
@click.option("--limit", default=None, type=click.IntRange(1, None),
              help="At most this many orders (the oldest first) [default: all].")
@click.option("--output", "-o", default=None, type=click.Path(dir_okay=False, writable=True),
              help="Write here instead of stdout.")
@db_option
@json_option
def orders_export(fmt: str, since: float | None, until: float | None, state: str | None,
                  machine: str | None, limit: int | None, output: str | None, db: str,
                  as_json: bool) -> None:
    """Orders created in [--since, --until), oldest first: CSV with a header row (money in
    major units, currency column, ISO times) or, with --json / --format jsonl, JSON lines
    (money in minor units)."""
    from vendhw.server.operators import csv_rows

    rows = _ops(db).export_orders(since, until, state, machine, limit)
    chunks: Iterator[str] = ((json.dumps(r) + "\n" for r in rows)
                             if as_json or fmt == "jsonl" else csv_rows(rows))
    count = -1 if fmt == "csv" and not as_json else 0
    stream: IO[str]
    if output:
        try:
            with open(output, "w", encoding="utf-8", newline="") as stream:
                for chunk in chunks:
                    stream.write(chunk)
                    count += 1
        except OSError as exc:
            raise click.ClickException(f"cannot write {output}: {exc.strerror}") from None
        click.echo(f"{count} order(s) -> {output}", err=True)
    else:
        for chunk in chunks:
            click.echo(chunk, nl=False)
