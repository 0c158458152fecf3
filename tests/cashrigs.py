"""One in-process rig per cash protocol: a simulator, and a way to open a fresh host on it
(a controller restart: the device keeps its state, the host starts from nothing)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vendhw.devices.cash import CashDevice
from vendhw.transport import SimTransport


@dataclass
class CashRig:
    protocol: str
    sim: Any
    open_host: Callable[[], CashDevice]
    """A fresh host on the simulator, through ``transport`` (SimTransport unless given)."""
    insert: Callable[[int], None]
    """Insert the rig's test denomination ``n`` (an index the simulator knows)."""
    values: tuple[int, ...]
    """Credit value of each insertable denomination, in minor units."""
    ready: Callable[[], bool] = lambda: True
    """True when the simulator can take another coin or note (the last one is through)."""
    accepted: Callable[[], int] = lambda: 0
    """Minor units the simulated device has taken for good (cash box, tubes, recycler)."""


def make_rig(protocol: str, transport: Callable[[Any], Any] = SimTransport,
             reply_timeout: float = 0.05) -> CashRig:
    if protocol == "ssp":
        from vendhw.devices.ssp import SspDevice
        from vendhw.sim.ssp import SspSimulator

        ssp = SspSimulator(reply_delay=0, speed=1000)
        return CashRig(protocol, ssp,
                       lambda: SspDevice(transport(ssp), reply_timeout=reply_timeout, retries=3,
                                         name="ssp"),
                       lambda n: ssp.insert_note(n + 1), (500, 1000, 2000),
                       lambda: ssp.note is None, lambda: sum(ssp.credited))
    if protocol == "cctalk-coin":
        from vendhw.devices.cctalk import CcTalkBus, CcTalkCoinAcceptor
        from vendhw.sim.cctalk import CcTalkCoinSimulator

        coin = CcTalkCoinSimulator(reply_delay=0)
        return CashRig(protocol, coin,
                       lambda: CcTalkCoinAcceptor(CcTalkBus(transport(coin),
                                                            reply_timeout=reply_timeout),
                                                  name="coin"),
                       lambda n: coin.insert_coin(n + 3), (20, 50, 100),
                       accepted=lambda: sum((20, 50, 100)[c - 3] for c in coin.credited))
    if protocol == "cctalk-bill":
        from vendhw.devices.cctalk import CcTalkBillValidator, CcTalkBus
        from vendhw.sim.cctalk import CcTalkBillSimulator

        bill = CcTalkBillSimulator(reply_delay=0)
        return CashRig(protocol, bill,
                       lambda: CcTalkBillValidator(CcTalkBus(transport(bill),
                                                             reply_timeout=reply_timeout),
                                                   name="bill"),
                       lambda n: bill.insert_bill(n + 1), (500, 1000, 2000),
                       accepted=lambda: sum((500, 1000, 2000)[c - 1] for c in bill.stacked))
    if protocol == "id003":
        from vendhw.devices.id003 import Id003Acceptor
        from vendhw.framing.id003 import Status
        from vendhw.sim.id003 import Id003Simulator

        jcm = Id003Simulator(reply_delay=0, speed=1000)
        return CashRig(protocol, jcm,
                       lambda: Id003Acceptor(transport(jcm), reply_timeout=reply_timeout,
                                             name="id003"),
                       lambda n: jcm.insert_note(n + 1), (500, 1000, 2000),
                       lambda: jcm.state in (Status.IDLING, Status.DISABLED),
                       lambda: sum((500, 1000, 2000)[c - 0x61] for c in jcm.stacked))
    if protocol == "mdb-changer":
        from vendhw.devices.mdb import MdbCoinChanger, MdbLink
        from vendhw.sim.mdb import MdbChangerSimulator

        changer = MdbChangerSimulator()
        taken: list[int] = []

        def insert_coin(n: int) -> None:
            if changer.enabled_mask >> (n + 2) & 1:
                taken.append((20, 50, 100)[n])
            changer.insert_coin(n + 2)

        return CashRig(protocol, changer,
                       lambda: MdbCoinChanger(MdbLink(transport(changer),
                                                      response_timeout=2 * reply_timeout)),
                       insert_coin, (20, 50, 100),
                       # the last coin reported before the next one drops (a coin takes
                       # longer than a poll; identical back-to-back data means a lost ACK)
                       lambda: not changer.events and not changer._unacked,
                       accepted=lambda: sum(taken))
    if protocol == "mdb-bill":
        from vendhw.devices.mdb import MdbBillValidator, MdbLink
        from vendhw.sim.mdb import MdbBillSimulator

        mbill = MdbBillSimulator()
        return CashRig(protocol, mbill,
                       lambda: MdbBillValidator(MdbLink(transport(mbill),
                                                        response_timeout=2 * reply_timeout)),
                       lambda n: mbill.insert_bill(n), (500, 1000, 2000),
                       lambda: mbill.escrow is None,
                       accepted=lambda: sum((500, 1000, 2000)[b] for b in mbill.stacked))
    raise ValueError(protocol)


CASH_PROTOCOLS = ("ssp", "cctalk-coin", "cctalk-bill", "id003", "mdb-changer", "mdb-bill")
