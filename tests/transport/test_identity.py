"""``usb-serial://VID:PID?serial=SN``: a USB-serial adapter found by identity at every open
(the port list is faked: no hardware here)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from serial.tools.list_ports_common import ListPortInfo

from vendhw.errors import ConfigurationError, PortNotFoundError
from vendhw.transport import identity, open_transport
from vendhw.transport.identity import identity_url, parse_identity, resolve
from vendhw.transport.pty import PtyPair


def port(device: str, vid: int | None = 0x0403, pid: int | None = 0x6001, serial: str = "",
         location: str = "") -> ListPortInfo:
    info = ListPortInfo(device, skip_link_detection=True)
    info.vid, info.pid = vid, pid
    info.serial_number = serial or None
    info.location = location or None
    return info


PORTS = [
    port("/dev/ttyUSB0", serial="A10K1"),
    port("/dev/ttyUSB1", serial="B20K2"),
    port("/dev/ttyUSB2", 0x1A86, 0x7523, location="1-1.2:1.0"),
    port("/dev/ttyUSB3", 0x1A86, 0x7523, location="1-1.3:1.0"),
    port("/dev/ttyUSB4", 0x0403, 0x6010, serial="FT2", location="1-1.4:1.0"),
    port("/dev/ttyUSB5", 0x0403, 0x6010, serial="FT2", location="1-1.4:1.1"),
    port("/dev/ttyS0", None, None),
]


def test_an_identity_resolves_to_the_adapter_s_current_path() -> None:
    assert resolve("usb-serial://0403:6001?serial=B20K2", PORTS) == "/dev/ttyUSB1"
    assert resolve("usb-serial://0403:6001?serial=A10K1", PORTS) == "/dev/ttyUSB0"
    # The same adapter plugged back as another node: found there.
    moved = [port("/dev/ttyUSB7", serial="B20K2"), *PORTS[2:]]
    assert resolve("usb-serial://0403:6001?serial=B20K2", moved) == "/dev/ttyUSB7"
    # No serial number: by the USB port it sits in (every interface of it, or one).
    assert resolve("usb-serial://1a86:7523?location=1-1.3", PORTS) == "/dev/ttyUSB3"
    assert resolve("usb-serial://0403:6010?serial=FT2&location=1-1.4:1.1", PORTS) \
        == "/dev/ttyUSB5"


def test_no_or_several_matches_are_one_clear_line() -> None:
    with pytest.raises(PortNotFoundError, match=r"no USB serial port matches.*unplugged"):
        resolve("usb-serial://0403:6001?serial=GONE", [port("/dev/ttyS0", None, None)])
    with pytest.raises(PortNotFoundError, match=r"other 0403:6001 port.*/dev/ttyUSB0"):
        resolve("usb-serial://0403:6001?serial=GONE", PORTS)
    with pytest.raises(ConfigurationError, match=r"2 ports match \(/dev/ttyUSB0, /dev/ttyUSB1\)"
                       ".*serial="):
        resolve("usb-serial://0403:6001", PORTS)
    for bad, why in (("usb-serial://0403", "VID:PID"), ("usb-serial://xyz:6001", "hex"),
                     ("usb-serial://0403:6001?serail=1", "unknown key 'serail'"),
                     ("usb-serial://0403:6001?serial=", "non-empty"),
                     ("usb-serial://0403:6001/tty?serial=1", "no path")):
        with pytest.raises(ConfigurationError, match=why) as info:
            parse_identity(bad)
        assert "\n" not in str(info.value)


def test_identity_url_names_each_usb_port_uniquely() -> None:
    urls = [identity_url(p, PORTS) for p in PORTS]
    assert urls == [
        "usb-serial://0403:6001?serial=A10K1",
        "usb-serial://0403:6001?serial=B20K2",
        "usb-serial://1A86:7523?location=1-1.2%3A1.0",
        "usb-serial://1A86:7523?location=1-1.3%3A1.0",
        "usb-serial://0403:6010?serial=FT2&location=1-1.4%3A1.0",
        "usb-serial://0403:6010?serial=FT2&location=1-1.4%3A1.1",
        None,
    ]
    for p, url in zip(PORTS, urls, strict=True):
        if url is not None:
            assert resolve(url, PORTS) == p.device  # what ports prints, resolve finds


def test_open_transport_resolves_usb_serial_urls_at_every_open(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with PtyPair() as first, PtyPair() as second:
        listed = [port(first.port, serial="X1")]
        monkeypatch.setattr(identity, "comports", lambda: listed)
        url = "usb-serial://0403:6001?serial=X1"
        transport = open_transport(url, baudrate=9600)
        try:
            assert transport.identity == transport.url == url
            assert transport.device == first.port  # type: ignore[attr-defined]
            transport.write(b"hi")
            assert first.master.read(1.0) == b"hi"
        finally:
            transport.close()
        listed[:] = [port(second.port, serial="X1")]  # unplugged, back at another path
        transport = open_transport(url)
        try:
            assert transport.device == second.port  # type: ignore[attr-defined]
        finally:
            transport.close()
        listed.clear()
        with pytest.raises(PortNotFoundError):
            open_transport(url)


def test_ports_json_gives_each_usb_port_its_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    from vendhw.cli.ports import ports

    monkeypatch.setattr(identity, "comports", lambda: list(PORTS[:3]))
    done = CliRunner().invoke(ports, ["--json"])
    assert done.exit_code == 0, done.output
    rows = {r["device"]: r for r in map(json.loads, done.output.splitlines())}
    assert rows["/dev/ttyUSB1"]["identity"] == "usb-serial://0403:6001?serial=B20K2"
    assert rows["/dev/ttyUSB2"]["identity"] == "usb-serial://1A86:7523?location=1-1.2%3A1.0"
    text = CliRunner().invoke(ports, [])
    assert "identity: usb-serial://0403:6001?serial=A10K1" in text.output


def test_a_transport_remembers_that_its_device_went_away() -> None:
    from vendhw.errors import DisconnectedError
    from vendhw.transport.serial import SerialTransport

    pair = PtyPair()
    transport = SerialTransport(pair.port)
    try:
        assert transport.lost is None
        assert transport.read(0.01) == b""  # silence is not a loss
        assert transport.lost is None
        pair.close()  # the adapter is pulled
        with pytest.raises(DisconnectedError) as info:
            transport.read(1.0)
        assert transport.lost is info.value
    finally:
        transport.close()


def test_a_url_that_can_never_open_is_refused_before_any_open() -> None:
    from vendhw.transport import check_url

    for bad, why in (("", "empty port"), ("usb-seral://0403:6001?serial=A",
                                         "unknown port scheme 'usb-seral'"),
                     ("usb-serial://0403:6001?serail=A", "unknown key 'serail'"),
                     ("ttyUSB0://x", "unknown port scheme")):
        with pytest.raises(ConfigurationError, match=why) as info:
            check_url(bad)
        assert "\n" not in str(info.value)
    # Missing now is not wrong: it may be plugged in (or enumerate) later.
    for fine in ("/dev/ttyUSB9", "COM7", "usb-serial://0403:6001?serial=NOT-HERE", "loop://",
                 "socket://127.0.0.1:1", "sim://easivend-column"):
        check_url(fine)
    # Opening one is the same configuration error, not "cannot open" (a port to wait for).
    with pytest.raises(ConfigurationError, match="unknown port scheme 'usb-seral'"):
        open_transport("usb-seral://0403:6001?serial=A")
