"""MDB interfaces named by identity: ``mdb9://usb-serial://VID:PID?serial=SN`` and
``mdbascii://usb-serial://...`` resolve the adapter at every open, so an MDB interface
unplugged and plugged back at another path is found again, and the devices sharing its bus
share the new port (the simulators sit on ptys behind faked adapters, ``tests/usbbus.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from usbbus import UsbBus

from vendhw.devices.mdb import bus_key, open_bill_validator, open_changer
from vendhw.devices.mdb_cashless import open_cashless
from vendhw.errors import ConfigurationError, PortNotFoundError, VendhwError
from vendhw.sim.mdb import MdbBusSimulator
from vendhw.sim.mdb_ascii import MdbAsciiAdapterSimulator
from vendhw.transport import open_transport
from vendhw.transport.mdb9 import Mdb9BitTransport
from vendhw.transport.mdbascii import MdbAsciiTransport


@pytest.fixture
def bus(monkeypatch: pytest.MonkeyPatch) -> Iterator[UsbBus]:
    usb = UsbBus(monkeypatch)
    yield usb
    usb.close()


def test_mdb9_opens_the_adapter_an_identity_names_and_is_named_by_it(bus: UsbBus) -> None:
    adapter = bus.adapter(MdbBusSimulator(), "MDB1")
    url = f"mdb9://{adapter.url}"
    transport = open_transport(url)
    try:
        assert isinstance(transport, Mdb9BitTransport)
        assert transport.url == transport.identity == url
        assert transport.device == adapter.paths[0]
    finally:
        transport.close()
    adapter.unplug()
    with pytest.raises(PortNotFoundError, match="no USB serial port matches"):
        open_transport(url)
    adapter.plug()
    transport = open_transport(url)
    try:
        assert transport.device == adapter.paths[1] != adapter.paths[0]  # type: ignore[attr-defined]
    finally:
        transport.close()


def test_a_bus_named_by_identity_is_one_bus_and_opens_again_after_an_unplug(
        bus: UsbBus) -> None:
    sim = MdbBusSimulator(coins="4")
    adapter = bus.adapter(sim, "MDB1")
    url = f"mdb9://{adapter.url}"
    assert bus_key(url) == adapter.url  # the bus is the adapter, wherever it is now
    changer, bill, reader = open_changer(url), open_bill_validator(url), open_cashless(url)
    old = changer.link
    assert bill.link is old and reader.link is old and old.users == 3
    try:
        changer.start()
        reader.start()
        adapter.unplug()
        with pytest.raises(VendhwError):
            changer.poll()
        lost = changer.port_lost()
        assert lost is not None and old.transport.lost is lost
        adapter.plug()  # back at another path
        changer.close()  # the changer is reopened first: a new port, not the lost link
        changer = open_changer(url)
        assert changer.link is not old and not changer.link.transport.closed
        assert changer.link.transport.device == adapter.paths[1]  # type: ignore[attr-defined]
        changer.start()
        reader.close()  # the reader, reopened next, joins the new bus
        reader = open_cashless(url)
        assert reader.link is changer.link and changer.link.users == 2
        assert reader.start().level == 3
        assert not old.transport.closed  # the bill validator still holds the lost link
        bill.close()
        assert old.transport.closed
        bill = open_bill_validator(url)
        assert bill.link is changer.link and changer.link.users == 3
    finally:
        changer.close()
        bill.close()
        reader.close()


def test_mdbascii_takes_an_identity_and_finds_the_adapter_at_its_new_path(
        bus: UsbBus) -> None:
    adapter = bus.adapter(MdbAsciiAdapterSimulator(members="mdb-changer,mdb-cashless"),
                          "ASCII1")
    url = f"mdbascii://{adapter.url}"
    changer = open_changer(url)
    reader = open_cashless(url)  # a card reader behind the same ASCII adapter
    assert reader.link is changer.link
    reader.close()
    try:
        transport = changer.link.transport
        assert isinstance(transport, MdbAsciiTransport)
        assert transport.url == transport.identity == url
        assert transport.device == adapter.paths[0]
        changer.start()
        adapter.unplug()
        with pytest.raises(VendhwError):
            changer.poll()
        assert changer.port_lost() is not None
        adapter.plug()
        changer.close()
        changer = open_changer(url)
        assert changer.link.transport.device == adapter.paths[1]  # type: ignore[attr-defined]
        changer.start()
        assert changer.status()["currency"] == "EUR"
    finally:
        changer.close()


def test_mdb_urls_that_can_never_open_are_refused_without_opening() -> None:
    from vendhw.transport import check_url

    for bad, why in (("mdb9://", "needs a port"), ("mdbascii://", "needs a port"),
                     ("mdb9://socket://h:1", "device path or a usb-serial:// identity"),
                     ("mdb9://usb-serial://0403", "VID:PID"),
                     ("mdbascii://usb-serial://0403:6001?serail=1", "unknown key")):
        with pytest.raises(ConfigurationError, match=why):
            check_url(bad)
    check_url("mdb9://usb-serial://0403:6001?serial=GONE")  # missing now: may come later
    with pytest.raises(ConfigurationError, match="MDB needs a 9-bit link"):
        open_changer("usb-serial://0403:6001?serial=X")  # 8-bit serial cannot carry MDB
