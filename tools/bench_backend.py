"""End-to-end orders per second of the reference backend (sandbox provider, SQLite default).

Starts ``vendhw backend serve`` on 127.0.0.1 with a fresh SQLite file, registers machines,
then each machine (one thread, one signed BackendClient) sells in a loop, exactly as a real
machine and customer would over HTTP:

    create_order -> sandbox Pay (the server then sends itself the signed notification over
    HTTP) -> long-poll the ship instruction -> ack -> report delivered (-> state delivered)

Bounded: it stops after ``--orders`` sales or ``--max-seconds``, whichever comes first, and
only talks to loopback. Prints one JSON line with the figures.

    python tools/bench_backend.py --orders 400 --machines 8
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from vendhw.client import BackendClient

TOKEN = "bench-operator-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(db: str, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "VENDHW_OPERATOR_TOKEN": TOKEN}
    process = subprocess.Popen(
        [sys.executable, "-m", "vendhw", "backend", "serve", "--db", db, "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning", "--redeliver-after", "30s"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            error = process.stderr.read().decode() if process.stderr else ""
            raise SystemExit(f"server died: {error}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise SystemExit("server did not become ready in 30 s")
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=400, help="total sales (bound)")
    parser.add_argument("--machines", type=int, default=8, help="concurrent machines")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="time bound")
    parser.add_argument("--db", default=None, help="SQLAlchemy URL [default: temp SQLite]")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or f"sqlite:///{Path(tmp) / 'bench.db'}"
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = start_server(db, port)
        try:
            secrets = {f"bench-{i}": f"bench-secret-{i:04d}-padding" for i in range(args.machines)}
            catalogue = {"products": [{"id": "cola", "name": "Cola", "price": 350}],
                         "machines": [{"id": m, "secret": s, "slots": [{"slot": "A1",
                                                                        "product": "cola"}]}
                                      for m, s in secrets.items()]}
            httpx.post(url + "/operator/v1/catalogue", json=catalogue,
                       headers={"Authorization": f"Bearer {TOKEN}"}).raise_for_status()

            remaining = [args.orders]
            lock = threading.Lock()
            latencies: list[float] = []
            failures: list[str] = []
            stop_at = time.monotonic() + args.max_seconds

            def take() -> bool:
                with lock:
                    if remaining[0] <= 0 or time.monotonic() > stop_at:
                        return False
                    remaining[0] -= 1
                    return True

            def machine(machine_id: str, secret: str) -> None:
                with BackendClient(url, machine_id, secret) as client, httpx.Client() as phone:
                    while take():
                        started = time.monotonic()
                        try:
                            order = client.create_order("A1")
                            phone.post(f"{url}/sandbox/orders/{order.id}/pay").raise_for_status()
                            [ship] = client.next_instructions(wait=10)
                            client.ack(ship.id, ship.order_id)
                            receipt = client.report_result(order.id, "delivered",
                                                           instruction_id=ship.id)
                            assert receipt.order is not None
                            assert receipt.order.state == "delivered", receipt
                        except Exception as exc:
                            with lock:
                                failures.append(repr(exc))
                            continue
                        with lock:
                            latencies.append(time.monotonic() - started)

            threads = [threading.Thread(target=machine, args=item) for item in secrets.items()]
            began = time.monotonic()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed = time.monotonic() - began
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()

    done = len(latencies)
    quantiles = statistics.quantiles(latencies, n=20) if done >= 20 else [0.0] * 19
    print(json.dumps({
        "db": "sqlite (WAL, synchronous=FULL)" if args.db is None else args.db,
        "machines": args.machines, "orders_delivered": done, "failures": len(failures),
        "seconds": round(elapsed, 2), "orders_per_second": round(done / elapsed, 1),
        "latency_ms_p50": round(statistics.median(latencies) * 1000, 1) if done else None,
        "latency_ms_p95": round(quantiles[18] * 1000, 1),
        "http_requests_per_order": 6,
        "first_failures": failures[:3],
    }))


if __name__ == "__main__":
    main()
