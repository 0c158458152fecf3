"""MDB POLL cycle per peripheral on one shared bus (changer, bill validator and card reader on
one pty with the ``mdb-bus`` simulator): ``python tools/bench_mdb_bus.py``."""

from __future__ import annotations

import statistics
import time

from vendhw.devices.mdb import open_bill_validator, open_changer
from vendhw.devices.mdb_cashless import open_cashless
from vendhw.sim import create
from vendhw.transport import SimulatorOnPty

ROUNDS = 500


def main() -> None:
    with SimulatorOnPty(create("mdb-bus")) as served:
        devices = {"changer 0x08": open_changer(served.port),
                   "bill 0x30": open_bill_validator(served.port),
                   "cashless 0x10": open_cashless(served.port)}
        links = {id(d.link) for d in devices.values()}
        assert len(links) == 1, "one bus, one MdbLink"
        for dev in devices.values():
            dev.start()
        for dev in devices.values():
            dev.enable()
        times: dict[str, list[float]] = {name: [] for name in devices}
        rounds: list[float] = []
        for _ in range(ROUNDS):
            started = time.perf_counter()
            for name, dev in devices.items():
                t0 = time.perf_counter()
                dev.poll()
                times[name].append(time.perf_counter() - t0)
            rounds.append(time.perf_counter() - started)
        for name, xs in [*times.items(), ("round of 3 POLLs", rounds)]:
            xs = sorted(xs)
            print(f"{name}: median {statistics.median(xs) * 1e3:.3f} ms, "
                  f"p95 {xs[int(len(xs) * 0.95)] * 1e3:.3f} ms, max {xs[-1] * 1e3:.3f} ms")
        for dev in devices.values():
            dev.close()


if __name__ == "__main__":
    main()
