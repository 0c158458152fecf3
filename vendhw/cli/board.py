"""``vendhw dispense``, ``vendhw board ...`` and ``vendhw motor scan``: motor boards by hand.

Contract (scripts depend on it): with ``--json`` the last line of ``dispense`` is one JSON
object with at least ``outcome``, ``slot`` and ``duration_ms``; ``dispense`` exits 0 when the
product was delivered, 1 for any other outcome or a device failure (silent board, port
problem), 2 for a usage error (unknown profile or slot). A vendhw error is one red line and
a hint, never a traceback.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column, Table

from vendhw.errors import (
    ConfigurationError,
    NoResponseError,
    TransportError,
    VendhwError,
)


def _id_column(values: list[str], header: str) -> Column:
    """A column that is never cut: other commands need these ids whole."""
    return Column(header, no_wrap=True, min_width=max([len(v) for v in values] + [len(header)]))


_OUTCOME_STYLE = {"delivered": "green", "unknown": "bold magenta", "empty": "yellow"}


def _profile_brief(profile_name: str) -> str:
    """``fafb-xy (fafb, 57600 8N1)`` for hints; never fails."""
    try:
        from vendhw.devices.boards import load_profile

        profile = load_profile(profile_name)
        serial = profile.serial
        line = (f"{serial.get('baudrate', '?')} {serial.get('bytesize', 8)}"
                f"{str(serial.get('parity', 'N'))[:1].upper()}{serial.get('stopbits', 1)}")
        return f"a {profile.family} board ({profile.name}, {line})"
    except Exception:
        return f"a {profile_name} board"


class _Failure(Exception):
    """A handled failure: message, hint, exit status."""

    def __init__(self, message: str, hint: str, status: int) -> None:
        super().__init__(message)
        self.hint = hint
        self.status = status


@contextmanager
def _errors(port: str | None, profile: str | None) -> Iterator[None]:
    """Turn vendhw errors into a :class:`_Failure` with a hint that names what was expected."""
    try:
        yield
    except ConfigurationError as exc:
        text = str(exc)
        if "slot" in text.lower() and profile:
            hint = f"list the slots with: vendhw board slots --board {profile}"
        elif "profile" in text.lower():
            hint = "list the profiles with: vendhw board profiles"
        else:
            hint = "check the command's options (vendhw COMMAND --help)"
        raise _Failure(text, hint, 2) from None
    except NoResponseError as exc:
        expected = _profile_brief(profile) if profile else "the board"
        if "hint" in str(exc).lower():  # the driver already said what to check
            hint = f"expected {expected} on {port}; --trace shows every byte on the wire"
        else:
            hint = (f"expected {expected} on {port}: check the port, the cable, that the "
                    "board is powered and that --board names the right model (a wrong model "
                    "answers nothing or garbage)")
        raise _Failure(str(exc), hint, 1) from None
    except TransportError as exc:
        raise _Failure(str(exc), f"is {port} the right port, plugged in and free (no other "
                       "program holding it)?", 1) from None
    except VendhwError as exc:
        raise _Failure(str(exc), "run with --trace to see every byte on the wire", 1) from None


def _fail(failure: _Failure, *, as_json: bool = False, **context: Any) -> NoReturn:
    click.secho(f"error: {failure}", fg="red", err=True)
    click.echo(f"hint: {failure.hint}", err=True)
    if as_json:
        click.echo(json.dumps({**context, "error": str(failure), "hint": failure.hint}))
    sys.exit(failure.status)


_port_option = click.option(
    "--port", "-p", required=True, metavar="PORT",
    help="Serial port or URL of the board (/dev/ttyUSB0, COM3, sim://PROFILE for the "
         "built-in simulator).")
_board_option = click.option(
    "--board", "-b", "profile", required=True, metavar="PROFILE",
    help="Board profile name (vendhw board profiles) or a path to a profile file.")
_journal_option = click.option(
    "--journal", type=click.Path(dir_okay=False), envvar="VENDHW_JOURNAL", default=None,
    help="SQLite vend journal (default: in memory; use the machine's journal on a real "
         "machine so vend ids and board sequence numbers stay unique).")
_json_option = click.option("--json", "as_json", is_flag=True,
                            help="Machine-readable output (the last line is a JSON object).")


def _print_result(result: Any, console: Console) -> None:
    d = result.to_dict()
    style = _OUTCOME_STYLE.get(d["outcome"], "red")
    parts = [f"[{style}]{d['outcome']}[/]", f"slot {d['slot']}"]
    if str(d["slot"]) != str(d["slot_label"]) and d["slot_label"]:
        parts.append(f"({d['slot_label']})")
    parts.append(f"motor {d['motor']}")
    if d["duration_ms"] is not None:
        parts.append(f"in {d['duration_ms']} ms")
    if d["drop_time_ms"] is not None:
        parts.append(f"drop {d['drop_time_ms']} ms")
    if d["raw_code"] is not None:
        parts.append(f"code 0x{d['raw_code']:02X}")
    parts.append(f"vend {d['vend_id']}")
    if d["replayed"]:
        parts.append("[dim](already journaled; not vended again)[/]")
    console.print("  ".join(parts), highlight=False, soft_wrap=True)
    if d["detail"]:
        console.print(f"  {d['detail']}", style="dim", highlight=False, soft_wrap=True)


def plain_slot(profile: Any, slot: str) -> str:
    """SLOT as typed: a plain number 1..N is the Nth slot on every profile.

    Where the board's own numbers differ (fafb-lift: 11..58), a number that is a position
    but no board number (1..10) is the position, and one that is only a board number
    (41..58) stays the board's; a number that is both for different slots (11..40) is
    refused rather than guessed, since the wrong slot would vend the wrong product.
    """
    text = slot.strip()
    if not text.isdigit():
        return slot
    number = int(text)
    motors = profile.slots()
    is_position = 1 <= number <= len(motors)
    if not is_position or motors[number - 1] == number:
        return slot
    if number not in motors:
        return str(motors[number - 1])
    raise ConfigurationError(
        f"slot {number} is ambiguous on {profile.name}: position {number} is "
        f"{profile.slot_label(motors[number - 1])}, board number {number} is "
        f"{profile.slot_label(number)}; give the label")


@click.command()
@_port_option
@_board_option
@click.argument("slot")
@_json_option
@_journal_option
@click.option("--no-drop-sensor", is_flag=True,
              help="Do not ask the board to confirm the drop (boards with a sensor).")
@click.option("--vend-id", default=None,
              help="Idempotency key: a vend id already in the journal is never vended again.")
def dispense(port: str, profile: str, slot: str, as_json: bool, journal: str | None,
             no_drop_sensor: bool, vend_id: str | None) -> None:
    """Vend one product from SLOT (a label like 3-5, or a plain number 1..N).

    Exit 0 when delivered, 1 for any other outcome or a device failure, 2 for a usage error.
    """
    from vendhw.machine.core import Machine

    console = Console(stderr=as_json)
    context = {"outcome": None, "slot": slot, "duration_ms": None, "port": port,
               "board": profile}
    interrupted: list[int] = []

    def on_sigint(signum: int, frame: Any) -> None:
        if interrupted:  # the second Ctrl-C abandons the vend (journaled unknown)
            raise KeyboardInterrupt
        interrupted.append(signum)
        click.echo("Ctrl-C: letting the vend in progress finish and report (press Ctrl-C "
                   "again to abandon it; it is then journaled unknown)", err=True)

    previous = _install_sigint(on_sigint)
    try:
        with _errors(port, profile), Machine(profile, port, journal=journal) as machine:
            result = machine.dispense(plain_slot(machine.profile, slot), vend_id,
                                      drop_sensor=False if no_drop_sensor else None)
    except _Failure as failure:
        if interrupted:
            failure = _Failure(f"{failure} (after Ctrl-C)", failure.hint, 130)
            context["interrupted"] = "SIGINT"
        _fail(failure, as_json=as_json, **context)
    except KeyboardInterrupt:
        _fail(_Failure("interrupted by Ctrl-C twice during the vend: it is journaled unknown",
                       "check the slot, then settle it with: vendhw board resolve", 130),
              as_json=as_json, **{**context, "outcome": "unknown", "interrupted": "SIGINT"})
    finally:
        _install_sigint(previous)
    data = {**result.to_dict(), "port": port, "board": profile}
    if interrupted:
        data["interrupted"] = "SIGINT"
        if result.outcome.value == "unknown":
            data["detail"] = (
                "interrupted by Ctrl-C (SIGINT) during the vend, and the link failed right "
                "after: a simulator or program sharing this terminal was probably stopped by "
                "the same Ctrl-C (not an unplugged port); the vend may or may not have "
                f"happened, check the slot. Driver said: {result.detail}")
        click.echo(f"interrupted: Ctrl-C during the vend; outcome {result.outcome.value}",
                   err=True)
    if as_json:
        click.echo(json.dumps(data))
    else:
        _print_result(result, console)
        if interrupted and result.outcome.value == "unknown":
            console.print(f"  {data['detail']}", style="dim", highlight=False, soft_wrap=True)
    if interrupted and not result.delivered:
        sys.exit(130)
    sys.exit(0 if result.delivered else 1)


def _install_sigint(handler: Any) -> Any:
    """Set the SIGINT handler where Python allows it (the main thread); return the old one."""
    if threading.current_thread() is not threading.main_thread():
        return handler
    return signal.signal(signal.SIGINT, handler)


# -- vendhw board ------------------------------------------------------------------------------


@click.group()
def board() -> None:
    """Motor board status, self test, profiles, slots and the vend journal."""


def _print_mapping(title: str, data: dict[str, Any]) -> None:
    table = Table(title=title, show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for key, value in data.items():
        table.add_row(str(key), json.dumps(value) if isinstance(value, (dict, list))
                      else str(value))
    Console().print(table)


@board.command()
@_port_option
@_board_option
@_json_option
@_journal_option
def status(port: str, profile: str, as_json: bool, journal: str | None) -> None:
    """The board's status (door, temperature where it has them) and unresolved vends."""
    from vendhw.machine.core import Machine

    try:
        with _errors(port, profile), Machine(profile, port, journal=journal) as machine:
            data = machine.status()
    except _Failure as failure:
        _fail(failure, as_json=as_json, ok=False, port=port, board=profile)
    if as_json:
        click.echo(json.dumps(data, default=str))
    else:
        _print_mapping(f"{profile} on {port}", data)
    sys.exit(0 if data.get("ok") else 1)


