"""``vendhw monitor PORT`` (live) and ``vendhw replay FILE`` (a capture, offline).

Both print one line per frame or run of garbage: time, gap since the previous line, who sent
it, and the decoded frame; ``--json`` prints one object per line instead (the ``vendhw decode
--json`` fields plus ``t``, ``dir`` and ``gap_ms``) and a last ``{"summary": ...}`` object
with the counters. ``monitor --capture FILE`` writes vendhw's JSON Lines capture format, which
``replay``, ``vendhw decode P --capture FILE`` and ``replay://`` read back.

A tap cable gives one port per direction: ``monitor PORT --tap PORT2`` takes PORT as what the
host sends and PORT2 as what the device sends. On one port every byte is ``rx``.
Exit status: 0, or 1 when garbage or checksum errors were seen; 130 after Ctrl-C.
"""

from __future__ import annotations

import json
import select
import signal
import sys
import time
from typing import Any

import click

from vendhw.framing import Frame
from vendhw.tools.stream import Event, StreamDecoder

IDLE_TICK = 0.25
"""Seconds between checks for the end of a ``--seconds`` run when the line is quiet."""

_COLOURS = {"tx": "cyan", "rx": "green"}
_WHO = {"tx": "host  ", "rx": "device"}


def _format(event: Event, start: float, one_port: bool) -> str:
    from vendhw.cli.decode import _describe

    gap = "" if event.gap is None else f"+{event.gap * 1000:.1f}ms"
    who = "line  " if one_port else _WHO.get(event.dir, event.dir)
    item = event.item
    head = f"{event.t - start:10.6f} {gap:>10} {who}"
    if isinstance(item, Frame):
        return click.style(f"{head} {item.raw.hex(' ').upper():<30} {_describe(item)}",
                           fg=_COLOURS.get(event.dir) if not one_port else None)
    return click.style(f"{head} {item.raw.hex(' ').upper():<30} garbage: {item.reason}",
                       fg="red")


class _Printer:
    def __init__(self, as_json: bool, one_port: bool) -> None:
        self.as_json = as_json
        self.one_port = one_port
        self.start: float | None = None

    def __call__(self, events: list[Event]) -> None:
        for event in events:
            if self.start is None:
                self.start = event.t
            if self.as_json:
                click.echo(json.dumps(event.to_dict()))
            else:
                click.echo(_format(event, self.start, self.one_port))

    def summary(self, decoder: StreamDecoder, extra: dict[str, Any] | None = None) -> None:
        counters = {**decoder.counters(), **(extra or {})}
        if self.as_json:
            click.echo(json.dumps({"summary": counters}))
        else:
            text = ", ".join(f"{v} {k.replace('_', ' ')}" if isinstance(v, int)
                             else f"{k}: {v}" for k, v in counters.items())
            click.echo(f"# {text}", err=True)


def _framer(protocol: str | None, checksum: str | None, records: Any = None) -> Any:
    from vendhw.errors import ConfigurationError
    from vendhw.tools.stream import framer_for, guess_protocol

    try:
        if protocol is None:
            if records is None:
                raise click.UsageError("give --protocol (cctalk, ssp, id003, mdb, fafb, "
                                       "board101, easivend)")
            protocol = guess_protocol(records)
        return framer_for(protocol, checksum)
    except ConfigurationError as exc:
        raise click.BadParameter(str(exc), param_hint="--protocol") from None


_PROTOCOL = click.option("--protocol", "-P", metavar="NAME",
                         help="ssp, cctalk, id003, mdb (9-bit in-band), fafb, board101, easivend.")
_CHECKSUM = click.option("--checksum", type=click.Choice(["simple", "crc16"]),
                         help="ccTalk checksum variant.")
_JSON = click.option("--json", "as_json", is_flag=True,
                     help="One JSON object per frame per line, then a summary object.")


@click.command()
@click.argument("capture_file", metavar="FILE", type=click.Path(dir_okay=False))
@_PROTOCOL
@_CHECKSUM
@_JSON
def replay(capture_file: str, protocol: str | None, checksum: str | None,
           as_json: bool) -> None:
    """Decode a vendhw capture FILE (JSON Lines) offline, with times, gaps and directions.

    Without --protocol the protocol that explains most of the bytes is used.
    """
    from vendhw.tools.stream import read_capture

    records = read_capture(capture_file)
    framer = _framer(protocol.lower() if protocol else None, checksum, records)
    decoder = StreamDecoder(framer)
    printer = _Printer(as_json, one_port=False)
    for record in records:
        printer(decoder.feed(record.dir, record.data, record.t))
    printer(decoder.flush())
    printer.summary(decoder, {"protocol": framer.name} if not as_json else None)
    sys.exit(1 if decoder.garbage_bytes or decoder.checksum_errors else 0)


