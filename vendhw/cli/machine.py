"""``vendhw machine run``: the agent on the machine's controller."""

from __future__ import annotations

import logging
import signal
import sys
import threading

import click

from vendhw.errors import VendhwError


@click.group()
def machine() -> None:
    """Run the machine agent (board + backend + customer screen)."""


@machine.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="The machine's TOML configuration.")
@click.option("--no-board", is_flag=True, help="Skip opening the board (the agent holds it).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per check per line.")
def check(config_path: str, no_board: bool, as_json: bool) -> None:
    """Is the machine ready? The board answers, every catalogue slot exists on the board
    profile, the backend is reachable and accepts the machine's secret, the screen port is
    free. Exit 0 when every check passes, 1 otherwise, 2 for a bad configuration."""
    import json

    from vendhw.agent.check import check_machine
    from vendhw.agent.runner import AgentConfig

    try:
        config = AgentConfig.load(config_path)
    except VendhwError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
    findings = check_machine(config, board=not no_board)
    for finding in findings:
        if as_json:
            click.echo(json.dumps(finding.to_dict()))
        else:
            colour = {"ok": "green", "warn": "yellow", "fail": "red"}[finding.status]
            click.echo(click.style(f"{finding.status:<5}", fg=colour)
                       + f" {finding.check:<10} {finding.detail}")
    sys.exit(0 if all(f.status == "ok" for f in findings) else 1)


@machine.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="The machine's TOML configuration.")
@click.option("--no-screen", is_flag=True, help="Serve no web screen.")
@click.option("--terminal", is_flag=True,
              help="Run the customer screen in this terminal (products, QR, code, cash).")
def run(config_path: str, no_screen: bool, terminal: bool) -> None:
    """Finish what a previous run left in flight, then sell until SIGINT/SIGTERM."""
    from vendhw.agent.check import check_machine
    from vendhw.agent.runner import Agent, AgentConfig

    try:
        config = AgentConfig.load(config_path)
    except VendhwError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
    # Fail fast with one line (a refused secret, catalogue slots the board lacks, a busy
    # screen port) instead of logging 401s forever; an unreachable backend only warns.
    for finding in check_machine(config, board=False, screen=not no_screen and not terminal):
        if finding.status == "fail":
            click.secho(f"error: {finding.check}: {finding.detail}", fg="red", err=True)
            sys.exit(1)
        if finding.status == "warn":
            click.echo(f"warning: {finding.check}: {finding.detail}", err=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        agent = Agent(config)
        agent.start(screen=not no_screen)
    except VendhwError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
    except OSError as exc:  # the screen's port, taken between the check and now
        click.secho(f"error: screen {config.screen_host}:{config.screen_port}: {exc}",
                    fg="red", err=True)
        sys.exit(1)
    done = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: done.set())
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    if agent.screen is not None:
        click.echo(f"screen at {agent.screen.url}")
    click.echo(f"machine {agent.config.machine_id} selling; Ctrl-C to stop")
    if terminal:
        from vendhw.agent.terminal import TerminalScreen

        signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C cancels a wait
        try:
            TerminalScreen(agent).run()
        except KeyboardInterrupt:
            pass
    else:
        done.wait()
    agent.close()


@machine.command("sold-out")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="The machine's TOML configuration (its [agent] data_dir holds the list).")
@click.option("--clear", "clear", multiple=True, metavar="SLOT",
              help="Make SLOT sellable again (after a refill); repeat for several.")
@click.option("--all", "clear_all", is_flag=True, help="Clear every slot.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per slot per line.")
def sold_out(config_path: str, clear: tuple[str, ...], clear_all: bool, as_json: bool) -> None:
    """List the slots the board found empty (sold out on the screen), or clear them. Works
    while the agent runs: the screen shows a cleared slot again within a few seconds."""
    import json
    from datetime import datetime, timezone

    from vendhw.agent.runner import AgentConfig
    from vendhw.agent.soldout import FILE, SoldOut

    try:
        config = AgentConfig.load(config_path)
        if clear and clear_all:
            raise VendhwError("give --clear SLOT or --all, not both")
        config.data_dir.mkdir(parents=True, exist_ok=True)
        listing = SoldOut(config.data_dir / FILE)
    except VendhwError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
    try:
        if clear or clear_all:
            gone = listing.clear(None if clear_all else list(clear))
            for slot in gone:
                click.echo(json.dumps({"slot": slot, "cleared": True}) if as_json
                           else f"slot {slot}: cleared")
            missing = [s for s in clear if s not in gone]
            for slot in missing:
                click.echo(json.dumps({"slot": slot, "cleared": False}) if as_json
                           else f"slot {slot}: was not sold out")
            return
        rows = listing.rows()
        for row in rows:
            since = datetime.fromtimestamp(row["since"], timezone.utc).isoformat(
                timespec="seconds")
            if as_json:
                click.echo(json.dumps({**row, "since": since}))
            else:
                click.echo(f"slot {row['slot']}: empty since {since} (vend {row['vend_id']})")
        if not rows and not as_json:
            click.echo("no slot is sold out")
    finally:
        listing.close()