@board.command()
@_port_option
@_board_option
@_json_option
def selftest(port: str, profile: str, as_json: bool) -> None:
    """Run the board's own self test (light curtain, motor check where the board has one)."""
    from vendhw.machine.core import Machine

    try:
        with _errors(port, profile), Machine(profile, port) as machine:
            data = machine.selftest()
    except _Failure as failure:
        _fail(failure, as_json=as_json, ok=False, port=port, board=profile)
    if as_json:
        click.echo(json.dumps(data, default=str))
    else:
        _print_mapping(f"self test of {profile} on {port}", data)
    sys.exit(0 if data.get("ok") else 1)


@board.command()
@_json_option
def profiles(as_json: bool) -> None:
    """List the board profiles this vendhw knows."""
    from vendhw.devices.boards import load_profile, profile_names

    rows: list[dict[str, Any]] = []
    for name in profile_names():
        p = load_profile(name)
        rows.append({"name": p.name, "family": p.family,
                     "baudrate": p.serial.get("baudrate"),
                     "capabilities": sorted(p.capabilities), "slots": len(p.slots()),
                     "description": p.description})
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    table = Table(_id_column([str(r["name"]) for r in rows], "name"), "family", "baud",
                  "slots", "capabilities", "description")
    for row in rows:
        table.add_row(str(row["name"]), str(row["family"]), str(row["baudrate"]),
                      str(row["slots"]), ", ".join(row["capabilities"]),
                      str(row["description"]))
    Console().print(table)


