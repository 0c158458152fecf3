"""``vendhw cash status|accept|payout``: any cash device, by protocol name, by hand.

Contract (scripts depend on it): ``--json`` prints one JSON object per line: ``status`` one
object; ``accept`` and ``payout`` one :meth:`CashEvent.to_dict` per event, as it happens.
Exit status 0 on success, 1 for a device or port failure (or a payout that did not complete),
2 for a usage error. A vendhw error is one line on stderr, never a traceback.

Protocol modules load lazily, so the command works for the protocols that are installed and
says in one line which module is missing for the others.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import click

from vendhw.devices.cash import CashDevice, CashEvent, CashEventKind
from vendhw.devices.registry import (  # noqa: F401 (re-exported: the old import path)
    PROTOCOLS,
    TRANSPORT_OPTIONS,
    check_options,
    open_cash_device,
)
from vendhw.errors import ConfigurationError, NoResponseError, TransportError, VendhwError

POLL_INTERVAL = 0.2
"""Seconds between polls (ccTalk coin acceptors want 200 ms; SSP/ID-003 100-1000 ms)."""
MAX_POLL_FAILURES = 5
"""Consecutive failed polls before ``accept`` or ``payout`` gives up on a device that went away."""

_DONE = (CashEventKind.PAYOUT_DONE, CashEventKind.PAYOUT_INCOMPLETE)


class _Failure(Exception):
    def __init__(self, message: str, status: int, hint: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.hint = hint


def _guess_protocol(port: str) -> str | None:
    if port.startswith("sim://"):
        name = port[len("sim://"):].split("?")[0].split("/")[0]
        if name in PROTOCOLS:
            return name
    return None


@contextmanager
def _errors(port: str) -> Iterator[None]:
    try:
        yield
    except ConfigurationError as exc:
        raise _Failure(str(exc), 2) from None
    except NoResponseError as exc:
        raise _Failure(str(exc), 1, f"is the device on {port} powered, at the right address "
                       "and speaking this protocol? --trace shows every byte") from None
    except TransportError as exc:
        raise _Failure(str(exc), 1, f"is {port} the right port, plugged in and free?") from None
    except VendhwError as exc:
        raise _Failure(str(exc), 1) from None
    except (TypeError, ValueError) as exc:
        raise _Failure(f"bad option: {exc}", 2) from None


def _fail(exc: _Failure) -> None:
    click.secho(f"error: {exc}", fg="red", err=True)
    if exc.hint:
        click.echo(f"hint: {exc.hint}", err=True)
    sys.exit(exc.status)


def _options(pairs: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not key:
            raise click.UsageError(f"option {pair!r}: use KEY=VALUE")
        out[key.strip().replace("-", "_")] = value if sep else True
    return out


def _money(value: int, currency: str) -> str:
    from vendhw.money import format_money

    return format_money(value, currency)


def _line(event: CashEvent) -> str:
    stamp = datetime.now().strftime("%H:%M:%S.%f")[:-3]
    parts = [stamp, f"{event.kind.value:<17}"]
    if event.value or event.kind in (CashEventKind.CREDIT, CashEventKind.ESCROW) or \
            event.requested is not None:
        parts.append(_money(event.value, event.currency))
    if event.requested is not None:
        parts.append(f"of {_money(event.requested, event.currency)}")
    if event.channel is not None:
        parts.append(f"channel {event.channel}")
    if event.route:
        parts.append(event.route)
    if event.reason:
        parts.append(f"({event.reason})")
    return "  ".join(parts)


def _printer(as_json: bool) -> Any:
    def show(event: CashEvent) -> None:
        click.echo(json.dumps(event.to_dict()) if as_json else _line(event))
        sys.stdout.flush()

    return show


def _common(func: Any) -> Any:
    func = click.option("--option", "-o", "options", multiple=True, metavar="KEY=VALUE",
                        help="A driver option (repeatable): checksum=crc16, address=3, ...")(func)
    func = click.option("--json", "as_json", is_flag=True,
                        help="One JSON object per line.")(func)
    func = click.option("--protocol", "-P", "protocol", default=None,
                        type=click.Choice(sorted(PROTOCOLS), case_sensitive=False),
                        help="The device's protocol (guessed from sim://NAME).")(func)
    func = click.option("--port", "-p", required=True, metavar="PORT",
                        help="Serial port or URL: /dev/ttyUSB0, "
                             "sim://cctalk-coin?auto_insert=1,6")(func)
    return func


def _open(port: str, protocol: str | None, options: tuple[str, ...]) -> CashDevice:
    name = protocol or _guess_protocol(port)
    if name is None:
        raise click.UsageError("give --protocol (one of " + ", ".join(PROTOCOLS) + ")")
    return open_cash_device(name, port, **_options(options))


class _Poller:
    """Polls one device and rides out up to MAX_POLL_FAILURES consecutive failed polls: a
    checksum error from line noise must not end an accept or a payout the device carries on."""

    def __init__(self, device: CashDevice, sink: Any) -> None:
        self.device = device
        self.sink = sink
        self.failures = 0

    def __call__(self) -> list[CashEvent]:
        try:
            events = self.device.poll(self.sink)
        except (ConfigurationError, TransportError):
            raise
        except VendhwError as exc:
            self.failures += 1
            click.echo(f"warning: poll failed: {exc}", err=True)
            if self.failures >= MAX_POLL_FAILURES:
                raise
            return []
        self.failures = 0
        return events


@contextmanager
def _session(port: str, protocol: str | None, options: tuple[str, ...]) -> Iterator[CashDevice]:
    """Open and start the device, close it however the command ends, and turn any vendhw
    error into one line on stderr and the contract's exit status."""
    try:
        with _errors(port):
            device = _open(port, protocol, options)
            try:
                device.start()
                yield device
            finally:
                device.close()
    except _Failure as exc:
        _fail(exc)


