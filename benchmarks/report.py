"""Measure vendhw's key figures in one run and write them as JSON.

    python benchmarks/report.py [--quick] --json PATH

Every figure is measured in this run, and every target is a ratio or a figure from this same
run, so a noisy shared machine shifts both sides of a comparison alike. Metric names are
stable (scripts read them): ``decode_us.<protocol>``, ``encode_us.<protocol>``,
``stream_mb_per_s`` (the slowest protocol; + ``stream_mb_per_s.<protocol>``,
``stream_recall.<protocol>``, ``stream_precision.<protocol>``), ``pty_roundtrip_ratio``,
``loop_roundtrip_ratio``, ``sale_ms``, ``deframer_peak_kib_*``. Peer comparisons sit beside
them (plain and compiled construct, a pure-Python CRC). A missed target is reported, never an
error: the exit status is non-zero only when a measurement crashes.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import serial
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import vendhw  # noqa: E402
from vendhw.devices.link import FrameLink  # noqa: E402
from vendhw.framing import Frame, Framer, framer_names, get_framer  # noqa: E402
from vendhw.framing.checksums import CRC16_SSP  # noqa: E402
from vendhw.resources import protocol_vectors  # noqa: E402
from vendhw.transport import SimTransport, open_transport  # noqa: E402

TARGETS: dict[str, tuple[str, float]] = {
    "decode_us": ("<=", 5.0),
    "stream_mb_per_s": (">=", 10.0),
    "pty_roundtrip_ratio": ("<=", 1.2),
    "deframer_memory_ratio": ("<=", 1.5),
    "backend_orders_per_s": (">=", 300.0),
    "backend_p99_ms": ("<=", 100.0),
    "backend_machines_connected": (">=", 10000.0),
}
BAUD: dict[str, int] = {"ssp": 9600, "cctalk": 9600, "id003": 9600, "mdb": 9600,
                        "fafb": 57600, "board101": 9600, "easivend": 9600}
BITS_PER_BYTE: dict[str, int] = {"ssp": 11, "id003": 11, "mdb": 11}  # 8N2, 8E1, 9-bit


def per_call_us(fn: Callable[[], object], rounds: int, number: int) -> float:
    """Median over ``rounds`` of the mean time per call of ``number`` calls, in µs."""
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - start) / number * 1e6)
    return statistics.median(samples)


def typical_frames(name: str) -> list[tuple[Framer, bytes, Any]]:
    """(framer, raw frame, direction) for every valid plain vector of a protocol."""
    try:
        vectors = protocol_vectors(name)
    except vendhw.VendhwError:
        return []
    out = []
    for v in vectors:
        if not v.get("expect_valid", True) or v.get("form") or v.get("wire") not in (None,
                                                                                      "plain"):
            continue
        options = {"checksum": v["checksum"]} if v.get("checksum") else {}
        out.append((get_framer(name, **options), bytes.fromhex(v["hex"]), v["direction"]))
    return out


def rebuild_fields(frame: Frame) -> dict[str, Any] | None:
    """Fields that rebuild a parsed frame, for the protocols whose framers name them alike."""
    f = frame.fields
    name = frame.protocol
    if name == "ssp":
        if f["command"] == "ENCRYPTED":
            return {"data": b"\x7e" + f["encrypted"], "seq": f["seq"], "address": f["address"]}
        rest = f["params"] if frame.direction == "host" else f["data"]
        return {"data": bytes((f["code"],)) + rest, "seq": f["seq"], "address": f["address"]}
    if name == "cctalk":
        out = {"dest": f["dest"], "header": f["header"], "data": f["data"]}
        if "src" in f:
            out["src"] = f["src"]
        return out
    if name == "id003":
        data = f["data"]
        if "extension" in f:
            data = b"\x20" + bytes((f["extension"],)) + data
        return {"code": f["code"], "data": data}
    if name == "mdb":
        if f["command"] in ("ACK", "NAK", "RET"):
            return {"control": f["command"]}
        if frame.direction == "device":
            return {"data": f["data"]}
        return {"head": f["code"], "data": f["data"]}
    return None


def measure_codecs(quick: bool, metrics: dict[str, Any], notes: dict[str, str]) -> None:
    rounds, number = (3, 300) if quick else (7, 3000)
    for name in framer_names():
        frames = typical_frames(name)
        if not frames:
            notes[f"decode_us.{name}"] = "no vectors for this protocol yet"
            continue
        sample = frames[:: max(1, len(frames) // 20)]
        decode = [per_call_us(lambda f=f, r=r, d=d: f.parse(r, d), rounds, number)
                  for f, r, d in sample]
        metrics[f"decode_us.{name}"] = round(statistics.median(decode), 2)
        encodes = []
        for framer, raw, direction in sample:
            fields = rebuild_fields(framer.parse(raw, direction))
            if fields is None:
                fields = dict(framer.parse(raw, direction).fields)
            try:
                if framer.build(direction=direction, **fields) != raw:
                    continue
            except (vendhw.VendhwError, KeyError, TypeError, ValueError):
                continue
            encodes.append(per_call_us(
                lambda f=framer, d=direction, kw=fields: f.build(direction=d, **kw),
                rounds, number))
        if encodes:
            metrics[f"encode_us.{name}"] = round(statistics.median(encodes), 2)
        else:
            notes[f"encode_us.{name}"] = "framer fields do not rebuild generically"
        # Wire time of a typical frame for scale.
        size = statistics.median(len(r) for _, r, _ in frames)
        baud = BAUD.get(name, 9600)
        metrics[f"wire_us.{name}"] = round(size * BITS_PER_BYTE.get(name, 10) / baud * 1e6)


def stream_frames(name: str) -> list[tuple[Framer, bytes, Any]]:
    """Frames as they appear on a line: MDB in its 9-bit wire form (the plain form has no
    delimiters), every other protocol as its vectors print it."""
    frames = typical_frames(name)
    if name != "mdb":
        return frames
    wire = get_framer("mdb", wire="9bit")
    out = []
    for framer, raw, direction in frames:
        fields = rebuild_fields(framer.parse(raw, direction))
        if fields is not None and "control" not in fields:
            out.append((wire, wire.build(direction=direction, **fields), direction))
    return out


def build_stream(name: str, target_bytes: int,
                 seed: int = 7) -> tuple[bytes, list[bytes], Any]:
    """Valid frames of a protocol interleaved with as many random garbage bytes."""
    frames = stream_frames(name)
    rng = random.Random(seed)
    direction = frames[0][2] if frames else None
    variant = getattr(frames[0][0], "checksum", None)
    same_dir = [r for f, r, d in frames
                if d == direction and getattr(f, "checksum", None) == variant]
    out = bytearray()
    inserted: list[bytes] = []
    while len(out) < target_bytes:
        raw = same_dir[rng.randrange(len(same_dir))]
        out += rng.randbytes(len(raw))
        out += raw
        inserted.append(raw)
    return bytes(out), inserted, direction


def recall_precision(inserted: list[bytes], found: list[bytes]) -> tuple[float, float]:
    """Recall: share of the inserted frames the deframer found; precision: share of what it
    found that was an inserted frame (the rest is garbage that happened to look valid)."""
    from collections import Counter

    want, got = Counter(inserted), Counter(found)
    hits = sum(min(n, got[raw]) for raw, n in want.items())
    recall = hits / len(inserted) if inserted else 1.0
    precision = hits / len(found) if found else 1.0
    return recall, precision


def _stream_speed(framer: Framer, direction: Any, stream: bytes, compiled: bool,
                  rounds: int = 3) -> tuple[float, list[bytes]]:
    """MB/s (median of ``rounds``, wall clock) of one deframer over the stream in 4 KiB
    chunks, as from a port, and the frames it found (their raw bytes: a reader touches
    every frame)."""
    from vendhw.framing.base import Deframer

    chunk = 4096
    samples = []
    found: list[bytes] = []
    for _ in range(rounds):
        deframer = Deframer(framer, direction=direction, compiled=compiled)
        found = []
        start = time.perf_counter()
        for i in range(0, len(stream), chunk):
            found += [f.raw for f in deframer.feed(stream[i:i + chunk])
                      if isinstance(f, Frame)]
        found += [f.raw for f in deframer.flush() if isinstance(f, Frame)]
        samples.append(len(stream) / (time.perf_counter() - start) / 1e6)
    return statistics.median(samples), found


def measure_streams(quick: bool, metrics: dict[str, Any], notes: dict[str, str]) -> None:
    from vendhw.framing.base import COMPILED_SCAN

    size = 100_000 if quick else 2_000_000
    speeds: dict[str, float] = {}
    for name in framer_names():
        if not typical_frames(name):
            continue
        stream, inserted, direction = build_stream(name, size)
        framer = stream_frames(name)[0][0]
        speeds[name], found = _stream_speed(framer, direction, stream, compiled=True)
        metrics[f"stream_mb_per_s.{name}"] = round(speeds[name], 2)
        metrics[f"stream_frames_found.{name}"] = f"{len(found)}/{len(inserted)}"
        recall, precision = recall_precision(inserted, found)
        metrics[f"stream_recall.{name}"] = round(recall, 4)
        metrics[f"stream_precision.{name}"] = round(precision, 4)
        # The fallback a pure-Python install runs (no C compiler at install time).
        python_speed, _ = _stream_speed(framer, direction, stream[:size // 4],
                                                   compiled=False, rounds=1)
        metrics[f"stream_mb_per_s_python.{name}"] = round(python_speed, 2)
    metrics["stream_compiled_scan"] = COMPILED_SCAN
    if speeds:
        worst = min(speeds, key=lambda n: speeds[n])
        metrics["stream_mb_per_s"] = round(speeds[worst], 2)
        scan = ("the compiled scan (vendhw/framing/_scan.c)" if COMPILED_SCAN else
                "the pure-Python scan (the compiled one is not built here)")
        notes["stream_mb_per_s"] = (f"headline: the slowest protocol ({worst}), 50 % random "
                                    f"garbage between frames, {scan}; per-protocol figures, "
                                    "recall and precision beside it; "
                                    "stream_mb_per_s_python.*: the pure-Python fallback")


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


def _serve(name: str, *options: str) -> tuple[subprocess.Popen[str], str]:
    """Start ``vendhw sim NAME`` in its own process (as in production) and return its port."""
    proc = subprocess.Popen([sys.executable, "-m", "vendhw", "sim", name, "--json", *options],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout is not None
    return proc, json.loads(proc.stdout.readline())["port"]


def measure_roundtrips(quick: bool, metrics: dict[str, Any], notes: dict[str, str]) -> None:
    """vendhw FrameLink + framer + simulator against raw pyserial + an echo, interleaved."""
    from vendhw.framing.mdb import MdbFramer
    from vendhw.sim.mdb import MdbChangerSimulator

    framer = MdbFramer(wire="9bit")
    request = framer.build(direction="host", address=0x08, command=3)  # changer POLL, unACKed:
    rounds = 300 if quick else 3000  # the changer repeats "was reset" at every POLL

    def vendhw_rt(link: FrameLink) -> float:
        start = time.perf_counter()
        link.request(request, 1.0)
        return time.perf_counter() - start

    def raw_rt(port: serial.Serial) -> float:
        start = time.perf_counter()
        port.write(request)
        got = port.read(len(request))
        assert got == request
        return time.perf_counter() - start

    sim_proc, sim_port = _serve("mdb-changer")
    echo_proc, echo_port = _serve("echo")
    try:
        link = FrameLink(open_transport(sim_port, baudrate=9600), framer, gap=None)
        raw = serial.Serial(echo_port, 9600, timeout=1.0)
        a: list[float] = []
        b: list[float] = []
        for _ in range(rounds):  # interleaved so machine noise hits both sides
            a.append(vendhw_rt(link))
            b.append(raw_rt(raw))
        # The host stack alone: the same FrameLink + framer, against the echo (its reply is
        # the request itself, a host-direction block), so the simulator's work drops out.
        echo_link = FrameLink(open_transport(echo_port, baudrate=9600), framer,
                              incoming="host", gap=None)
        raw.close()
        raw = serial.Serial(echo_port, 9600, timeout=1.0)
        c: list[float] = []
        d: list[float] = []
        for _ in range(rounds):
            c.append(vendhw_rt(echo_link))
            d.append(raw_rt(raw))
        echo_link.close()
        link.close()
        raw.close()
    finally:
        for proc in (sim_proc, echo_proc):
            proc.terminate()
            proc.wait(timeout=10)
    metrics["pty_roundtrip_ms.vendhw"] = round(_median_ms(a), 4)
    metrics["pty_roundtrip_ms.raw_pyserial"] = round(_median_ms(b), 4)
    metrics["pty_roundtrip_ratio"] = round(statistics.median(a) / statistics.median(b), 3)
    metrics["pty_roundtrip_ratio.host_stack_only"] = round(
        statistics.median(c) / statistics.median(d), 3)
    notes["pty_roundtrip_ratio"] = (
        "MDB changer POLL through FrameLink + 9-bit framer + SerialTransport against "
        "`vendhw sim mdb-changer` vs pyserial write+read of the same bytes against "
        "`vendhw sim echo`; each simulator in its own process on a pty pair")

    sim2 = MdbChangerSimulator()
    link2 = FrameLink(SimTransport(sim2), framer, gap=None)
    loop = serial.serial_for_url("loop://", timeout=1.0)
    a, b = [], []
    for _ in range(rounds * 3):
        a.append(vendhw_rt(link2))
        start = time.perf_counter()
        loop.write(request)
        loop.read(len(request))
        b.append(time.perf_counter() - start)
    metrics["loop_roundtrip_ms.vendhw"] = round(_median_ms(a), 4)
    metrics["loop_roundtrip_ms.raw_pyserial"] = round(_median_ms(b), 4)
    metrics["loop_roundtrip_ratio"] = round(statistics.median(a) / statistics.median(b), 3)
    notes["loop_roundtrip_ratio"] = ("MDB POLL over sim:// (simulator in process, its work "
                                     "included) vs pyserial loop:// write+read of the same bytes")


def measure_memory(quick: bool, metrics: dict[str, Any]) -> None:
    """Peak traced memory of the SSP deframer at two input sizes: flat means bounded."""
    stream, _, direction = build_stream("ssp", 500_000)
    framer = get_framer("ssp")
    sizes = (0.5, 2) if quick else (10, 100)
    peaks = []
    for megabytes in sizes:  # input streamed in 64 KiB chunks, as from a port
        gc.collect()
        tracemalloc.start()
        deframer = framer.deframer(direction)
        total = 0
        chunk = 65536
        while total < megabytes * 1_000_000:
            for i in range(0, len(stream), chunk):
                deframer.feed(stream[i:i + chunk])
                total += chunk
                if total >= megabytes * 1_000_000:
                    break
        del deframer
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        peaks.append(peak)
        metrics[f"deframer_peak_kib_{megabytes:g}mb"] = round(peak / 1024, 1)
    metrics["deframer_memory_ratio"] = round(peaks[1] / peaks[0], 3)


def measure_peers(quick: bool, metrics: dict[str, Any]) -> None:
    """vendhw's fast path beside plain and compiled construct; crcmod beside pure Python."""
    import construct as cs

    rounds, number = (3, 300) if quick else (7, 3000)
    decl = cs.Struct("dest" / cs.Int8ub, "length" / cs.Int8ub, "src" / cs.Int8ub,
                     "header" / cs.Int8ub, "data" / cs.GreedyBytes)
    compiled = decl.compile()
    raw = bytes.fromhex("02 00 01 E5")
    framer = get_framer("cctalk")
    frame = bytes.fromhex("02 00 01 E5 18")
    metrics["peer.construct_plain_parse_us"] = round(
        per_call_us(lambda: decl.parse(raw), rounds, number), 2)
    metrics["peer.construct_compiled_parse_us"] = round(
        per_call_us(lambda: compiled.parse(raw), rounds, number), 2)
    metrics["peer.vendhw_cctalk_parse_us"] = round(
        per_call_us(lambda: framer.parse(frame, "host"), rounds, number), 2)

    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)

    def pure_crc(data: bytes) -> int:
        crc = 0xFFFF
        for b in data:
            crc = ((crc << 8) & 0xFFFF) ^ table[((crc >> 8) ^ b) & 0xFF]
        return crc

    payload = bytes(range(64))
    assert pure_crc(payload) == CRC16_SSP(payload)
    metrics["peer.crc16_pure_python_us_64b"] = round(
        per_call_us(lambda: pure_crc(payload), rounds, number), 2)
    metrics["peer.crc16_crcmod_us_64b"] = round(
        per_call_us(lambda: CRC16_SSP(payload), rounds, number), 2)


