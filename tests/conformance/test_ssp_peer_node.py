"""Third-party host: the Node eSSP library ``encrypted-smiley-secure-protocol`` (npm 0.0.11)
drives vendhw's SMART Payout simulator over a pty, with encryption on.

It runs SYNC, HOST PROTOCOL VERSION, the Diffie-Hellman key exchange, then only encrypted
commands: serial number, setup, inhibits, enable, POLL until a note is credited, POLL WITH
ACK until a second note is credited (it must repeat until EVENT ACK, then stop), disable.
Before the eCOUNT fix the simulator discarded its second encrypted command and the library
resent it forever; before the SYNC fix its HOST PROTOCOL VERSION was never executed.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

from ssp_peers import NODE_DIR, node_host

from vendhw.sim.ssp import SspSimulator
from vendhw.transport import SimulatorOnPty

SET_GENERATOR, SET_MODULUS, REQUEST_KEY_EXCHANGE, HOST_PROTOCOL_VERSION = 0x4A, 0x4B, 0x4C, 0x06


def run_node_session(sim: SspSimulator, polls: int = 40) -> list[dict[str, Any]]:
    command = node_host()
    with SimulatorOnPty(sim) as served:
        try:
            done = subprocess.run([*command, served.port, str(polls), "30"], cwd=NODE_DIR,
                                  capture_output=True, text=True, timeout=45)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"the Node host hung; output so far: {exc.stdout!r}") from None
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines and lines[-1].get("done") is True, (done.stdout[-3000:], done.stderr[-2000:])
    return lines


def test_node_essp_host_runs_an_encrypted_session_and_gets_the_credit() -> None:
    sim = SspSimulator(speed=20, auto_insert="2,4", insert_interval=0.1)
    lines = run_node_session(sim)
    exchanges = [line for line in lines if "command" in line]
    assert [line["status"] for line in exchanges] == ["OK"] * len(exchanges)
    encrypted = [line for line in exchanges if line.get("encrypted")]
    assert len(encrypted) >= 12  # serial, setup, inhibits, enable, polls, acks, disable
    # The library takes each reply's count as its next count: 1, 2, 3... once per exchange.
    assert [line["count"] for line in encrypted] == list(range(1, len(encrypted) + 1))
    assert sim.cipher is not None and sim.cipher.count == encrypted[-1]["count"]
    setup = next(line for line in exchanges if line["command"] == "SETUP_REQUEST")
    assert setup["info"]["protocol_version"] == 6
    assert setup["info"]["expanded_channel_value"] == [5, 10, 20, 50]
    credit = [event for line in exchanges if line["command"] == "POLL"
              for event in (line["info"] or []) if event["name"] == "CREDIT_NOTE"]
    assert [event["channel"] for event in credit] == [2]
    assert lines[-1]["credits"] == 1 and sim.credited == [1000, 5000]
    # POLL WITH ACK: the second credit repeated until the library's EVENT ACK, then stopped.
    assert (lines[-1]["acked"], lines[-1]["repeats"], lines[-1]["afterAck"]) == (1, 1, 0)
    assert {HOST_PROTOCOL_VERSION, SET_GENERATOR, SET_MODULUS,
            REQUEST_KEY_EXCHANGE} <= set(sim.executed)
