"""The floor of the HTTP stack: requests/s and CPU per request of a trivial route.

What does uvicorn + Starlette/FastAPI cost per request on this machine before vendhw does any
work? Each variant starts a uvicorn server (one process, the asyncio loop, like
``vendhw backend serve``) in a subprocess on 127.0.0.1, then a load generator in *this*
process (raw keep-alive HTTP/1.1 over ``--connections`` sockets, asyncio, pre-built requests:
as little client CPU as Python allows) sends GET requests for ``--seconds`` and counts the
answers. The server's CPU is read from ``/proc`` (Linux) over the same window.

Variants (``--variants``, comma separated):

* ``asgi``: a bare ASGI callable (uvicorn + the HTTP parser only);
* ``starlette``: a Starlette ``async`` route returning a small JSONResponse;
* ``fastapi-async``: the same route in FastAPI (``async def``, a dict answer);
* ``fastapi-sync``: a plain ``def`` route, as vendhw's machine routes are: FastAPI runs it in
  the thread pool (one hop to a worker thread and back per request);
* ``fastapi-post``: a ``def`` POST route with a pydantic body and a dependency reading the raw
  body (the shape of vendhw's signed machine routes, without the signature or the database).

Each variant runs with uvicorn's ``h11`` parser and, if installed, ``httptools``.
``cpu_us_per_request`` = server CPU / requests; ``1e6 / cpu_us_per_request`` is what one
process could answer with a core of its own. A sale is 6 HTTP requests, so
``sale_floor_ms`` = 6 x the ``fastapi-sync`` figure is the CPU a sale costs before any
database work, and ``1000 / sale_floor_ms`` the sales/s ceiling of one process.

Bounded: ``--seconds`` per variant (default 3), loopback only. Prints one JSON line per
variant and a summary line.

    python tools/bench_http_floor.py
    python tools/bench_http_floor.py --variants fastapi-sync --seconds 5 --connections 8
"""

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

VARIANTS = ("asgi", "starlette", "fastapi-async", "fastapi-sync", "fastapi-post")


# --- the servers (run in the subprocess) -----------------------------------------------------


def build_app(variant: str) -> Any:
    if variant == "asgi":
        body = b'{"ok":true}'
        start = {"type": "http.response.start", "status": 200,
                 "headers": [(b"content-type", b"application/json"),
                             (b"content-length", str(len(body)).encode())]}
        answer = {"type": "http.response.body", "body": body}

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            await send(start)
            await send(answer)

        return app
    if variant == "starlette":
        from starlette.applications import Starlette
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        async def ping(request: Any) -> JSONResponse:
            return JSONResponse({"ok": True})

        return Starlette(routes=[Route("/ping", ping)])
    from fastapi import Depends, FastAPI, Request
    from pydantic import BaseModel

    api = FastAPI()
    if variant == "fastapi-async":
        @api.get("/ping")
        async def ping_async() -> dict[str, bool]:
            return {"ok": True}
    elif variant == "fastapi-sync":
        @api.get("/ping")
        def ping_sync() -> dict[str, bool]:
            return {"ok": True}
    elif variant == "fastapi-post":
        class Body(BaseModel):
            slot: str

        async def raw(request: Request) -> bytes:
            return await request.body()

        @api.post("/ping")
        def ping_post(body: Body, raw_body: bytes = Depends(raw)) -> dict[str, Any]:
            return {"ok": True, "slot": body.slot, "n": len(raw_body)}
    else:
        raise SystemExit(f"unknown variant {variant!r}")
    return api


def serve(variant: str, http: str, port: int) -> None:
    import uvicorn

    sys.setswitchinterval(0.001)  # as vendhw backend serve
    uvicorn.run(build_app(variant), host="127.0.0.1", port=port, http=http, loop="asyncio",
                log_level="warning", access_log=False)


# --- the load generator (this process) ---------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def request_bytes(variant: str, port: int) -> bytes:
    if variant == "fastapi-post":
        body = b'{"slot":"A1"}'
        return (f"POST /ping HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                ).encode() + body
    return f"GET /ping HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()


async def one_connection(port: int, request: bytes, stop_at: float, counts: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.monotonic() < stop_at:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"unexpected answer: {head[:80]!r}")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            counts[0] += 1
    finally:
        writer.close()


async def load(port: int, request: bytes, connections: int, seconds: float) -> int:
    counts = [0]
    stop_at = time.monotonic() + seconds
    await asyncio.gather(*(one_connection(port, request, stop_at, counts)
                           for _ in range(connections)))
    return counts[0]


def wait_ready(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("server died: " + (process.stderr.read().decode()
                                                if process.stderr else ""))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("server not ready in 30 s")


def measure(variant: str, http: str, seconds: float, connections: int) -> dict[str, Any]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", variant, "--http", http, "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_ready(port, process)
        request = request_bytes(variant, port)
        asyncio.run(load(port, request, connections, 0.5))  # warm up
        cpu_before, own_before = cpu_seconds(process.pid), time.process_time()
        began = time.monotonic()
        done = asyncio.run(load(port, request, connections, seconds))
        elapsed = time.monotonic() - began
        cpu = cpu_seconds(process.pid) - cpu_before
        own = time.process_time() - own_before
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
    return {"variant": variant, "http": http, "connections": connections, "requests": done,
            "seconds": round(elapsed, 2), "requests_per_s": round(done / elapsed),
            "cpu_us_per_request": round(cpu * 1e6 / done, 1) if done else None,
            "server_cpu_share": round(cpu / elapsed, 2),
            "client_cpu_us_per_request": round(own * 1e6 / done, 1) if done else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--http", default=None,
                        help="h11, httptools or both (default: both when installed)")
    parser.add_argument("--seconds", type=float, default=3.0, help="per variant (bound)")
    parser.add_argument("--connections", type=int, default=8, help="keep-alive connections")
    parser.add_argument("--serve", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.http or "h11", args.port)
        return
    if args.http:
        parsers = args.http.split(",")
    else:
        parsers = ["h11"]
        try:
            import httptools  # noqa: F401

            parsers.append("httptools")
        except ImportError:
            pass
    seconds = min(max(args.seconds, 0.5), 60.0)
    results = []
    for variant in args.variants.split(","):
        for http in parsers:
            result = measure(variant, http, seconds, max(1, min(args.connections, 256)))
            results.append(result)
            print(json.dumps(result), flush=True)
    summary: dict[str, Any] = {"loadavg": os.getloadavg()[0], "cpus": os.cpu_count()}
    for result in results:
        if result["variant"] == "fastapi-sync" and result["cpu_us_per_request"]:
            sale = 6 * result["cpu_us_per_request"] / 1000
            summary[f"sale_floor_ms_{result['http']}"] = round(sale, 2)
            summary[f"sales_per_s_ceiling_{result['http']}"] = round(1000 / sale)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