def measure_sale(quick: bool, metrics: dict[str, Any], notes: dict[str, str]) -> None:
    """A whole simulated sale: backend and board simulator processes, the machine side in
    process; from the customer's choice to delivered, the board's own vend time excluded."""
    from vendhw.agent.demo import run_demo

    runs = 1 if quick else 3
    sales = []
    for _ in range(runs):
        result = run_demo(auto_pay=True)
        if not result.ok or result.sale_ms is None:
            notes["sale_ms"] = f"the demo sale ended {result.state}, not delivered"
            metrics["sale_ms"] = None
            return
        sales.append(result.sale_ms)
    metrics["sale_ms"] = round(statistics.median(sales), 1)
    notes["sale_ms"] = ("`vendhw demo --auto-pay` in process (median of the runs): choice -> "
                        "QR -> sandbox payment -> ship instruction -> vend -> report -> "
                        "delivered, minus the board's vend duration")


def measure_backend(quick: bool, metrics: dict[str, Any], notes: dict[str, str]) -> None:
    """Whole sales per second through one ``vendhw backend serve`` on SQLite (tools/
    bench_backend.py), and the p99 of the machine's own requests (provider excluded)."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import bench_backend
    finally:
        sys.path.pop(0)
    orders, machines = (40, 4) if quick else (300, 8)
    result = bench_backend.run(orders=orders, machines=machines, max_seconds=60.0)
    if result["failures"] or not result["orders_delivered"]:
        notes["backend_orders_per_s"] = f"bench failed: {result['first_failures']}"
        metrics["backend_orders_per_s"] = metrics["backend_p99_ms"] = None
        return
    metrics["backend_orders_per_s"] = result["orders_per_second"]
    metrics["backend_p99_ms"] = result["request_ms_p99"]
    notes["backend_orders_per_s"] = (
        f"tools/bench_backend.py --orders {orders} --machines {machines}: one process, SQLite "
        "(WAL, synchronous=FULL), sandbox provider, 6 HTTP requests per sale, clients on the "
        "same machine")
    notes["backend_p99_ms"] = ("p99 of the machine's create-order, ack and report requests "
                               "in that run (the provider's pay and push excluded)")


def measure_connected(quick: bool, metrics: dict[str, Any], notes: dict[str, str]) -> None:
    """Idle machines one ``vendhw backend serve`` (SQLite) holds connected by long-poll, and
    its memory per machine (tools/bench_longpoll.py). Quick mode opens a few hundred only,
    so its figure is what was tried, not the ceiling; full mode tries the 10,000 target."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import bench_longpoll
    finally:
        sys.path.pop(0)
    machines = 300 if quick else 10_000
    result = bench_longpoll.run(machines=machines, max_seconds=20.0 if quick else 300.0,
                                stop_timeout=2.0)
    metrics["backend_machines_connected"] = result["connected"]
    metrics["backend_kib_per_machine"] = result["kib_per_connection"]
    notes["backend_machines_connected"] = (
        f"tools/bench_longpoll.py --machines {machines}: idle signed long-polls "
        f"(wait=60) one process holds at once, SQLite, client on the same machine; "
        f"connected in {result['seconds_to_connect']} s" + (
            " (quick mode: only a few hundred tried)" if quick else ""))
    notes["backend_kib_per_machine"] = (
        "server resident memory at the peak minus after loading the catalogue, per "
        "connected machine (Linux /proc)")


