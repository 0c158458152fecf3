"""``vendhw mdb``: look at an MDB bus as its VMC (``scan``)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from vendhw.errors import VendhwError

SCAN_RESPONSE_TIMEOUT = 0.05
"""Seconds to wait for each peripheral: 10x the 5 ms t-response, for USB adapters."""


def _ident(data: bytes) -> dict[str, Any]:
    """An EXPANSION ID reply: manufacturer (3), serial (12), model (12), version (2) [...]."""
    out: dict[str, Any] = {
        "manufacturer": data[0:3].decode("ascii", "replace").strip(),
        "serial": data[3:15].decode("ascii", "replace").strip(),
        "model": data[15:27].decode("ascii", "replace").strip(),
        "version": data[27:29].hex(),
    }
    if len(data) >= 33:
        out["features"] = f"{int.from_bytes(data[29:33], 'big'):08X}"
    return out


def _probe(link: Any, address: int) -> dict[str, Any] | None:
    """What one address says: None when nothing answers a POLL there."""
    from vendhw.devices import mdb as mdb_host
    from vendhw.devices import mdb_cashless as cashless
    from vendhw.errors import NoResponseError
    from vendhw.framing.mdb import (
        DEVICES,
        Address,
        CashlessCommand,
        CashlessExpansion,
        CashlessPoll,
        CashlessSetup,
        ChangerCommand,
        ChangerExpansion,
    )

    is_cashless = address in cashless.ADDRESSES
    # RESET, SETUP, POLL, EXPANSION: the same codes for changers, bills and the other
    # non-cashless peripherals; cashless devices POLL with 2.
    commands = CashlessCommand if is_cashless else ChangerCommand
    poll = commands.POLL
    try:
        reply = link.command(address, poll)
    except NoResponseError:
        return None
    found: dict[str, Any] = {"address": f"0x{address:02X}", "device": DEVICES[address],
                             "present": True, "poll": (reply or b"").hex()}
    try:
        if is_cashless:
            events = cashless.parse_poll(reply or b"")
            found["poll_events"] = [e.kind for e in events]
            setup = link.command(address, CashlessCommand.SETUP,
                                 bytes((CashlessSetup.CONFIG_DATA, cashless.VMC_FEATURE_LEVEL,
                                        0, 0, 0)))
            if setup and setup[:1] == bytes((CashlessPoll.READER_CONFIG,)):
                found["setup"] = cashless.parse_config(setup).to_dict()
            manufacturer, serial, model, version = cashless.VMC_ID
            ident = link.command(address, CashlessCommand.EXPANSION,
                                 bytes((CashlessExpansion.REQUEST_ID,)) + manufacturer
                                 + serial + model + version)
            if ident and ident[:1] == bytes((CashlessPoll.PERIPHERAL_ID,)):
                found["identification"] = cashless.parse_peripheral_id(ident)
        else:
            setup = link.command(address, ChangerCommand.SETUP)
            if setup and address == Address.CHANGER:
                parsed = mdb_host.parse_changer_setup(setup)
                found["setup"] = {"level": parsed.level, "country": f"{parsed.country:04X}",
                                  "currency": mdb_host.currency_of(parsed.country),
                                  "scaling": parsed.scaling, "decimals": parsed.decimals,
                                  "coin_values": list(parsed.coin_values)}
            elif setup and address == Address.BILL_VALIDATOR:
                bill = mdb_host.parse_bill_setup(setup)
                found["setup"] = {"level": bill.level, "country": f"{bill.country:04X}",
                                  "currency": mdb_host.currency_of(bill.country),
                                  "scaling": bill.scaling, "decimals": bill.decimals,
                                  "escrow": bill.escrow, "bill_values": list(bill.bill_values)}
            elif setup:
                found["setup"] = {"raw": setup.hex()}
            ident = link.command(address, ChangerCommand.EXPANSION,
                                 bytes((ChangerExpansion.IDENTIFICATION,)))
            if ident and len(ident) >= 29:
                found["identification"] = _ident(ident)
    except VendhwError as exc:
        found["error"] = str(exc)
    return found


@click.group()
def mdb() -> None:
    """Look at an MDB bus as its VMC."""


@mdb.command()
@click.option("--port", required=True,
              help="The 9-bit link: mdb9:///dev/ttyUSB0, sim://NAME, or a pty of "
                   "`vendhw sim` with --inband.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--inband", is_flag=True,
              help="PORT already carries the escaped 9-bit form (a vendhw simulator's pty).")
@click.option("--all", "show_all", is_flag=True, help="Also list addresses that are silent.")
@click.option("--timeout", default=SCAN_RESPONSE_TIMEOUT, show_default=True,
              help="Seconds to wait for each peripheral's answer.")
def scan(port: str, as_json: bool, inband: bool, show_all: bool, timeout: float) -> None:
    """Which MDB peripherals answer (changer, bill validator, cashless 1/2, ...).

    Each address is POLLed; a peripheral that answers is asked for its SETUP data and its
    EXPANSION identification. The scan ACKs what the peripherals report (a JUST RESET
    included), so run it when no other VMC program is using the bus.
    """
    from vendhw.devices.mdb import MdbLink, is_pty, shared_link
    from vendhw.framing.mdb import DEVICES
    from vendhw.transport import open_transport

    if not (inband or port.startswith(("mdb9://", "sim://"))):
        click.secho(f"error: {port}: MDB needs a 9-bit link: mdb9:///dev/ttyUSB0, "
                    f"sim://NAME, or --inband for a simulator's pty", fg="red", err=True)
        sys.exit(2)
    try:
        if port.startswith(("mdb9://", "sim://")) or is_pty(port):
            # the bus's one link (shared_link), as the cash and card openers use it
            link = shared_link(port, response_timeout=timeout)
        else:  # --inband over another transport (a pyserial URL)
            link = MdbLink(open_transport(port, baudrate=9600), response_timeout=timeout)
    except VendhwError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
    found = 0
    try:
        for address in sorted(a for a in DEVICES if a):
            result = _probe(link, address)
            if result is None:
                if not show_all:
                    continue
                result = {"address": f"0x{address:02X}", "device": DEVICES[address],
                          "present": False}
            else:
                found += 1
            if as_json:
                click.echo(json.dumps(result))
            elif result["present"]:
                ident = result.get("identification", {})
                setup = result.get("setup", {})
                click.echo(f"{result['address']} {result['device']}: level "
                           f"{setup.get('level', '?')}, {ident.get('manufacturer', '')} "
                           f"{ident.get('model', '')} {ident.get('serial', '')}".rstrip())
            else:
                click.echo(f"{result['address']} {result['device']}: no answer")
    finally:
        link.release()
    if not as_json:
        click.echo(f"{found} peripheral(s) answered on {port}", err=True)
