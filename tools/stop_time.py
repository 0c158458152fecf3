"""Seconds from SIGTERM to exit, with an instruction long poll open (maintainer tool).

Usage: python tools/stop_time.py [--runs 3]

Starts `vendhw backend serve` and `vendhw machine run` (board simulator) as real processes on
loopback, lets the agent open its 25 s instruction long poll, stops the agent with SIGTERM,
then holds a long poll open from this process and stops the backend the same way.
"""

from __future__ import annotations

import argparse
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from vendhw.client import BackendClient


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop(process: subprocess.Popen[str]) -> float:
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    process.wait(120)
    return time.monotonic() - started


def one_run(tmp: Path) -> tuple[float, float]:
    port, token, secret = _free_port(), secrets.token_hex(8), secrets.token_hex(16)
    url = f"http://127.0.0.1:{port}"
    backend = subprocess.Popen(
        [sys.executable, "-m", "vendhw", "backend", "serve", "--db", f"sqlite:///{tmp / 'b.db'}",
         "--host", "127.0.0.1", "--port", str(port), "--operator-token", token,
         "--log-level", "warning"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        text=True)
    agent: subprocess.Popen[str] | None = None
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.05)  # sleep-ok: waiting for a server process to come up
        httpx.post(f"{url}/operator/v1/catalogue", headers={"Authorization": f"Bearer {token}"},
                   json={"products": [{"id": "tea", "name": "Tea", "price": 300}],
                         "machines": [{"id": "m1", "secret": secret, "slots": [
                             {"slot": "1", "product": "tea", "price": 300}]}]},
                   timeout=10).raise_for_status()
        config = tmp / "machine.toml"
        config.write_text(f'[backend]\nurl = "{url}"\nmachine_id = "m1"\nsecret = "{secret}"\n'
                          '[board]\nprofile = "easivend-column"\nport = "sim://easivend-column"\n'
                          f'[agent]\ndata_dir = "{tmp / "data"}"\nscreen_port = {_free_port()}\n')
        agent = subprocess.Popen([sys.executable, "-m", "vendhw", "machine", "run", "--config",
                                  str(config)], stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, text=True)
        assert agent.stdout is not None
        agent.stdout.readline()  # "screen at ...": reconciled, shipping, serving
        time.sleep(1.0)  # sleep-ok: let the agent's long poll reach the server
        agent_stop = _stop(agent)

        client = BackendClient(url, "m1", secret, outbox=tmp / "outbox.db", retries=0)

        def long_poll() -> None:
            try:
                client.next_instructions(wait=25)
            except Exception:  # cut by the stopping server, as expected
                pass

        threading.Thread(target=long_poll, daemon=True).start()
        time.sleep(0.5)  # sleep-ok: let the long poll reach the server
        backend_stop = _stop(backend)
        client.close()
        return agent_stop, backend_stop
    finally:
        for process in (agent, backend):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    for run in range(1, args.runs + 1):
        with tempfile.TemporaryDirectory() as tmp:
            agent_stop, backend_stop = one_run(Path(tmp))
        print(f"run {run}: machine run {agent_stop:.2f} s, backend serve {backend_stop:.2f} s")


if __name__ == "__main__":
    main()
