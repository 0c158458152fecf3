"""``vendhw doctor``: what usually breaks on a Linux controller, and what to do about it.

Checks the dialout group, port permissions, another process holding a port, ModemManager
and brltty grabbing adapters, the FTDI latency timer and the libusb backend. With ``--json``
one object per check per line: ``check``, ``status`` (ok/warn/fail/skip), ``detail``,
``fix`` and, for per-port checks, ``port``. Exit 1 when any check fails.
"""

from __future__ import annotations

import json
import sys

import click

_STYLE = {"ok": "green", "warn": "yellow", "fail": "red", "skip": None}


@click.command()
@click.option("--port", "-p", "ports", multiple=True, metavar="PORT",
              help="Check this port (repeatable); default: every serial port present.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per check per line.")
def doctor(ports: tuple[str, ...], as_json: bool) -> None:
    """Check this computer for what usually stops a serial device from answering."""
    from vendhw.tools.doctor import run_checks

    checks = run_checks(list(ports))
    for check in checks:
        if as_json:
            click.echo(json.dumps(check.to_dict()))
            continue
        click.echo(click.style(f"{check.status:<5}", fg=_STYLE[check.status])
                   + f" {check.check:<13} {check.detail}")
        if check.fix and check.status in ("warn", "fail"):
            click.echo(f"      {'':<13} fix: {check.fix}")
    failed = [c for c in checks if c.status == "fail"]
    if not as_json:
        click.echo(f"{len(failed)} problem(s) found" if failed else "nothing wrong found")
    sys.exit(1 if failed else 0)
