"""``vendhw sim``: list the simulators, or serve one on a new pty until SIGINT/SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from vendhw import sim as sim_registry
from vendhw.errors import ConfigurationError


def _parse_option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep:
        return key.replace("-", "_"), True
    return key.replace("-", "_"), value


def _message(exc: BaseException) -> str:
    """A KeyError's text without the quotes str() adds."""
    return str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)


def simulator_help(name: str) -> str:
    """``vendhw sim NAME --help``: what NAME simulates, its options and its faults."""
    import inspect

    from vendhw.sim.base import LINE_FAULTS

    cls = sim_registry.simulator_class_for(name)
    lines = [f"vendhw sim {name}: {cls.description}",
             f"  protocol {cls.protocol}, kind {cls.kind}"
             + (f", {cls.baudrate} baud" if cls.baudrate else ""), "",
             "Options (-o KEY=VALUE, or sim://NAME?KEY=VALUE):"]
    seen: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for key, param in inspect.signature(init).parameters.items():
            if param.kind is not inspect.Parameter.KEYWORD_ONLY or key in seen \
                    or key == "profile":
                continue
            seen.add(key)
            default = "" if param.default is inspect.Parameter.empty else \
                f" (default {param.default!r})"
            lines.append(f"  {key}{default}")
    if not seen:
        lines.append("  none")
    lines += ["", "Faults (--fault NAME[=VALUE], or sim://NAME?NAME=VALUE):",
              f"  line faults: {', '.join(LINE_FAULTS)}",
              f"  device faults: {', '.join(cls.device_faults) or 'none'}"]
    module = sys.modules.get(cls.__module__)
    doc = inspect.getdoc(module) if module else None
    if doc:
        lines += ["", doc]
    return "\n".join(lines)


class _SimCommand(click.Command):
    """``vendhw sim NAME --help`` documents simulator NAME instead of the command."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        names = [a for a in args if not a.startswith("-")]
        if names and any(a in ("--help", "-h") for a in args) and args[0] == names[0]:
            try:
                click.echo(simulator_help(names[0]))
            except ConfigurationError as exc:
                click.echo(f"error: {exc}", err=True)
                ctx.exit(2)
            ctx.exit(0)
        return super().parse_args(ctx, args)


@click.command(cls=_SimCommand)
@click.argument("name", required=False)
@click.option("--list", "list_", is_flag=True, help="List the simulators and exit.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--fault", "faults", multiple=True, metavar="NAME[=VALUE]",
              help="Switch a fault on at start (repeatable): silent, delay=0.2, jam=3, ...")
@click.option("--option", "-o", "options", multiple=True, metavar="KEY=VALUE",
              help="A simulator option (repeatable), e.g. -o inventory=3.")
def sim(name: str | None, list_: bool, as_json: bool, faults: tuple[str, ...],
        options: tuple[str, ...]) -> None:
    """Run simulator NAME on a new pty (print its port), or --list them.

    NAME is a simulator (vendhw sim --list) or a board profile file (./x.toml);
    vendhw sim NAME --help lists its options and faults.

    The simulator speaks the real wire protocol, so any host software, vendhw's or a third
    party's, can open the printed port as if it were the device.
    """
    specs = sim_registry.available()
    if list_ or not name:
        if not list_:
            raise click.UsageError("give a simulator NAME or --list")
        if as_json:
            for spec in sorted(specs.values(), key=lambda s: (s.kind, s.name)):
                click.echo(json.dumps(spec.info()))
            return
        table = Table("name", "kind", "protocol", "description")
        for spec in sorted(specs.values(), key=lambda s: (s.kind, s.name)):
            table.add_row(spec.name, spec.kind, spec.protocol, spec.description)
        Console().print(table)
        return
    if name not in specs and not sim_registry.is_profile_path(name):
        click.echo(f"error: unknown simulator {name!r}; known: {', '.join(sorted(specs))} "
                   "(or a path to a board profile .toml)", err=True)
        sys.exit(2)
    from vendhw.sim.pty import serve_forever
    from vendhw.transport.pty import PtyPair

    try:
        simulator = sim_registry.create(name, **dict(_parse_option(o) for o in options))
    except (ConfigurationError, KeyError, TypeError, ValueError) as exc:
        click.echo(f"error: {_message(exc)}", err=True)
        sys.exit(2)
    for fault in faults:
        key, value = _parse_option(fault)
        try:
            simulator.set_fault(key, value)
        except (ConfigurationError, KeyError, TypeError, ValueError) as exc:
            click.echo(f"error: --fault {fault}: {_message(exc)}", err=True)
            sys.exit(2)

    wake_r, wake_w = os.pipe()

    def stop(signum: int, frame: object) -> None:
        os.write(wake_w, b"x")

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    with PtyPair() as pair:
        info = {"port": pair.port, "name": name, "protocol": simulator.protocol,
                "kind": simulator.kind, "baudrate": simulator.baudrate, "pid": os.getpid()}
        if as_json:
            click.echo(json.dumps(info))
        else:
            click.echo(f"{name} ({simulator.protocol}) serving on {pair.port}"
                       + (f" at {simulator.baudrate} baud" if simulator.baudrate else "")
                       + "; Ctrl-C to stop")
        sys.stdout.flush()
        serve_forever(simulator, pair, wake_r)
    summary = getattr(simulator, "summary", None)
    if callable(summary) and as_json:
        click.echo(json.dumps({"stopped": name, "summary": summary()}))
    sys.exit(0)