@board.command()
@_board_option
@_json_option
def slots(profile: str, as_json: bool) -> None:
    """List a profile's slots: the board's number and the operator's label."""
    from vendhw.devices.boards import load_profile

    try:
        with _errors(None, profile):
            p = load_profile(profile)
            mapping = [(motor, p.slot_label(motor)) for motor in p.slots()]
    except _Failure as failure:
        _fail(failure)
    if as_json:
        for motor, label in mapping:  # one object per line, like every --json
            click.echo(json.dumps({"motor": motor, "label": label}))
        return
    table = Table("motor", "label", title=f"slots of {p.name}")
    for motor, label in mapping:
        table.add_row(str(motor), label)
    Console().print(table)


@board.command()
@click.option("--journal", type=click.Path(dir_okay=False, exists=True),
              envvar="VENDHW_JOURNAL", required=True, help="The machine's vend journal.")
@click.option("--all", "show_all", is_flag=True, help="The latest vends, not only pending.")
@_json_option
def pending(journal: str, show_all: bool, as_json: bool) -> None:
    """Vends that need an operator: ``unknown`` outcomes and vends still in flight."""
    from vendhw.machine.journal import VendJournal

    try:
        with _errors(None, None), VendJournal(journal) as j:
            records = j.history(200) if show_all else j.pending()
    except _Failure as failure:
        _fail(failure)
    if as_json:
        for record in records:
            click.echo(json.dumps(record.to_dict()))
        return
    table = Table(_id_column([r.vend_id for r in records], "vend_id"), "board", "slot",
                  "motor", "seq", "state", "outcome", "detail",
                  title="vends" if show_all else "vends needing an operator")
    for r in records:
        table.add_row(r.vend_id, r.board, str(r.slot), str(r.motor), str(r.seq),
                      r.state.value, str(r.outcome or ""), r.detail)
    Console().print(table)


@board.command()
@click.option("--journal", type=click.Path(dir_okay=False, exists=True),
              envvar="VENDHW_JOURNAL", required=True, help="The machine's vend journal.")
