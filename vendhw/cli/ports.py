"""``vendhw ports``: the serial ports here, with VID:PID, serial number and the adapter's name.

With ``--json`` one object per port per line: ``device``, ``usb_id``, ``serial_number``,
``description``, ``manufacturer``, ``adapter``, ``location``, ``by_id``, ``identity`` (the
``usb-serial://VID:PID?serial=SN`` URL that finds a USB adapter again after an unplug, for
machine.toml; null when unknown or not USB).
"""

from __future__ import annotations

import json

import click


@click.command()
@click.argument("extra", nargs=-1, metavar="[PATH ...]")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per port per line.")
def ports(extra: tuple[str, ...], as_json: bool) -> None:
    """List serial and USB-serial ports and guess each adapter (FTDI, CH340, CP210x, PL2303...).

    PATHs (a pty, a symlink) are shown too, even where the system does not list them.
    """
    from vendhw.tools.ports import list_ports

    entries = list_ports(extra)
    if as_json:
        for entry in entries:
            click.echo(json.dumps(entry.to_dict()))
        return
    if not entries:
        click.echo("no serial ports found (is the adapter plugged in? see: vendhw doctor)")
        return
    for entry in entries:
        line = [entry.device]
        if entry.usb_id:
            line.append(entry.usb_id)
        if entry.adapter:
            line.append(entry.adapter)
        if entry.serial_number:
            line.append(f"serial {entry.serial_number}")
        if entry.description:
            line.append(entry.description)
        click.echo("  ".join(line))
        if entry.by_id:
            click.echo(f"    stable name: {entry.by_id}")
        if entry.identity:
            click.echo(f"    identity: {entry.identity}")
