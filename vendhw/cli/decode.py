"""``vendhw decode``: decode frames of any registered protocol from hex.

Contract (scripts depend on it): each HEX argument or stdin line (``-``) is one frame; with
``--stream`` the input is one byte stream cut by the protocol's deframer. ``--json`` prints
one object per frame per line with ``valid``, ``hex``, ``error`` and the named fields.
Exit 0 when every frame is valid, 1 when any is not, 2 on a usage error.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from typing import Any

import click

from vendhw.errors import ConfigurationError, VendhwError
from vendhw.framing import Frame, Framer, Garbage, framer_names, get_framer, normalise_direction
from vendhw.framing.hextext import parse_hex


def _describe(frame: Frame) -> str:
    skip = {"command", "code"}
    parts = [f"{k}={_short(v)}" for k, v in frame.fields.items()
             if k not in skip and not k.startswith("_")]
    name = frame.fields.get("command", "")
    return f"{name} " + " ".join(parts)


def _short(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex(" ").upper() or "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _decode_one(framer: Framer, data: bytes, direction: Any) -> Frame | Garbage:
    try:
        return framer.parse(data, direction)
    except VendhwError as exc:
        return Garbage(framer.name, data, str(exc))
    except Exception as exc:  # a decoder bug must still not print a traceback
        return Garbage(framer.name, data, f"internal decoder error: {type(exc).__name__}: {exc}")


def _inputs(args: Iterable[str]) -> Iterator[str]:
    for arg in args:
        if arg == "-":
            for line in sys.stdin:
                if line.strip() and not line.lstrip().startswith("#"):
                    yield line
        else:
            yield arg


@click.command()
@click.argument("protocol")
@click.argument("frames", nargs=-1, metavar="[HEX ... | -]")
@click.option("--direction", type=click.Choice(["host", "device"]),
              help="Who sent the frames (needed where codes overlap, e.g. id003, mdb).")
@click.option("--checksum", type=click.Choice(["simple", "crc16"]),
              help="Checksum variant (ccTalk).")
@click.option("--protocol-version", type=click.IntRange(1, 255),
              help="SSP protocol version of the frames (default 6; below 6 poll events carry "
                   "4-byte values without a currency).")
@click.option("--stream", is_flag=True, help="Treat all input as one byte stream.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per frame per line.")
@click.option("--capture", "capture", type=click.Path(dir_okay=False), metavar="FILE",
              help="Decode a vendhw capture (JSON Lines), both directions (see vendhw replay).")
def decode(protocol: str, frames: tuple[str, ...], direction: str | None, checksum: str | None,
           protocol_version: int | None, stream: bool, as_json: bool,
           capture: str | None) -> None:
    """Decode PROTOCOL frames given as hex (arguments, or stdin lines with -)."""
    options: dict[str, Any] = {"checksum": checksum} if checksum else {}
    if protocol_version is not None:
        if protocol.lower() != "ssp":
            click.echo("error: --protocol-version only applies to ssp", err=True)
            sys.exit(2)
        options["protocol_version"] = protocol_version
    if capture is not None:
        from vendhw.cli.monitor import decode_capture

        decode_capture(protocol, capture, checksum, as_json, frames)
    try:
        framer = get_framer(protocol, **options)
    except ConfigurationError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except TypeError:
        click.echo(f"error: --checksum does not apply to {protocol}", err=True)
        sys.exit(2)
    args = frames or (("-",) if not sys.stdin.isatty() else ())
    if not args:
        click.echo("error: give frames as HEX arguments or - to read stdin; "
                   f"protocols: {', '.join(framer_names())}", err=True)
        sys.exit(2)
    dir_value = normalise_direction(direction)
    try:
        texts = list(_inputs(args))
        chunks = [parse_hex(t) for t in texts]
    except ValueError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)

    results: list[Frame | Garbage]
    if stream:
        deframer = framer.deframer(direction=dir_value)
        results = []
        try:
            for chunk in chunks:
                results.extend(deframer.feed(chunk))
            results.extend(deframer.flush())
        except VendhwError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
    else:
        results = [_decode_one(framer, chunk, dir_value) for chunk in chunks]

    all_valid = print_items(results, as_json)
    if stream and not as_json:
        stats = deframer.stats
        click.echo(f"# {stats.frames} frames, {stats.garbage_bytes} garbage bytes, "
                   f"{stats.checksum_errors} checksum errors", err=True)
    sys.exit(0 if all_valid else 1)


def print_items(items: Iterable[Frame | Garbage], as_json: bool) -> bool:
    """Print decoded frames and garbage the way ``vendhw decode`` does; True if all valid."""
    all_valid = True
    for item in items:
        all_valid &= item.valid
        if as_json:
            click.echo(json.dumps(item.to_dict()))
        elif isinstance(item, Frame):
            click.echo(f"ok       {item.raw.hex(' ').upper():<30} {_describe(item)}")
        else:
            click.secho(f"invalid  {item.raw.hex(' ').upper():<30} {item.reason}", fg="red")
    return all_valid
