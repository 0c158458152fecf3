"""``vendhw send PROTOCOL --port P (COMMAND [ARGS] | --raw HEX)``: one request, its reply.

The frame is built with its checksum (or given whole with ``--raw``), sent at the protocol's
usual line settings, and the reply is decoded. Commands that move a motor, pay out or move a
note are refused without ``--yes``. With ``--json`` one object: ``protocol``, ``command``,
``sent`` (the frame's decode fields), ``reply`` (the reply's, or null) and ``answered``.
Exit 0 when a valid reply came, 1 when none did, 2 on a usage error.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from vendhw.framing import Frame

REPLY_TIMEOUT = 1.0
"""Seconds to wait for a reply (SSP allows 1 s)."""


class _Heard:
    """Every byte the port gave back, so "no reply" can be told from "a reply we cannot read"."""

    def __init__(self) -> None:
        self.raw = bytearray()

    def text(self, protocol: str, baudrate: object) -> str:
        shown = bytes(self.raw[:32]).hex(" ").upper() + (" ..." if len(self.raw) > 32 else "")
        return (f"{len(self.raw)} bytes came back that are not {protocol} frames: {shown} "
                f"(wrong baud rate {baudrate} or parity, another protocol, or line noise)")


def _receive(transport: Any, deframer: Any, timeout: float, want: Any = None,
             heard: _Heard | None = None) -> Frame | None:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        data = transport.read(left, gap=0.05)
        if data and heard is not None:
            heard.raw += data
        for item in deframer.feed(data, time.monotonic()) if data else ():
            if isinstance(item, Frame) and (want is None or want(item)):
                return item


def _show(label: str, raw: bytes, frame: Frame | None) -> str:
    from vendhw.cli.decode import _describe

    text = _describe(frame) if frame is not None else "(not a valid frame)"
    return f"{label} {raw.hex(' ').upper():<30} {text}"


@click.command()
@click.argument("protocol", type=click.Choice(
    ["cctalk", "ssp", "id003", "mdb", "board101", "easivend", "fafb"], case_sensitive=False))
@click.argument("command", required=False)
@click.argument("args", nargs=-1, metavar="[ARGS]...")
@click.option("--port", "-p", required=False, help="Serial port, pty or sim://NAME.")
@click.option("--raw", metavar="HEX", help="Send these bytes as they are instead of COMMAND.")
@click.option("--address", "-a", metavar="N",
              help="Device address: ccTalk (default 2), SSP slave id (0), MDB (0x08).")
@click.option("--baud", "-b", type=click.IntRange(50, 4_000_000),
              help="Line speed (default: the protocol's usual one).")
@click.option("--timeout", type=click.FloatRange(0.01, 30), default=REPLY_TIMEOUT,
              show_default=True, help="Seconds to wait for the reply.")
@click.option("--yes", is_flag=True, help="Allow a command that moves a motor, pays out or "
                                          "moves a note.")
@click.option("--list", "list_", is_flag=True, help="List PROTOCOL's commands and exit.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object with the reply.")
def send(protocol: str, command: str | None, args: tuple[str, ...], port: str | None,
         raw: str | None, address: str | None, baud: int | None, timeout: float, yes: bool,
         list_: bool, as_json: bool) -> None:
    """Send one PROTOCOL COMMAND (a name such as "GET SERIAL NUMBER", or a code) and decode
    the reply. ARGS are hex data bytes or key=value frame fields.

    \b
    vendhw send ssp -p /dev/ttyUSB0 "GET SERIAL NUMBER"
    vendhw send cctalk -p /dev/ttyUSB0 "REQUEST MANUFACTURER ID" --address 2
    vendhw send id003 -p /dev/ttyUSB0 --raw "FC 05 11 27 56"
    """
    from vendhw.errors import ConfigurationError
    from vendhw.framing.hextext import parse_hex
    from vendhw.tools.send import (
        DEFAULT_ADDRESS,
        SETTINGS,
        build_request,
        command_table,
        danger,
        parse_raw,
    )

    protocol = protocol.lower()
    try:
        addr = int(address, 0) if address is not None else None
    except ValueError:
        raise click.BadParameter(f"{address!r} is not a number (12 or 0x0C)",
                                 param_hint="--address") from None
    if list_:
        for code, name in sorted(command_table(protocol, addr).items()):
            click.echo(f"0x{code:02X}  {name}")
        return
    if port is None:
        raise click.UsageError("give the device's port with --port/-p")
    if (command is None) == (raw is None):
        raise click.UsageError("give a COMMAND or --raw HEX (one of the two)")
    try:
        if raw is not None:
            if args:
                raise click.UsageError("ARGS go with a COMMAND, not with --raw")
            request = parse_raw(protocol, parse_hex(raw))
        else:
            assert command is not None
            request = build_request(protocol, command, args, addr)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--raw") from None
    except ConfigurationError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    harm = danger(request, addr)
    if harm and not yes:
        click.echo(f"error: {protocol} {request.name} {harm}; add --yes to send it", err=True)
        sys.exit(2)

    from vendhw.transport import open_transport

    settings = SETTINGS[protocol]
    options = settings.transport_options(port)
    if baud:
        options["baudrate"] = baud
    url = port
    if protocol == "mdb" and not port.startswith("sim://"):
        from vendhw.tools.probe import is_pty

        if not is_pty(port):
            url = f"mdb9://{port}"
            options = {"baudrate": options["baudrate"]}
    framer = request.framer
    transport = open_transport(url, **options)
    reply: Frame | None = None
    heard = _Heard()
    try:
        deframer = framer.deframer(direction="device")
        transport.discard_input()
        if protocol == "ssp" and raw is None and request.code != 0x11:
            ssp_address = addr if addr is not None else DEFAULT_ADDRESS["ssp"]
            transport.write(framer.build(data=b"\x11", seq=1, address=ssp_address))
            if _receive(transport, deframer, timeout, heard=heard) is None:
                if heard.raw:
                    click.echo(f"error: {port}: SSP SYNC: "
                               f"{heard.text(protocol, options.get('baudrate'))}", err=True)
                else:
                    click.echo(f"error: {port}: no reply to SSP SYNC within {timeout:g} s",
                               err=True)
                click.echo("hint: check the port, the baud rate (SSP: 9600 8N2) and that the "
                           "device is powered; vendhw probe PORT tries every protocol", err=True)
                sys.exit(1)
            deframer.reset()
        if protocol == "fafb":
            _receive(transport, deframer, timeout,
                     lambda f: f.get("command") == "POLL")  # the VMC polls; answer a poll
        transport.write(request.data)
        reply = _receive(transport, deframer, timeout, heard=heard)
        if reply is not None and protocol == "mdb" and reply.fields.get("data"):
            transport.write(framer.build(direction="host", control="ACK"))
    finally:
        transport.close()
    try:
        sent: Frame | None = framer.parse(request.data, "host")
    except Exception:
        sent = None
    if as_json:
        click.echo(json.dumps({
            "protocol": protocol, "command": request.name,
            "sent": sent.to_dict() if sent else {"hex": request.data.hex(" ").upper()},
            "reply": reply.to_dict() if reply else None, "answered": reply is not None,
            "unreadable_hex": (None if reply or not heard.raw
                               else bytes(heard.raw).hex(" ").upper())}))
    else:
        click.echo(_show("sent ", request.data, sent))
        if reply is not None:
            click.echo(_show("reply", reply.raw, reply))
        elif heard.raw:
            click.echo(heard.text(protocol, options.get("baudrate")))
        else:
            click.echo(f"no reply within {timeout:g} s (check the port, the baud rate "
                       f"{options.get('baudrate')}, the address; vendhw probe {port})")
    sys.exit(0 if reply is not None else 1)
