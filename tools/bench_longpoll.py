"""How many machines one backend process holds connected (idle long-polls), and its memory.

Starts ``vendhw backend serve`` (temp SQLite unless ``--db``), registers ``--machines``
machines, opens one signed ``GET /machine/v1/instructions?wait=60`` per machine from one
asyncio client, waits until the operator API reports them all online (a long-poll open),
then reads the server's resident memory (Linux ``/proc``). Bounded by ``--max-seconds``;
loopback only. Prints one JSON line.

    python tools/bench_longpoll.py --machines 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from bench_backend import TOKEN, free_port, start_server

from vendhw.client import signing


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def hold(url: str, machines: dict[str, str], max_seconds: float) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=len(machines) + 10, max_keepalive_connections=0)
    path = "/machine/v1/instructions?wait=60"
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=90) as client:

        async def poll(machine_id: str, secret: str) -> None:
            headers = signing.signed_headers(secret, machine_id, "GET", path, b"", time.time())
            await client.get(path, headers=headers)

        tasks = [asyncio.create_task(poll(m, s)) for m, s in machines.items()]
        began = time.monotonic()
        online = 0
        while time.monotonic() - began < max_seconds:
            await asyncio.sleep(1.0)
            listed = (await client.get("/operator/v1/machines", headers={
                "Authorization": f"Bearer {TOKEN}"})).json()["machines"]
            online = sum(1 for m in listed if m["online"])
            if online >= len(machines):
                break
        elapsed = time.monotonic() - began
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {"online": online, "seconds_to_connect": round(elapsed, 1)}


def run(machines: int = 1000, max_seconds: float = 120.0, db: str | None = None,
        stop_timeout: float = 60.0) -> dict[str, Any]:
    """Run the benchmark; returns its figures (also what ``benchmarks/report.py`` uses).

    The server gets ``stop_timeout`` seconds to stop on SIGTERM, then is killed (a server
    whose long-polls' clients went away can take the long-poll's remaining wait to stop).
    """
    with tempfile.TemporaryDirectory() as tmp:
        db = db or f"sqlite:///{Path(tmp) / 'lp.db'}"
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = start_server(db, port)
        result: dict[str, Any] = {}
        try:
            idle = rss_mib(server.pid)
            fleet = {f"lp-{i:05d}": f"lp-secret-{i:05d}-padding" for i in range(machines)}
            catalogue = {"products": [{"id": "cola", "name": "Cola", "price": 350}],
                         "machines": [{"id": m, "secret": s,
                                       "slots": [{"slot": "A1", "product": "cola"}]}
                                      for m, s in fleet.items()]}
            httpx.post(url + "/operator/v1/catalogue", json=catalogue, timeout=120,
                       headers={"Authorization": f"Bearer {TOKEN}"}).raise_for_status()
            loaded = rss_mib(server.pid)

            async def measure() -> None:
                task = asyncio.create_task(hold(url, fleet, max_seconds))
                while not task.done():
                    await asyncio.sleep(0.5)
                    result["peak_rss_mib"] = max(result.get("peak_rss_mib", 0.0),
                                                 rss_mib(server.pid))
                result.update(task.result())

            asyncio.run(measure())
        finally:
            stopping = time.monotonic()
            server.terminate()
            try:
                server.wait(stop_timeout)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            result["seconds_to_stop"] = round(time.monotonic() - stopping, 1)
    connected = result["online"]
    return {
        "machines": machines, "connected": connected,
        "seconds_to_connect": result["seconds_to_connect"],
        "rss_mib_idle": round(idle, 1), "rss_mib_with_catalogue": round(loaded, 1),
        "rss_mib_peak": round(result.get("peak_rss_mib", 0.0), 1),
        "seconds_to_stop": result.get("seconds_to_stop"),
        "kib_per_connection": round((result.get("peak_rss_mib", 0.0) - loaded) * 1024
                                    / connected, 1) if connected else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--machines", type=int, default=1000)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    parser.add_argument("--db", default=None)
    args = parser.parse_args()
    print(json.dumps(run(args.machines, args.max_seconds, args.db)))


if __name__ == "__main__":
    main()
