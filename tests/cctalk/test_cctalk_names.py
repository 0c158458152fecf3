"""What a ccTalk device is called: its name keys its checkpoint in the cash journal, so two
devices must never share one.

Before: ``cctalk-<address>@<URL without its query>``, so two adapters of one VID:PID named
by identity (``usb-serial://0403:6001?serial=A`` and ``?serial=B``) were one device to the
journal, each resuming from the other's event counter.
"""

from __future__ import annotations

from vendhw.devices.cctalk import CcTalkBus, CcTalkCoinAcceptor
from vendhw.machine.cash import CashAcceptor, CashJournal
from vendhw.sim.cctalk import CcTalkCoinSimulator
from vendhw.transport import SimTransport


def by_identity(url: str, sim: CcTalkCoinSimulator) -> SimTransport:
    """A port opened through its identity, as ``usb-serial://`` does (the URL is the
    identity, the path it was found at does not matter here)."""
    transport = SimTransport(sim, url=url)
    transport.identity = url
    return transport


def coin_on(transport: SimTransport) -> CcTalkCoinAcceptor:
    return CcTalkCoinAcceptor(CcTalkBus(transport, reply_timeout=0.02))


def test_two_adapters_of_one_vid_pid_named_by_identity_get_two_names() -> None:
    a = coin_on(by_identity("usb-serial://0403:6001?serial=A", CcTalkCoinSimulator()))
    b = coin_on(by_identity("usb-serial://0403:6001?serial=B", CcTalkCoinSimulator()))
    assert a.name == "cctalk-2@usb-serial://0403:6001?serial=A"
    assert b.name == "cctalk-2@usb-serial://0403:6001?serial=B"


def test_options_in_a_url_that_is_no_identity_leave_the_name_as_it_was() -> None:
    sim = CcTalkCoinSimulator()
    assert coin_on(SimTransport(sim, url="sim://cctalk-coin?jam=1")).name == \
        "cctalk-2@sim://cctalk-coin"
    assert coin_on(SimTransport(sim, url="/dev/ttyUSB0")).name == "cctalk-2@/dev/ttyUSB0"
    named = CcTalkCoinAcceptor(CcTalkBus(by_identity("usb-serial://0403:6001?serial=A", sim)),
                               name="coins")
    assert named.name == "coins" and named.former_names == ()


def test_each_adapter_resumes_from_its_own_checkpoint() -> None:
    journal = CashJournal(":memory:")
    sims = {key: CcTalkCoinSimulator(reply_delay=0) for key in "AB"}
    devices = [coin_on(by_identity(f"usb-serial://0403:6001?serial={key}", sim))
               for key, sim in sims.items()]
    acceptor = CashAcceptor(devices, journal)
    for device in devices:
        device.start()
    acceptor.enable()
    sims["A"].insert_coin(4)
    sims["A"].insert_coin(5)
    sims["B"].insert_coin(3)
    acceptor.poll_once()
    saved = {d.name: journal.checkpoint(d.name) for d in devices}
    assert [s and s["ordinal"] for s in saved.values()] == [2, 1]
    again = [coin_on(by_identity(f"usb-serial://0403:6001?serial={key}", sim))
             for key, sim in sims.items()]
    CashAcceptor(again, journal)  # a restart: each resumes from its own
    assert [d.counter.session for d in again] == [d.counter.session for d in devices]
    assert [d.counter.ordinal for d in again] == [2, 1]


def test_a_checkpoint_stored_under_the_former_name_is_resumed_then_moved() -> None:
    """Upgrading: the journal holds the checkpoint under the name without the identity; the
    device resumes from it (a coin read again after the restart keeps its id) and saves
    under its new name from then on."""
    journal = CashJournal(":memory:")
    sim = CcTalkCoinSimulator(reply_delay=0)
    old = coin_on(by_identity("usb-serial://0403:6001?serial=A", sim))
    old.start()
    old.enable()
    journal.save_checkpoint("cctalk-2@usb-serial://0403:6001", old.checkpoint())
    sim.insert_coin(4)
    first = old.poll()
    dev = coin_on(by_identity("usb-serial://0403:6001?serial=A", sim))
    assert dev.former_names == ("cctalk-2@usb-serial://0403:6001",)
    acceptor = CashAcceptor([dev], journal)
    dev.start()
    assert [e.event_id for e in acceptor.poll_once()] == [e.event_id for e in first]
    moved = journal.checkpoint(dev.name)
    assert moved is not None and moved["session"] == old.counter.session
