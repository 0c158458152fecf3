"""Poll round trip of a cash host against its simulator on a pty (maintainer tool).

Usage: python tools/poll_rtt.py [cctalk-coin|mdb-changer|ssp|id003] [--polls 200]

Serves the simulator on a real pty from a thread, opens the host on the device path, starts
it, and times POLL cycles (request, reply, acknowledgement) with the monotonic clock.
"""

from __future__ import annotations

import argparse
import statistics
import time

from vendhw.sim import create
from vendhw.transport import SimulatorOnPty, open_transport


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("device", choices=["cctalk-coin", "mdb-changer", "ssp", "id003"])
    parser.add_argument("--polls", type=int, default=200)
    args = parser.parse_args()
    with SimulatorOnPty(create(args.device)) as served:
        if args.device in ("cctalk-coin", "ssp", "id003"):
            from vendhw.cli.cash import open_cash_device

            device = open_cash_device(args.device, served.port)
        else:
            from vendhw.devices.mdb import MdbCoinChanger, MdbLink

            device = MdbCoinChanger(MdbLink(open_transport(served.port, baudrate=9600),
                                            response_timeout=0.5))
        device.start()
        device.enable()
        samples = []
        for _ in range(args.polls):
            start = time.perf_counter()
            device.poll()
            samples.append((time.perf_counter() - start) * 1000)
        device.close()
    samples.sort()
    median = statistics.median(samples)
    p95 = samples[int(len(samples) * 0.95)]
    print(f"{args.device}: {args.polls} polls on a pty, median {median:.3f} ms, "
          f"p95 {p95:.3f} ms")


if __name__ == "__main__":
    main()