@click.group()
def cash() -> None:
    """Coin acceptors, hoppers and note validators: status, accept cash, pay out."""


@cash.command()
@_common
def status(port: str, protocol: str | None, as_json: bool, options: tuple[str, ...]) -> None:
    """Start the device (still inhibited) and show what it reports about itself."""
    with _session(port, protocol, options) as device:
        report = getattr(device, "status", None)
        info: dict[str, Any] = report() if callable(report) else {}
        info = {"device": device.name, "currency": device.currency, **info}
    if as_json:
        click.echo(json.dumps(info, default=str))
        return
    for key, value in info.items():
        click.echo(f"{key:>16}: {value}")


@cash.command()
@_common
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Stop after this many seconds (default: until Ctrl-C).")
@click.option("--escrow", type=click.Choice(["stack", "return", "hold"]), default="stack",
              show_default=True, help="What to do with a note held in escrow.")
@click.option("--interval", type=float, default=POLL_INTERVAL, show_default=True,
              help="Seconds between polls.")
def accept(port: str, protocol: str | None, as_json: bool, options: tuple[str, ...],
           seconds: float | None, escrow: str, interval: float) -> None:
    """Accept coins or notes and print each event as it happens."""
    show = _printer(as_json)
    total: dict[str, int] = {}
    stop = threading.Event()
    with _session(port, protocol, options) as device:
        try:
            device.enable()
            if not as_json:
                click.echo(f"accepting on {port} ({device.name})"
                           + (f" for {seconds:g} s" if seconds else "; Ctrl-C to stop"),
                           err=True)
            deadline = None if seconds is None else time.monotonic() + seconds
            poll = _Poller(device, show)
            while deadline is None or time.monotonic() < deadline:
                for event in poll():
                    if event.kind is CashEventKind.CREDIT:
                        total[event.currency] = total.get(event.currency, 0) + event.value
                    elif event.kind is CashEventKind.ESCROW and escrow != "hold":
                        (device.stack if escrow == "stack" else device.reject)()
                wait = interval if deadline is None else min(
                    interval, max(0.0, deadline - time.monotonic()))
                stop.wait(wait)  # the poll period, not a byte wait
        except KeyboardInterrupt:
            pass
        finally:
            try:
                device.disable()
            except VendhwError:
                pass
    if not as_json:
        credited = ", ".join(_money(v, c) for c, v in total.items()) or "nothing"
        click.echo(f"credited: {credited}", err=True)


@cash.command()
@click.argument("amount", type=click.IntRange(min=1))
@_common
@click.option("--timeout", type=float, default=60.0, show_default=True,
              help="Seconds to wait for the payout to finish.")
@click.option("--interval", type=float, default=POLL_INTERVAL, show_default=True,
              help="Seconds between polls.")
def payout(amount: int, port: str, protocol: str | None, as_json: bool,
           options: tuple[str, ...], timeout: float, interval: float) -> None:
    """Pay out AMOUNT (minor units: cents) and print the payout events."""
    show = _printer(as_json)
    outcome: CashEvent | None = None
    stop = threading.Event()
    with _session(port, protocol, options) as device:
        try:
            device.payout(amount)
            deadline = time.monotonic() + timeout
            poll = _Poller(device, show)
            while outcome is None:
                for event in poll():
                    if event.kind in _DONE:
                        outcome = event
                if outcome is None:
                    if time.monotonic() >= deadline:
                        raise _Failure(f"payout of {amount} not finished after "
                                       f"{timeout:g} s", 1)
                    stop.wait(interval)  # the poll period, not a byte wait
        except KeyboardInterrupt:
            halt = getattr(device, "emergency_stop", None)
            if callable(halt):
                left = halt()
                click.echo(f"emergency stop: {left} coin(s) not paid", err=True)
            raise _Failure("payout interrupted", 1) from None
    if outcome is not None and outcome.kind is not CashEventKind.PAYOUT_DONE:
        sys.exit(1)
