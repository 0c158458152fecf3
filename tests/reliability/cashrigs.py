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
    insert: Callable[[int], None]
    """Insert the rig's test denomination ``n`` (an index the simulator knows)."""
    values: tuple[int, ...]
    """Credit value of each insertable denomination, in minor units."""
    ready: Callable[[], bool] = lambda: True
    """True when the simulator can take another coin or note (the last one is through)."""


def make_rig(protocol: str) -> CashRig:
    if protocol == "ssp":
        from vendhw.devices.ssp import SspDevice
        from vendhw.sim.ssp import SspSimulator

        ssp = SspSimulator(reply_delay=0, speed=1000)
        return CashRig(protocol, ssp,
                       lambda: SspDevice(SimTransport(ssp), reply_timeout=0.05, retries=3,
                                         name="ssp"),
                       lambda n: ssp.insert_note(n + 1), (500, 1000, 2000),
                       lambda: ssp.note is None)
    if protocol == "cctalk-coin":
        from vendhw.devices.cctalk import CcTalkBus, CcTalkCoinAcceptor
        from vendhw.sim.cctalk import CcTalkCoinSimulator

        coin = CcTalkCoinSimulator(reply_delay=0)
        return CashRig(protocol, coin,
                       lambda: CcTalkCoinAcceptor(CcTalkBus(SimTransport(coin),
                                                            reply_timeout=0.05),
                                                  name="coin"),
                       lambda n: coin.insert_coin(n + 3), (20, 50, 100))
    if protocol == "cctalk-bill":
        from vendhw.devices.cctalk import CcTalkBillValidator, CcTalkBus
        from vendhw.sim.cctalk import CcTalkBillSimulator

        bill = CcTalkBillSimulator(reply_delay=0)
        return CashRig(protocol, bill,
                       lambda: CcTalkBillValidator(CcTalkBus(SimTransport(bill),
                                                             reply_timeout=0.05),
                                                   name="bill"),
                       lambda n: bill.insert_bill(n + 1), (500, 1000, 2000))
    if protocol == "id003":
        from vendhw.devices.id003 import Id003Acceptor
        from vendhw.sim.id003 import DISABLED, IDLING, Id003Simulator

        jcm = Id003Simulator(reply_delay=0, speed=1000)
        return CashRig(protocol, jcm,
                       lambda: Id003Acceptor(SimTransport(jcm), reply_timeout=0.05,
                                             name="id003"),
                       lambda n: jcm.insert_note(n + 1), (500, 1000, 2000),
                       lambda: jcm.state in (IDLING, DISABLED))
    if protocol == "mdb-changer":
        from vendhw.devices.mdb import MdbCoinChanger, MdbLink
        from vendhw.sim.mdb import MdbChangerSimulator

        changer = MdbChangerSimulator()
        return CashRig(protocol, changer,
                       lambda: MdbCoinChanger(MdbLink(SimTransport(changer),
                                                      response_timeout=0.1)),
                       lambda n: changer.insert_coin(n + 2), (20, 50, 100))
    if protocol == "mdb-bill":
        from vendhw.devices.mdb import MdbBillValidator, MdbLink
        from vendhw.sim.mdb import MdbBillSimulator

        mbill = MdbBillSimulator()
        return CashRig(protocol, mbill,
                       lambda: MdbBillValidator(MdbLink(SimTransport(mbill),
                                                        response_timeout=0.1)),
                       lambda n: mbill.insert_bill(n), (500, 1000, 2000))
    raise ValueError(protocol)


CASH_PROTOCOLS = ("ssp", "cctalk-coin", "cctalk-bill", "id003", "mdb-changer", "mdb-bill")
