"""One run of a machine agent for the power-cut test (a child process: VENDHW_CRASH_AT kills
it at a named step, like a power cut). Usage::

    python powercut_agent.py MODE URL SECRET BOARD_PORT CASH_PORT DATA_DIR FIRST

MODE is qr, code, cash, payout or card (the MDB cashless reader simulator in this process:
its session dies with the power, as a reader resets when the controller's power comes back);
FIRST is 1 for the run that starts the sale (0: a restart, which only finishes what the
journals hold and ships redelivered instructions).
"""

from __future__ import annotations

import sys
from pathlib import Path

from vendhw.agent.card import CardConfig, CardSales, open_reader
from vendhw.agent.cash import CashSales
from vendhw.agent.shipper import Shipper
from vendhw.client import BackendClient
from vendhw.devices.ssp import SspDevice
from vendhw.machine import Machine
from vendhw.machine.cash import CashAcceptor, CashJournal
from vendhw.transport import open_transport

MACHINE = "m1"
BOARD = "easivend-column"


def main() -> int:
    mode, url, secret, board_port, cash_port, data, first = sys.argv[1:8]
    folder = Path(data)
    client = BackendClient(url, MACHINE, secret, outbox=folder / "outbox.db", retries=1,
                           backoff=0.05)
    machine = Machine(BOARD, board_port, journal=folder / "vends.db")
    shipper = Shipper(client, machine, folder / "ships.db")
    device = SspDevice(open_transport(cash_port, baudrate=9600), reply_timeout=0.3, name="ssp")
    acceptor = CashAcceptor([device], CashJournal(folder / "cash.db"))
    device.start()
    sales = CashSales(acceptor, machine, client)
    shipper.recover()  # what the agent does first: settle, then sell
    sales.recover()
    card = None
    if mode == "card":
        card = CardSales(open_reader(CardConfig("sim://mdb-cashless")), machine, client,
                         journal=folder / "cards.db")
        card.recover()
        if first == "1":
            card.start()
            card.sell("1", 500, session_timeout=10.0)
    if mode in ("qr", "code"):
        for instruction in client.next_instructions(wait=1.0):
            shipper.process(instruction)
    elif mode == "cash" and first == "1":
        sales.sell("1", 500)
    elif mode == "payout" and first == "1":
        acceptor.give_change(device, "powercut")
    client.flush()
    if card is not None:
        card.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
