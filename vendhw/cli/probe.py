"""``vendhw probe PORT``: which protocol answers on a port, and at which line settings.

Each protocol's harmless identification is tried at its usual settings (see
:mod:`vendhw.tools.probe`); nothing moves a motor or pays out. With ``--json`` one object per
attempt per line: ``protocol``, ``settings``, ``answered``, ``identity`` (plus ``request``,
``garbage_bytes`` and, when it did not answer, ``note``). Exit 0 when something answered,
1 when nothing did, 2 on a usage error.
"""

from __future__ import annotations

import json
import sys

import click

from vendhw.tools.probe import REPLY_TIMEOUT, Result


def _line(result: Result) -> str:
    attempt = result.attempt
    where = f"{attempt.protocol:<9} {attempt.settings.label:<22}"
    if result.answered:
        ident = ", ".join(f"{k}={v}" for k, v in result.identity.items())
        board = f" [{attempt.board}]" if attempt.board else ""
        return click.style(f"answered  {where} {attempt.what}{board}: {ident}", fg="green")
    return f"-         {where} {attempt.what}: {result.note}"


@click.command()
@click.argument("port")
@click.option("--protocol", "protocols", multiple=True, metavar="NAME",
              help="Only this protocol (repeatable): cctalk, ssp, id003, mdb, board101, "
                   "easivend, fafb.")
@click.option("--timeout", type=click.FloatRange(0.01, 10), default=REPLY_TIMEOUT,
              show_default=True, help="Seconds to wait for each reply.")
@click.option("--baud", "-b", "bauds", multiple=True, type=click.IntRange(50, 4_000_000),
              metavar="N", help="Try these line speeds (repeatable) instead of each "
                                "protocol's usual one (a device set to another speed).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per attempt per line.")
def probe(port: str, protocols: tuple[str, ...], timeout: float, bauds: tuple[int, ...],
          as_json: bool) -> None:
    """Find what answers on PORT: ccTalk, SSP, ID-003, MDB or a motor board.

    Sends only identification, status and setup requests (never a vend or a payout).
    """
    from vendhw.tools.probe import all_attempts, run_attempt

    known = {"cctalk", "ssp", "id003", "mdb", "board101", "easivend", "fafb"}
    unknown = sorted(set(protocols) - known)
    if unknown:
        raise click.BadParameter(f"unknown protocol {unknown[0]!r}; known: "
                                 f"{', '.join(sorted(known))}", param_hint="--protocol")
    from vendhw.transport import open_transport

    open_transport(port).close()  # a missing, busy or forbidden port is one error, not N
    attempts = all_attempts(port, set(protocols) or None)
    if bauds:
        import dataclasses

        attempts = [dataclasses.replace(a, settings=dataclasses.replace(a.settings, baudrate=b))
                    for a in attempts for b in bauds]
    results: list[Result] = []
    show_bar = not as_json and sys.stderr.isatty()
    if show_bar:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        with Progress(TextColumn("probing {task.description}"), BarColumn(),
                      MofNCompleteColumn(), console=Console(stderr=True),
                      transient=True) as bar:
            task = bar.add_task(port, total=len(attempts))
            for attempt in attempts:
                bar.update(task, description=f"{port}: {attempt.protocol} "
                                             f"{attempt.settings.label}")
                results.append(run_attempt(port, attempt, timeout=timeout))
                bar.advance(task)
        for result in results:
            click.echo(_line(result))
    else:
        for attempt in attempts:
            results.append(run_attempt(port, attempt, timeout=timeout))
            if as_json:
                click.echo(json.dumps(results[-1].to_dict()))
            else:
                click.echo(_line(results[-1]))
    answered = [r for r in results if r.answered]
    if not as_json:
        if answered:
            names = sorted({f"{r.attempt.protocol} at {r.attempt.settings.label}"
                            for r in answered})
            click.echo(f"{port}: {'; '.join(names)} answered")
        else:
            click.echo(f"{port}: nothing answered ({len(results)} attempts); check the "
                       "cable, the power and the port (vendhw ports, vendhw doctor)")
    sys.exit(0 if answered else 1)