@click.argument("vend_id")
@click.argument("outcome")
@click.option("--note", default="", help="What the operator saw.")
def resolve(journal: str, vend_id: str, outcome: str, note: str) -> None:
    """Settle an ``unknown`` vend after looking at the slot (e.g. OUTCOME=delivered)."""
    from vendhw.devices.boards import Outcome
    from vendhw.machine.journal import VendJournal

    try:
        with _errors(None, None):
            if outcome not in {o.value for o in Outcome} or outcome == Outcome.UNKNOWN.value:
                raise ConfigurationError(
                    f"outcome must be one of "
                    f"{', '.join(o.value for o in Outcome if o is not Outcome.UNKNOWN)}")
            with VendJournal(journal) as j:
                record = j.resolve(vend_id, outcome, note)
    except _Failure as failure:
        _fail(failure)
    click.echo(f"{record.vend_id}: {record.outcome} ({record.detail})")


# -- vendhw motor --------------------------------------------------------------------------------


@click.group()
def motor() -> None:
    """Motor tests for hardware engineers (these vend real products)."""


def parse_slot_range(text: str, valid: list[int]) -> list[int]:
    """``"1-10"``, ``"3"``, ``"1,4,7-9"`` -> board slot numbers, all checked against the
    profile (ConfigurationError names the first bad one)."""
    wanted: list[int] = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        low, sep, high = part.partition("-")
        try:
            first = int(low)
            last = int(high) if sep else first
        except ValueError:
            raise ConfigurationError(
                f"bad --slots {text!r}: use board numbers like 1-10 or 1,4,7-9") from None
        if last < first:
            raise ConfigurationError(f"bad --slots range {part!r}: {last} < {first}")
        wanted.extend(range(first, last + 1))
    bad = [n for n in wanted if n not in set(valid)]
    if bad:
        raise ConfigurationError(
            f"unknown slot {bad[0]} in --slots {text!r}; the board has "
            f"{min(valid)}..{max(valid)}" if valid else "the profile has no slots")
    if not wanted:
        raise ConfigurationError(f"--slots {text!r} names no slot")
    return list(dict.fromkeys(wanted))


@motor.command()
@_port_option
@_board_option
@click.option("--slots", "slot_text", default=None, metavar="RANGE",
              help="Board slot numbers to run, e.g. 1-10 or 1,4,7-9 (default: every slot).")
@_json_option
@_journal_option
@click.option("--no-drop-sensor", is_flag=True, help="Do not ask for drop confirmation.")
def scan(port: str, profile: str, slot_text: str | None, as_json: bool, journal: str | None,
         no_drop_sensor: bool) -> None:
    """Run every slot (or --slots) once and print a table of outcomes.

    Each run is a real, journaled vend. Exit 0 when every slot delivered, 1 otherwise.
    """
    from vendhw.machine.core import DispenseResult, Machine

    console = Console(stderr=as_json)
    results: list[DispenseResult] = []
    interrupted = 0
    try:
        with _errors(port, profile), Machine(profile, port, journal=journal) as machine:
            numbers = (parse_slot_range(slot_text, machine.profile.slots()) if slot_text
                       else machine.profile.slots())
            with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                          MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                          transient=as_json) as progress:
                task = progress.add_task(f"scanning {profile}", total=len(numbers))
                try:
                    for number in numbers:
                        progress.update(task,
                                        description=f"slot {machine.profile.slot_label(number)}")
                        results.append(machine.dispense(
                            number, drop_sensor=False if no_drop_sensor else None))
                        progress.advance(task)
                except KeyboardInterrupt:  # Ctrl-C: show the partial table, exit 130
                    interrupted = len(numbers)
    except _Failure as failure:
        done = [r.to_dict() for r in results]
        _fail(failure, as_json=as_json, scanned=len(done), results=done)
    counts: dict[str, int] = {}
    for r in results:
        counts[r.outcome.value] = counts.get(r.outcome.value, 0) + 1
    all_ok = all(r.delivered for r in results)
    if as_json:
        click.echo(json.dumps({"board": profile, "port": port, "scanned": len(results),
                               "outcomes": counts, "ok": all_ok,
                               **({"interrupted": True} if interrupted else {}),
                               "results": [r.to_dict() for r in results]}))
    else:
        table = Table("slot", "label", "outcome", "code", "drop ms", "time ms", "detail",
                      title=f"motor scan of {profile} on {port}")
        for r in results:
            style = _OUTCOME_STYLE.get(r.outcome.value, "red")
            table.add_row(str(r.motor), r.slot_label, f"[{style}]{r.outcome.value}[/]",
                          "" if r.raw_code is None else f"0x{r.raw_code:02X}",
                          "" if r.drop_time_ms is None else str(r.drop_time_ms),
                          "" if r.duration_ms is None else str(r.duration_ms), r.detail)
        console.print(table)
        console.print(", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    if interrupted:
        click.echo(f"interrupted (Ctrl-C) after {len(results)} of {interrupted} slots", err=True)
        sys.exit(130)
    sys.exit(0 if all_ok else 1)
