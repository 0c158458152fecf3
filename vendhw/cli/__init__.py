"""The ``vendhw`` command: a click group whose subcommands load lazily.

Each subcommand lives in its own module and is imported only when it is run, so
``vendhw decode`` starts fast and ``vendhw backend`` works only where the server extra is
installed. Errors vendhw raises on purpose become one red line, never a traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import Any

import click

from vendhw.errors import NoResponseError, TransportError, VendhwError

# name -> "module:attribute"; one line per command family.
COMMANDS: dict[str, str] = {
    "decode": "vendhw.cli.decode:decode",
    "sim": "vendhw.cli.sim:sim",
    "dispense": "vendhw.cli.board:dispense",
    "board": "vendhw.cli.board:board",
    "motor": "vendhw.cli.board:motor",
    "cash": "vendhw.cli.cash:cash",
    "backend": "vendhw.cli.backend:backend",
    "machine": "vendhw.cli.machine:machine",
    "demo": "vendhw.cli.demo:demo",
    "dex": "vendhw.cli.dex:dex",
    "mdb": "vendhw.cli.mdb:mdb",
    "ports": "vendhw.cli.ports:ports",
    "probe": "vendhw.cli.probe:probe",
    "monitor": "vendhw.cli.monitor:monitor",
    "replay": "vendhw.cli.monitor:replay",
    "send": "vendhw.cli.send:send",
    "doctor": "vendhw.cli.doctor:doctor",
}


class LazyGroup(click.Group):
    """A group that imports a subcommand's module only when that subcommand is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in COMMANDS if self._available(name))

    @staticmethod
    def _available(name: str) -> bool:
        module = COMMANDS[name].split(":")[0]
        return importlib.util.find_spec(module) is not None

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None or not self._available(cmd_name):
            return None
        module_name, attr = target.split(":")
        command = getattr(importlib.import_module(module_name), attr)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="vendhw")
@click.option(
    "--trace",
    is_flag=True,
    envvar="VENDHW_TRACE",
    help="Print every byte sent and received as a timestamped hexdump on stderr.",
)
@click.pass_context
def cli(ctx: click.Context, trace: bool) -> None:
    """vendhw: drive vending-machine hardware and run the whole sale."""
    ctx.ensure_object(dict)
    if trace:
        os.environ["VENDHW_TRACE"] = "1"


INTERRUPTED = 130
"""Exit status after Ctrl-C (128 + SIGINT), as shells report it."""


def hoist_trace(argv: list[str]) -> list[str]:
    """``--trace`` is a global option, but users put it after the subcommand (every device
    error suggests it): take it from anywhere before a ``--`` and put it first."""
    end = argv.index("--") if "--" in argv else len(argv)
    if "--trace" not in argv[:end] or (argv and argv[0] == "--trace"):
        return argv
    rest = [a for i, a in enumerate(argv) if i >= end or a != "--trace"]
    return ["--trace", *rest]


def main(argv: list[str] | None = None) -> Any:
    """Console-script entry: run the group and turn vendhw errors into one line."""
    args = hoist_trace(list(sys.argv[1:] if argv is None else argv))
    try:
        try:
            status = cli.main(args=args, prog_name="vendhw", standalone_mode=False)
            if isinstance(status, int):  # ctx.exit(n) returns n when not standalone
                sys.exit(status)
            return status
        except click.exceptions.Abort:
            raise KeyboardInterrupt from None
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except BrokenPipeError:  # `vendhw ... | head`: the reader left, nothing to report
            sys.stderr.close()
            os._exit(1)
    except KeyboardInterrupt:
        # Commands that have something to report (a vend's outcome, a partial scan) catch
        # Ctrl-C themselves; anything else ends here, with the shell's status for it.
        click.echo("interrupted (Ctrl-C)", err=True)
        sys.exit(INTERRUPTED)
    except NoResponseError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        click.echo("hint: check the port, the baud rate and that the device is powered.", err=True)
        sys.exit(1)
    except TransportError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        click.echo("hint: this is the port or its driver, not vendhw (is it plugged in, "
                   "is another program using it?).", err=True)
        sys.exit(1)
    except VendhwError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(1)
