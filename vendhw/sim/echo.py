"""The echo simulator: sends back every byte it gets (cable and latency checks, benchmarks)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vendhw.sim.base import Reply, Simulator

if TYPE_CHECKING:
    from vendhw.sim import SimulatorSpec


class EchoSimulator(Simulator):
    name = "echo"
    kind = "test"
    protocol = "raw"
    description = "Echoes every byte back at once (loopback plug in software)."

    def receive(self, data: bytes, now: float) -> list[Reply]:
        return [(0.0, data)]


def specs() -> list[SimulatorSpec]:
    from vendhw.sim import SimulatorSpec

    return [SimulatorSpec.of(EchoSimulator)]
