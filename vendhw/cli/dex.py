"""``vendhw dex``: EVA-DTS audit reports and the DEX/UCS link (report, parse, serve, read)."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from vendhw.errors import VendhwError

DEFAULT_DATA_DIR = "/var/lib/vendhw"
"""The agent's default ``data_dir`` (``machine.toml`` ``[agent]``)."""
CATALOGUE_TIMEOUT = 5.0
"""Seconds to wait for the backend's catalogue (prices) before reporting without it."""


def _fail(message: str, code: int = 2) -> None:
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(code)


def _prices(values: tuple[str, ...]) -> dict[str, int]:
    prices: dict[str, int] = {}
    for item in values:
        slot, sep, amount = item.partition("=")
        if not sep or not slot.strip() or not amount.strip().isdigit():
            _fail(f"--price {item!r}: give SLOT=AMOUNT in minor units, e.g. 12=150")
        prices[slot.strip()] = int(amount)
    return prices


def _journal_path(journal: str | None) -> Path:
    if journal is not None:
        return Path(journal).expanduser()
    data_dir = os.environ.get("VENDHW_DATA_DIR", DEFAULT_DATA_DIR)
    return Path(data_dir) / "vends.db"


def _report_options(func: Any) -> Any:
    options = [
        click.option("--config", "config_path", default=None, metavar="TOML",
                     type=click.Path(dir_okay=False),
                     help="The machine's machine.toml: its data_dir journals, machine id, and "
                          "the prices and currency of the backend's catalogue."),
        click.option("--journal", "journal", default=None, metavar="DB",
                     help="The vend journal (vends.db); default $VENDHW_DATA_DIR/vends.db "
                          f"or {DEFAULT_DATA_DIR}/vends.db."),
        click.option("--cash-journal", default=None, metavar="DB",
                     help="The cash journal; default cash.db beside the vend journal."),
        click.option("--price", "prices", multiple=True, metavar="SLOT=AMOUNT",
                     help="A slot's price in minor units (repeatable): PA1 and the value of "
                          "card and QR sales."),
        click.option("--machine-id", default="", help="ID101 and the communication id."),
        click.option("--currency", default=None,
                     help="ISO 4217 code for ID4 (default: the catalogue's, else EUR)."),
        click.option("--decimals", default=2, show_default=True, type=click.IntRange(0, 4),
                     help="Decimal places of the amounts (ID401)."),
        click.option("--reset", is_flag=True,
                     help="Make this a read with reset: interim figures start again after it."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@dataclass
class _Source:
    """Where a report's figures come from, resolved once per command."""

    journal: Path
    cash_journal: str | None
    prices: dict[str, int]
    machine_id: str
    currency: str
    decimals: int
    reset: bool


def _source(config_path: str | None, journal: str | None, cash_journal: str | None,
            prices: tuple[str, ...], machine_id: str, currency: str | None, decimals: int,
            reset: bool) -> _Source:
    """Options, completed from machine.toml and the backend's catalogue when given."""
    table: dict[str, int] = {}
    catalogue_currency = ""
    if config_path is not None:
        from vendhw.agent.runner import AgentConfig
        from vendhw.dex.collect import catalogue_prices

        config = AgentConfig.load(config_path)
        journal = journal or str(config.data_dir / "vends.db")
        machine_id = machine_id or config.machine_id
        try:
            from vendhw.client import BackendClient

            with_client = BackendClient(config.backend_url, config.machine_id, config.secret,
                                        retries=0, timeout=CATALOGUE_TIMEOUT)
            try:
                table, catalogue_currency = catalogue_prices(with_client.catalogue())
            finally:
                with_client.close()
        except Exception as exc:  # the report is still worth having without the backend
            click.secho(f"warning: no prices from the backend ({exc}); card and QR sales "
                        f"are counted with value 0 unless --price gives them", fg="yellow",
                        err=True)
    table.update(_prices(prices))
    return _Source(_journal_path(journal), cash_journal, table, machine_id,
                   currency or catalogue_currency or "EUR", decimals, reset)


def _make_report(source: _Source) -> str:
    from vendhw.dex.collect import ReadLog, collect
    from vendhw.dex.report import generate

    path = source.journal
    if not path.is_file():
        raise VendhwError(f"vend journal {path} does not exist (give --journal or --config)")
    log = ReadLog(path.with_name("dex.db"))
    try:
        audit = collect(path, cash_journal=source.cash_journal, prices=source.prices,
                        machine_id=source.machine_id, currency=source.currency,
                        decimals=source.decimals, read_log=log, reset=source.reset)
    finally:
        log.close()
    return generate(audit)


@click.group()
def dex() -> None:
    """EVA-DTS audit data and the DEX/UCS link to handheld readers."""


@dex.command()
@_report_options
@click.option("--output", "-o", default=None, type=click.Path(dir_okay=False),
              help="Write the report to this file instead of standard output.")
def report(config_path: str | None, journal: str | None, cash_journal: str | None,
           prices: tuple[str, ...], machine_id: str, currency: str | None, decimals: int,
           reset: bool, output: str | None) -> None:
    """Write the EVA-DTS audit report of the machine's journals."""
    try:
        text = _make_report(_source(config_path, journal, cash_journal, prices, machine_id,
                                    currency, decimals, reset))
    except VendhwError as exc:
        _fail(str(exc))
    if output:
        Path(output).write_bytes(text.encode("ascii"))
    else:
        sys.stdout.buffer.write(text.encode("ascii"))
        sys.stdout.flush()


@dex.command()
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per transmission.")
def parse(file: str, as_json: bool) -> None:
    """Check and read an EVA-DTS file (G85 CRC, SE count, the figures).

    Exit status 0 when every transmission is valid, 1 when a check failed, 2 when the file
    is not EVA-DTS at all.
    """
    from vendhw.dex.report import parse_all

    try:
        raw = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    except OSError as exc:
        _fail(f"cannot read {file}: {exc.strerror or exc}")
    try:
        documents = parse_all(raw.decode("ascii", errors="replace"))
    except VendhwError as exc:
        _fail(f"{file}: {exc}")
    for doc in documents:
        if as_json:
            click.echo(json.dumps(doc.to_dict()))
            continue
        audit = doc.audit
        g85 = {True: "ok", False: "BAD", None: "absent"}[doc.g85_ok]
        click.echo(f"{file}: comm id {doc.comm_id}, machine {audit.machine_id or '-'}, "
                   f"{len(doc.segments)} segments, G85 {doc.g85_stated or '-'} ({g85}), "
                   f"SE {doc.se_stated} ({doc.se_convention})")
        click.echo(f"  paid vends {audit.paid.count} = {audit.paid.value} "
                   f"(since reset {audit.paid.count_reset} = {audit.paid.value_reset}); "
                   f"cash {audit.cash.count} = {audit.cash.value}; "
                   f"cashless 1 {audit.cashless1.count} = {audit.cashless1.value}; "
                   f"cashless 2 {audit.cashless2.count} = {audit.cashless2.value}")
        for product in audit.products:
            click.echo(f"  selection {product.selection}: price {product.price}, "
                       f"{product.paid.count} sold = {product.paid.value}")
        for event in audit.events:
            click.echo(f"  event {event.code}: {event.count} ({event.count_reset} since "
                       f"reset), last {event.date} {event.time}")
        for problem in doc.problems:
            click.secho(f"  problem: {problem}", fg="yellow")
    sys.exit(0 if all(doc.valid for doc in documents) else 1)


@dex.command()
@click.option("--port", required=True, help="Serial port (or transport URL) of the DEX jack.")
@_report_options
@click.option("--once", is_flag=True, help="Serve one read, then exit.")
def serve(port: str, config_path: str | None, journal: str | None, cash_journal: str | None,
          prices: tuple[str, ...], machine_id: str, currency: str | None, decimals: int,
          reset: bool, once: bool) -> None:
    """Answer handheld readers on PORT with the audit report (the machine's DEX jack)."""
    from vendhw.dex.link import BAUDRATE, DexSlave, run
    from vendhw.dex.report import comm_id_for
    from vendhw.transport import open_transport

    try:
        source = _source(config_path, journal, cash_journal, prices, machine_id, currency,
                         decimals, reset)
    except VendhwError as exc:
        _fail(str(exc))
    if not source.journal.is_file():
        _fail(f"vend journal {source.journal} does not exist (give --journal or --config)")

    def make() -> bytes:
        return _make_report(source).encode("ascii")

    comm_id = comm_id_for(source.machine_id or "vendhw")
    try:
        transport = open_transport(port, baudrate=BAUDRATE)
    except VendhwError as exc:
        _fail(str(exc))
    click.echo(f"serving DEX on {port} as {comm_id}", err=True)
    try:
        while True:
            try:
                result = run(DexSlave(make, comm_id), transport)
            except VendhwError as exc:
                click.secho(f"read failed: {exc}", fg="yellow", err=True)
                if once:
                    sys.exit(1)
                continue
            click.echo(json.dumps({"event": "read", "reader": result.peer_comm_id,
                                   "bytes": len(result.data), "blocks": result.blocks,
                                   "retries": result.retries}), err=True)
            if once:
                return
    except KeyboardInterrupt:
        return
    finally:
        transport.close()


@dex.command()
@click.option("--port", required=True, help="Serial port (or transport URL) of the machine.")
@click.option("--comm-id", default="1234567890", show_default=True,
              help="This handheld's 10-character communication id.")
@click.option("--output", "-o", default=None, type=click.Path(dir_okay=False),
              help="Write the report read to this file.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary of the read.")
@click.option("--timeout", default=10.0, show_default=True,
              help="Seconds to wait for the machine to answer at all.")
def read(port: str, comm_id: str, output: str | None, as_json: bool, timeout: float) -> None:
    """Read a machine's audit report like a handheld (the DEX/UCS master)."""
    from vendhw.dex.link import BAUDRATE, DexMaster, run
    from vendhw.dex.report import parse_all
    from vendhw.transport import open_transport

    if len(comm_id) != 10:
        _fail(f"--comm-id must have 10 characters, not {comm_id!r}")
    try:
        transport = open_transport(port, baudrate=BAUDRATE)
    except VendhwError as exc:
        _fail(str(exc))
    started = time.monotonic()
    try:
        result = run(DexMaster(comm_id), transport, idle_timeout=timeout)
    except VendhwError as exc:
        _fail(str(exc), 1)
    finally:
        transport.close()
    elapsed = time.monotonic() - started
    if output:
        Path(output).write_bytes(result.data)
    if as_json:
        summary: dict[str, Any] = {"machine": result.peer_comm_id, "bytes": len(result.data),
                                   "blocks": result.blocks, "retries": result.retries,
                                   "seconds": round(elapsed, 4),
                                   "wire_seconds_9600": round(result.wire_seconds, 3)}
        try:
            doc = parse_all(result.data.decode("ascii", errors="replace"))[0]
            summary.update(valid=doc.valid, g85_ok=doc.g85_ok,
                           paid=doc.audit.paid.count, paid_value=doc.audit.paid.value)
        except VendhwError as exc:
            summary.update(valid=False, error=str(exc))
        click.echo(json.dumps(summary))
    elif not output:
        sys.stdout.buffer.write(result.data)
        sys.stdout.flush()
