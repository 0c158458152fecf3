"""An ASCII MDB master adapter (Qibixx MDB-USB / Pi HAT "Generic Master" command set) with
MDB peripherals behind it: ``vendhw sim mdb-ascii`` serves it on a pty for
``mdbascii:///dev/pts/N``.

Lines in: ``M,1``/``M,0`` (answer ``m,ACK``), ``R,xx[,yyyy]`` (answer ``p,ACK``,
``p,NACK`` when nobody answers, or ``p,YYYY`` with the reply data, which the adapter ACKs on
the bus itself), ``R,RESET``. Source: https://docs.qibixx.com/mdb-products/api-generic-master.
Behind it sits :class:`vendhw.sim.mdb.MdbBusSimulator` (a changer and a bill validator by
default), fed the in-band 9-bit blocks a real adapter would put on the wire.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vendhw.framing.mdb import ACK, MdbFramer, decode_9bit
from vendhw.sim.base import Reply, Simulator
from vendhw.sim.mdb import MdbBusSimulator

if TYPE_CHECKING:
    from vendhw.sim import SimulatorSpec


class MdbAsciiAdapterSimulator(Simulator):
    name = "mdb-ascii"
    kind = "cash"
    protocol = "mdb"
    baudrate = 115200
    description = ("ASCII MDB master adapter (Qibixx-style M,1 / R,xx,yyyy -> p,...) with a "
                   "changer (0x08) and a bill validator (0x30) behind it; open it as "
                   "mdbascii://PORT; options coins=, notes=, members=")

    def __init__(self, *, members: str = "mdb-changer,mdb-bill", coins: str = "",
                 notes: str = "", **options: Any) -> None:
        super().__init__(**options)
        self.bus = MdbBusSimulator(members=members, coins=coins, notes=notes)
        self.framer = MdbFramer(wire="9bit")
        self._buf = b""
        self.master = False
        self.auto_acks = 0
        """Reply data the adapter ACKed on the bus by itself."""

    def member(self, name: str) -> Simulator:
        return self.bus.member(name)

    def receive(self, data: bytes, now: float) -> list[Reply]:
        self._buf += data
        out: list[Reply] = []
        while b"\n" in self._buf:
            raw, self._buf = self._buf.split(b"\n", 1)
            answer = self._line(raw.decode("ascii", "replace").strip(), now)
            if answer:
                out.append((0.0, answer.encode("ascii") + b"\r\n"))
        return self.line.apply(out)

    def _line(self, line: str, now: float) -> str:
        if not line:
            return ""
        fields = line.split(",")
        if fields[0] == "M":
            if len(fields) == 2 and fields[1] in ("0", "1"):
                self.master = fields[1] == "1"
                return "m,ACK"
            return "m,NACK"
        if fields[0] != "R" or len(fields) < 2:
            return ""
        if fields[1] == "RESET":
            for sim in self.bus.members:
                power_up = getattr(sim, "power_up", None)
                if power_up is not None:
                    power_up()
            return "p,ACK"
        if not self.master:
            return ""
        try:
            code = int(fields[1], 16)
            payload = bytes.fromhex("".join(fields[2:]))
        except ValueError:
            return ""
        block = self.framer.build(direction="host", address=code & 0xF8,
                                  command=code & 0x07, data=payload)
        reply = b"".join(chunk for _, chunk in self.bus.receive(block, now))
        words, _ = decode_9bit(reply)
        if not words:
            return "p,NACK"
        if len(words) == 1 and words[0] == (ACK, True):
            return "p,ACK"
        data = bytes(value for value, _ in words[:-1])
        # The adapter checks the checksum and ACKs the data on the bus by itself.
        self.bus.receive(self.framer.build(direction="host", control="ACK"), now)
        self.auto_acks += 1
        return "p," + data.hex().upper()

    def tick(self, now: float) -> list[Reply]:
        return []  # peripheral output only ever answers a VMC block, relayed in receive

    def summary(self) -> dict[str, Any]:
        return {"auto_acks": self.auto_acks, **self.bus.summary()}


def specs() -> list[SimulatorSpec]:
    from vendhw.sim import SimulatorSpec

    return [SimulatorSpec.of(MdbAsciiAdapterSimulator)]
