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
@click.option("--no-screen", is_flag=True, help="Serve no web screen.")
@click.option("--terminal", is_flag=True,
              help="Run the customer screen in this terminal (products, QR, code, cash).")
def run(config_path: str, no_screen: bool, terminal: bool) -> None:
    """Finish what a previous run left in flight, then sell until SIGINT/SIGTERM."""
    from vendhw.agent.runner import Agent, AgentConfig

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        agent = Agent(AgentConfig.load(config_path))
        agent.start(screen=not no_screen)
    except VendhwError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
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