def decode_capture(protocol: str, capture_file: str, checksum: str | None, as_json: bool,
                   frames: tuple[str, ...]) -> None:
    """``vendhw decode P --capture FILE``: decode's output format, for a capture's frames."""
    from vendhw.cli.decode import print_items
    from vendhw.errors import ConfigurationError
    from vendhw.tools.stream import decode_records, framer_for, read_capture

    if frames:
        raise click.UsageError("give either HEX frames or --capture FILE, not both")
    try:
        framer = framer_for(protocol.lower(), checksum)
        records = read_capture(capture_file)
    except ConfigurationError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    all_valid = print_items((event.item for event in decode_records(framer, records)), as_json)
    sys.exit(0 if all_valid else 1)


@click.command()
@click.argument("port")
@_PROTOCOL
@click.option("--tap", metavar="PORT2",
              help="Second port of a tap cable: PORT carries the host's bytes, PORT2 the "
                   "device's.")
@click.option("--capture", "capture", type=click.Path(dir_okay=False),
              help="Also write every byte to FILE (vendhw's JSON Lines capture format).")
@click.option("--baud", "-b", type=click.IntRange(50, 4_000_000), default=9600,
              show_default=True, help="Line speed.")
@click.option("--parity", type=click.Choice(["N", "E", "O"]), default="N", show_default=True)
@click.option("--stopbits", type=click.Choice(["1", "2"]), default="1", show_default=True)
@click.option("--direction", type=click.Choice(["host", "device"]),
              help="Who sends on a one-port line (default: decode both).")
@_CHECKSUM
@click.option("--count", type=click.IntRange(min=1), help="Stop after this many frames.")
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True),
              help="Stop after this many seconds.")
@_JSON
def monitor(port: str, protocol: str | None, tap: str | None, capture: str | None, baud: int,
            parity: str, stopbits: str, direction: str | None, checksum: str | None,
            count: int | None, seconds: float | None, as_json: bool) -> None:
    """Decode what is on PORT live: times, gaps, direction, garbage and checksum counters.

    Only listens: nothing is sent. Ctrl-C stops and prints the counters.
    """
    from vendhw.transport import CaptureWriter, open_transport

    framer = _framer(protocol.lower() if protocol else None, checksum)
    options = {"baudrate": baud, "parity": parity, "stopbits": int(stopbits)}
    links = [(open_transport(port, **options), "tx" if tap else "rx")]
    if tap:
        links.append((open_transport(tap, **options), "rx"))
    one_port = tap is None
    directions: dict[str, str | None] = {"tx": "host", "rx": "device"} if tap \
        else {"rx": direction}
    decoder = StreamDecoder(framer, gap=0.5, directions=directions)
    writer = CaptureWriter(capture) if capture else None
    printer = _Printer(as_json, one_port)
    interrupted = False

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    where = f"{port} (host) and {tap} (device)" if tap else port
    click.echo(f"# listening on {where}, {framer.name} at {baud} baud; Ctrl-C to stop",
               err=True)
    started = time.monotonic()
    deadline = started + seconds if seconds else None
    try:
        fds: dict[int | None, tuple[Any, str]] = {t.fileno(): (t, d) for t, d in links}
        while True:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            wait = IDLE_TICK if deadline is None else min(IDLE_TICK, deadline - now)
            if None in fds:
                ready = [(t, d) for t, d in links]
            else:
                readable, _, _ = select.select([fd for fd in fds if fd is not None], [], [],
                                               wait)
                ready = [fds[fd] for fd in readable]
            for link, dir_ in ready:
                data = link.read(0 if None not in fds else wait / len(links))
                if not data:
                    continue
                t = time.monotonic() - started
                if writer:
                    writer("TX" if dir_ == "tx" else "RX", data)
                printer(decoder.feed(dir_, data, t))
            if count is not None and decoder.frames >= count:
                break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        for link, _ in links:
            link.close()
        if writer:
            writer.close()
    printer(decoder.flush())
    printer.summary(decoder)
    if interrupted:
        sys.exit(130)
    sys.exit(1 if decoder.garbage_bytes or decoder.checksum_errors else 0)