def status(name: str, value: Any) -> str:
    key = "decode_us" if name.startswith("decode_us.") else name
    if key not in TARGETS or value is None:
        return ""
    op, target = TARGETS[key]
    ok = value <= target if op == "<=" else value >= target
    return f"{'met' if ok else 'MISSED'} ({op} {target:g})"


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def main() -> int:
    parser = argparse.ArgumentParser(description="vendhw key measurements")
    parser.add_argument("--quick", action="store_true", help="finish in under 30 s")
    parser.add_argument("--json", dest="json_path", required=True, help="write results here")
    args = parser.parse_args()
    started = time.perf_counter()
    metrics: dict[str, Any] = {}
    notes: dict[str, str] = {}
    measure_codecs(args.quick, metrics, notes)
    measure_streams(args.quick, metrics, notes)
    measure_roundtrips(args.quick, metrics, notes)
    measure_memory(args.quick, metrics)
    measure_peers(args.quick, metrics)
    measure_sale(args.quick, metrics, notes)
    measure_backend(args.quick, metrics, notes)
    measure_connected(args.quick, metrics, notes)
    env = {
        "python": platform.python_version(), "implementation": platform.python_implementation(),
        "platform": platform.platform(), "cpus": os.cpu_count(), "vendhw": vendhw.__version__,
        "commit": git_commit(), "quick": args.quick,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.perf_counter() - started, 1),
    }
    Path(args.json_path).write_text(
        json.dumps({"metrics": metrics, "env": env, "notes": notes}, indent=1) + "\n",
        encoding="utf-8")
    table = Table("metric", "value", "target")
    for name, value in metrics.items():
        table.add_row(name, "-" if value is None else str(value), status(name, value))
    Console().print(table)
    Console().print(f"{env['seconds']} s, written to {args.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
