"""``vendhw machine check``: is this machine ready to sell? One finding per check.

* ``screen``: the customer screen's address can be listened on;
* ``backend``: the backend answers and accepts the machine's id and secret;
* ``catalogue``: every slot of the machine's catalogue exists on the board profile;
* ``board``: the board answers on its port (opened with an in-memory journal, so the
  machine's own journal is not touched; a running agent holds the port, which shows as busy).

``machine run`` runs the first three at start and stops with one line when the backend
refuses the secret or the catalogue names slots the board lacks, instead of logging 401s
forever. An unreachable backend is only a warning there: the agent queues its reports.

Ports are judged the same way by both commands. A port URL that can never open (a typo in
the scheme, a malformed ``usb-serial://`` identity) is a configuration mistake:
:meth:`AgentConfig.load` refuses it, so both exit 2 with one line. A port that is only
missing now (a USB adapter not plugged in or not enumerated yet) or a board that does not
answer fails the ``board`` check here, and the finding says so: ``machine run`` starts all
the same, with that device offline, and opens it once it appears.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass
from typing import Any

from vendhw.agent.runner import AgentConfig
from vendhw.errors import ConfigurationError, VendhwError

BACKEND_TIMEOUT = 5.0
"""Seconds a check waits for the backend (one try, no retries)."""
WAITS = ("machine run starts all the same, with the board offline, and opens it once it "
         "answers")
"""Said with a board that cannot be opened now for a reason time may cure."""


@dataclass
class Finding:
    check: str
    status: str
    """``ok``, ``warn`` or ``fail``."""
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.check, "status": self.status, "detail": self.detail}


def check_screen(config: AgentConfig) -> Finding:
    """Can the screen's host:port be listened on (free, allowed)?"""
    try:
        with socket.socket(socket.AF_INET6 if ":" in config.screen_host else socket.AF_INET,
                           socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((config.screen_host, config.screen_port))
    except OSError as exc:
        why = "is in use (another agent?)" if exc.errno == errno.EADDRINUSE else \
            f"cannot be used ({exc.strerror or exc})"
        return Finding("screen", "fail", f"[agent] screen_port: {config.screen_host}:"
                       f"{config.screen_port} {why}")
    return Finding("screen", "ok", f"screen can listen on {config.screen_host}:"
                                   f"{config.screen_port}")


def fetch_catalogue(config: AgentConfig) -> tuple[Finding, dict[str, Any] | None]:
    """The machine's catalogue, fetched with its own id and secret."""
    from vendhw.client import BackendClient
    from vendhw.client.errors import AuthenticationError, BackendError

    client = BackendClient(config.backend_url, config.machine_id, config.secret,
                           timeout=BACKEND_TIMEOUT, retries=0)
    try:
        catalogue = client.catalogue()
    except AuthenticationError as exc:
        return Finding("backend", "fail",
                       f"{config.backend_url} refused machine {config.machine_id!r}: {exc} "
                       "(check [backend] machine_id and secret against `vendhw backend "
                       "machines list`)"), None
    except BackendError as exc:
        return Finding("backend", "fail", f"{config.backend_url}: {exc}"), None
    except VendhwError as exc:
        return Finding("backend", "warn", f"{config.backend_url} is unreachable: {exc}"), None
    finally:
        client.close()
    return Finding("backend", "ok", f"{config.backend_url} accepts machine "
                                    f"{config.machine_id!r}"), catalogue


def check_catalogue(config: AgentConfig, catalogue: dict[str, Any]) -> Finding:
    """Every catalogue slot must be a slot of the board profile."""
    from vendhw.devices.boards.profile import load_profile

    try:
        profile = load_profile(config.board_profile)
    except ConfigurationError as exc:  # one finding (and one line from run), not a traceback
        return Finding("catalogue", "fail", f"[board] profile: {exc}")
    slots = [str(s.get("slot")) for s in catalogue.get("slots", [])]
    missing = []
    for slot in slots:
        try:
            profile.slot_to_motor(slot)
        except ConfigurationError:
            missing.append(slot)
    if missing:
        first, last = profile.slot_label(profile.slots()[0]), \
            profile.slot_label(profile.slots()[-1])
        return Finding("catalogue", "fail",
                       f"catalogue slots {', '.join(missing)} are not on board profile "
                       f"{profile.name!r} (its slots: {first}..{last}; vendhw board slots "
                       f"--board {config.board_profile})")
    return Finding("catalogue", "ok", f"all {len(slots)} catalogue slots exist on "
                                      f"{profile.name}")


def check_board(config: AgentConfig) -> Finding:
    """Open the board (the driver's probe) without the machine's journal."""
    from vendhw.machine import Machine

    try:
        with Machine(config.board_profile, config.board_port) as machine:
            profile = machine.profile.name
    except ConfigurationError as exc:
        return Finding("board", "fail", f"{config.board_port}: {exc}")
    except VendhwError as exc:
        return Finding("board", "fail", f"{config.board_port}: {exc} ({WAITS})")
    return Finding("board", "ok", f"{profile} board answers on {config.board_port}")


def check_machine(config: AgentConfig, *, board: bool = True,
                  screen: bool = True) -> list[Finding]:
    """Every check, in the order a person would fix them."""
    findings: list[Finding] = []
    if screen:
        findings.append(check_screen(config))
    backend, catalogue = fetch_catalogue(config)
    findings.append(backend)
    if catalogue is not None:
        findings.append(check_catalogue(config, catalogue))
    if board:
        findings.append(check_board(config))
    return findings
