"""``vendhw demo``: the whole sale on simulated hardware with the local reference backend."""

from __future__ import annotations

import json
import logging
import signal
import sys
from typing import Any

import click
from rich.console import Console

from vendhw.errors import VendhwError


class _Stopped(BaseException):
    """SIGTERM arrived: unwind so every child process is stopped and the folder removed."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


_LABELS = {
    "backend_ready": "backend ready at {url} (sandbox payments)",
    "board_ready": "board {board} simulated on {port}",
    "order_created": "order {order}: slot {slot}, {amount} {currency}",
    "waiting_for_payment": "scan the QR or open {pay_url} and press Pay",
    "paid": "paid ({by})",
    "pickup_code": "pickup code {code} entered",
    "code_accepted": "code accepted: order {order}",
    "instruction": "ship instruction {instruction} for slot {slot}",
    "dispensing": "dispensing slot {slot}",
    "dispensed": "board says: {outcome} ({detail})",
    "reported": "result reported: {outcome}",
    "power_cut": "POWER CUT right after the vend command was sent (exit {exit_status})",
    "agent_restarted": "agent restarted; reconciled orders {recovered}: {outcomes}",
    "cancelled": "order {order} was cancelled by an operator: not shipping",
    "card_ready": "card reader ready ({reader}, MDB level {level})",
    "card_sale": "card sale for slot {slot}: {state} ({outcome})",
}


@click.command()
@click.option("--auto-pay", is_flag=True, help="The sandbox pays the order by itself.")
@click.option("--pickup", is_flag=True, help="Create a pickup code and enter it instead of paying.")
@click.option("--fault", type=click.Choice(["jam", "empty", "no-drop", "power-cut"]),
              help="Inject this fault into the simulated board.")
@click.option("--card", is_flag=True,
              help="Pay by card at a simulated MDB cashless reader instead of a QR code.")
@click.option("--json", "as_json", is_flag=True,
              help="Progress as JSON lines; the last line has the order's final state.")
def demo(auto_pay: bool, pickup: bool, fault: str | None, card: bool, as_json: bool) -> None:
    """Run a whole sale: backend, simulated board and machine agent, no hardware needed.

    Exit status 0 when the sale ends as its options lead it to (delivered; refunded after a
    jam, an empty slot or no drop; needs_review after a power cut), 1 otherwise.
    """
    if pickup and auto_pay:
        raise click.UsageError("--pickup and --auto-pay exclude each other (a pickup code "
                               "needs no payment)")
    from vendhw.agent.demo import run_demo
    from vendhw.agent.terminal import terminal_qr
    from vendhw.money import format_money

    logging.basicConfig(level=logging.ERROR, format="%(name)s: %(message)s")
    console = Console(stderr=False, highlight=False)

    def emit(event: dict[str, Any]) -> None:
        if as_json:
            click.echo(json.dumps(event))
            return
        name = event["event"]
        if name == "final":
            style = "green" if event["state"] == event["expected"] else "red"
            console.print(f"[bold {style}]order {event['order']}: {event['state']}[/]"
                          + (f"  (sale {event['sale_ms']} ms, motor time excluded)"
                             if event.get("sale_ms") is not None else ""))
            return
        template = _LABELS.get(name)
        if template:
            fields = dict(event)
            if isinstance(fields.get("amount"), int):  # minor units: 350 -> 3.50 (CNY)
                fields["amount"] = format_money(fields["amount"], fields.get("currency", ""))
                fields["amount"] = fields["amount"].rsplit(" ", 1)[0]
            try:
                console.print(f"[cyan]{event['t_ms']:>6} ms[/] " + template.format(**fields))
            except KeyError:
                console.print(f"[cyan]{event['t_ms']:>6} ms[/] {name}")

    def show_qr(text: str) -> None:
        if not as_json:
            console.print(terminal_qr(text))
            console.print(f"pay page: {text}")

    def terminated(signum: int, frame: Any) -> None:
        raise _Stopped(signum)

    # SIGTERM unwinds like Ctrl-C, so the children are stopped and the folder is removed.
    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        result = run_demo(auto_pay=auto_pay, pickup=pickup, fault=fault, emit=emit,
                          show_qr=show_qr, card=card)
    except (KeyboardInterrupt, _Stopped) as exc:
        signum = exc.signum if isinstance(exc, _Stopped) else signal.SIGINT
        name = signal.Signals(signum).name
        if as_json:
            click.echo(json.dumps({"event": "final", "state": "interrupted", "signal": name}))
        else:
            click.secho(f"interrupted ({name}): the demo's processes were stopped and its "
                        "folder removed", fg="yellow", err=True)
        sys.exit(128 + int(signum))
    except (VendhwError, OSError) as exc:
        if as_json:
            click.echo(json.dumps({"event": "final", "state": "error", "error": str(exc)}))
        else:
            click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(1)
    finally:
        signal.signal(signal.SIGTERM, previous)
    sys.exit(0 if result.ok else 1)
