"""End-to-end orders per second of the reference backend (sandbox provider, SQLite default).

Starts ``vendhw backend serve`` on 127.0.0.1 with a fresh SQLite file, registers machines,
then each machine (one thread, one signed BackendClient) sells in a loop, exactly as a real
machine and customer would over HTTP:

    create_order -> sandbox Pay (the server then sends itself the signed notification over
    HTTP) -> long-poll the ship instruction -> ack -> report delivered (-> state delivered)

Bounded: it stops after ``--orders`` sales or ``--max-seconds``, whichever comes first, and
only talks to loopback. Prints one JSON line with the figures. ``request_ms_p99`` is over the
machine's own requests (create order, ack, report), the provider's part (pay, push) excluded.
``server_cpu_ms_per_order`` is the CPU time the backend process(es) used per sale (Linux): a
process is one core at most (the GIL), so 1000 / that figure bounds its sales per second.
``machines_cpu_ms_per_order`` is what the simulated machines (this process) used: on a small
host they share the CPUs with the backend.

``--processes N`` starts N backend processes on N ports over one database (give ``--db`` a
PostgreSQL URL; SQLite works but serialises writers) and spreads the machines over them, each
machine sticking to one process as behind a load balancer with machine affinity.

    python tools/bench_backend.py --orders 400 --machines 8
    python tools/bench_backend.py --db postgresql+psycopg://u@/vendhw?host=/tmp --processes 4
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
from typing import Any

import httpx

from vendhw.client import BackendClient

TOKEN = "bench-operator-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(db: str, port: int, poller: bool = True) -> subprocess.Popen[bytes]:
    env = {**os.environ, "VENDHW_OPERATOR_TOKEN": TOKEN}
    process = subprocess.Popen(
        [sys.executable, "-m", "vendhw", "backend", "serve", "--db", db, "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning", "--redeliver-after", "30s",
         *([] if poller else ["--no-poller"])],
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


def cpu_seconds(process: subprocess.Popen[bytes]) -> float | None:
    """User + system CPU seconds a process has used so far (Linux ``/proc``; else None)."""
    try:
        fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(orders: int = 400, machines: int = 8, max_seconds: float = 120.0,
        db: str | None = None, processes: int = 1) -> dict[str, Any]:
    """Run the benchmark; returns its figures (also what ``benchmarks/report.py`` uses)."""
    with tempfile.TemporaryDirectory() as tmp:
        url_db = db or f"sqlite:///{Path(tmp) / 'bench.db'}"
        ports = [free_port() for _ in range(processes)]
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        servers: list[subprocess.Popen[bytes]] = []
        try:
            # The first process migrates the schema; the others start once it answers.
            for index, port in enumerate(ports):
                servers.append(start_server(url_db, port, poller=index == 0))
            secrets = {f"bench-{i}": f"bench-secret-{i:04d}-padding" for i in range(machines)}
            catalogue = {"products": [{"id": "cola", "name": "Cola", "price": 350}],
                         "machines": [{"id": m, "secret": s, "slots": [{"slot": "A1",
                                                                        "product": "cola"}]}
                                      for m, s in secrets.items()]}
            httpx.post(urls[0] + "/operator/v1/catalogue", json=catalogue,
                       headers={"Authorization": f"Bearer {TOKEN}"}).raise_for_status()

            remaining = [orders]
            lock = threading.Lock()
            latencies: list[float] = []
            requests: list[float] = []
            failures: list[str] = []
            stop_at = time.monotonic() + max_seconds

            def take() -> bool:
                with lock:
                    if remaining[0] <= 0 or time.monotonic() > stop_at:
                        return False
                    remaining[0] -= 1
                    return True

            def timed(mine: list[float], call: Any, *args: Any, **kwargs: Any) -> Any:
                began = time.perf_counter()
                result = call(*args, **kwargs)
                mine.append(time.perf_counter() - began)
                return result

            def machine(index: int, machine_id: str, secret: str) -> None:
                url = urls[index % len(urls)]
                mine: list[float] = []
                with BackendClient(url, machine_id, secret) as client, httpx.Client() as phone:
                    while take():
                        started = time.monotonic()
                        try:
                            order = timed(mine, client.create_order, "A1")
                            phone.post(f"{url}/sandbox/orders/{order.id}/pay").raise_for_status()
                            [ship] = client.next_instructions(wait=10)
                            timed(mine, client.ack, ship.id, ship.order_id)
                            receipt = timed(mine, client.report_result, order.id, "delivered",
                                            instruction_id=ship.id)
                            assert receipt.order is not None
                            assert receipt.order.state == "delivered", receipt
                        except Exception as exc:
                            with lock:
                                failures.append(repr(exc))
                            continue
                        with lock:
                            latencies.append(time.monotonic() - started)
                with lock:
                    requests.extend(mine)

            threads = [threading.Thread(target=machine, args=(i, *item))
                       for i, item in enumerate(secrets.items())]
            cpu_before = [cpu_seconds(server) for server in servers]
            own_before = time.process_time()
            began = time.monotonic()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed = time.monotonic() - began
            cpu_after = [cpu_seconds(server) for server in servers]
            own = time.process_time() - own_before
        finally:
            for server in servers:
                server.send_signal(signal.SIGINT)
            for server in servers:
                try:
                    server.wait(15)
                except subprocess.TimeoutExpired:
                    server.kill()

    done = len(latencies)
    used = [None if a is None or b is None else b - a
            for a, b in zip(cpu_before, cpu_after, strict=True)]
    cpu = sum(u for u in used if u is not None) if done and None not in used else None
    quantiles = statistics.quantiles(latencies, n=20) if done >= 20 else [0.0] * 19
    per_request = statistics.quantiles(requests, n=100) if len(requests) >= 100 else None
    return {
        "db": "sqlite (WAL, synchronous=FULL)" if db is None else db.split("@")[-1],
        "processes": processes, "machines": machines, "orders_delivered": done,
        "failures": len(failures), "seconds": round(elapsed, 2),
        "orders_per_second": round(done / elapsed, 1) if elapsed else 0.0,
        "latency_ms_p50": round(statistics.median(latencies) * 1000, 1) if done else None,
        "latency_ms_p95": round(quantiles[18] * 1000, 1),
        "request_ms_p50": round(statistics.median(requests) * 1000, 1) if requests else None,
        "request_ms_p99": round(per_request[98] * 1000, 1) if per_request else None,
        "http_requests_per_order": 6,
        "server_cpu_ms_per_order": round(cpu * 1000 / done, 1) if cpu is not None else None,
        "machines_cpu_ms_per_order": round(own * 1000 / done, 1) if done else None,
        "cpus": os.cpu_count(),
        "first_failures": failures[:3],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--orders", type=int, default=400, help="total sales (bound)")
    parser.add_argument("--machines", type=int, default=8, help="concurrent machines")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="time bound")
    parser.add_argument("--db", default=None, help="SQLAlchemy URL [default: temp SQLite]")
    parser.add_argument("--processes", type=int, default=1, help="backend processes")
    args = parser.parse_args()
    print(json.dumps(run(args.orders, args.machines, args.max_seconds, args.db,
                         args.processes)))


if __name__ == "__main__":
    main()
