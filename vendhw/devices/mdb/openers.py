"""Opening MDB hosts by URL: which transport and reply window a URL gets, and the one
shared :class:`~vendhw.devices.mdb.link.MdbLink` per physical bus."""

from __future__ import annotations

import os
import stat
from typing import Any

from vendhw.devices.mdb.bill import MdbBillValidator
from vendhw.devices.mdb.changer import MdbCoinChanger
from vendhw.devices.mdb.link import _BUSES, _BUSES_LOCK, MdbLink
from vendhw.errors import ConfigurationError
from vendhw.framing.mdb import RESPONSE_TIMEOUT
from vendhw.options import option_flag
from vendhw.transport import open_transport
from vendhw.transport.identity import SCHEME as IDENTITY
from vendhw.transport.identity import resolve

SIM_RESPONSE_TIMEOUT = 0.1
"""Reply window of an in-process simulator or a replay (no UART, no 5 ms)."""
PTY_RESPONSE_TIMEOUT = 0.5
"""Reply window on a pty: the simulator is another process on a possibly busy machine."""
PTY_MAJORS = range(136, 144)
"""Linux device majors of Unix98 pty slaves (``/dev/pts/N``; devices.txt)."""


def is_pty(path: str) -> bool:
    """Whether ``path`` is a pseudo-terminal slave, such as the port ``vendhw sim`` prints."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) in PTY_MAJORS


def _link_url(url: str) -> tuple[str, float]:
    """The transport URL for an MDB link and its default reply window.

    A pty carries bytes, not 9-bit words: its parity settings do nothing, so the in-band
    form (``FF 00 b`` for a mode-bit byte) goes through it as plain bytes, which is what
    vendhw's simulators speak. ``/dev/pts/N`` and ``mdb9:///dev/pts/N`` both open that way,
    and so does ``mdb9://usb-serial://...`` when the identity resolves to a pty (a simulator
    behind a faked adapter). An identity is resolved here, at every open: a port missing
    now raises :class:`~vendhw.errors.PortNotFoundError` (it may come back).
    """
    if url.startswith(("sim://", "replay://")):
        return url, SIM_RESPONSE_TIMEOUT
    if url.startswith("mdbascii://"):  # vendhw.transport.mdbascii: adapter round trip
        return url, PTY_RESPONSE_TIMEOUT
    path = url[len("mdb9://"):] if url.startswith("mdb9://") else url
    if url.startswith("mdb9://") and path.startswith(f"{IDENTITY}://"):
        if is_pty(resolve(path)):
            return path, PTY_RESPONSE_TIMEOUT  # the identity, opened as a plain port
        return url, RESPONSE_TIMEOUT
    if is_pty(path):
        return path, PTY_RESPONSE_TIMEOUT
    if url.startswith("mdb9://"):
        return url, RESPONSE_TIMEOUT
    raise ConfigurationError(
        f"{url}: MDB needs a 9-bit link: mdb9:///dev/ttyUSB0 (sticky parity), "
        "mdb9://usb-serial://VID:PID?serial=SN, mdbascii://PORT (an ASCII MDB adapter), a "
        "simulator's pty (vendhw sim mdb-changer) or sim://mdb-…")


SHARED_SIMULATORS = ("mdb-bus",)
"""``sim://`` simulators that are one bus for every device opened on the same URL. Other
``sim://`` URLs stay one simulator per device (tests open ``sim://mdb-changer`` often)."""


def bus_key(url: str) -> str | None:
    """What identifies the physical bus of ``url`` (the real path of its port), or None for
    a URL that is never shared (a ``replay://`` capture, a one-device ``sim://``)."""
    if url.startswith("sim://"):
        name = url[len("sim://"):].split("?", 1)[0].split("/", 1)[0]
        return url if name in SHARED_SIMULATORS else None
    if url.startswith("replay://"):
        return None
    if url.startswith(f"mdbascii://{IDENTITY}://"):
        return url  # an ASCII adapter by identity
    path = url[len("mdb9://"):] if url.startswith("mdb9://") else url
    if path.startswith(f"{IDENTITY}://"):
        return path  # the adapter by identity: the same bus whatever path it has now
    return os.path.realpath(path)


def _open_link(url: str, response_timeout: float | None, options: dict[str, Any]) -> MdbLink:
    return shared_link(url, response_timeout=response_timeout, **options)


def shared_link(url: str, *, response_timeout: float | None = None,
                **options: Any) -> MdbLink:
    """The one :class:`MdbLink` of the bus on ``url``: a changer, a bill validator and a card
    reader on one serial port share it (and its lock, which spans a command and its ACK).

    The first device opens the port (with its transport options and reply window; a later
    device's longer ``response_timeout`` widens the window); each device's ``close()``
    releases it and the last one closes the port.
    """
    key = bus_key(url)
    timeout = float(response_timeout) if response_timeout is not None else None
    with _BUSES_LOCK:
        link = _BUSES.get(key) if key is not None else None
        if link is None or link.transport.closed or link.transport.lost is not None:
            # No bus yet, or its port went away (unplugged): a device reopened after that
            # opens the port again; the lost link closes when its last device releases it.
            target, default_timeout = _link_url(url)
            transport = open_transport(target, baudrate=9600, **options)
            link = MdbLink(transport, response_timeout=(
                timeout if timeout is not None else default_timeout))
            if key is not None:
                link.bus_key = key
                _BUSES[key] = link
        elif timeout is not None and timeout > link.response_timeout:
            link.response_timeout = timeout
        link.users += 1
    return link


def open_changer(url: str, *, response_timeout: float | None = None,
                 accept_tokens: bool | str = False, **options: Any) -> MdbCoinChanger:
    """Open an MDB coin changer (``mdb9://PORT``, a simulator's pty, ``sim://mdb-changer``
    or a ``replay://`` capture of the in-band form)."""
    return MdbCoinChanger(_open_link(url, response_timeout, options),
                          accept_tokens=option_flag(accept_tokens))


def open_bill_validator(url: str, *, response_timeout: float | None = None,
                        **options: Any) -> MdbBillValidator:
    """Open an MDB bill validator (``mdb9://PORT``, a simulator's pty, ``sim://mdb-bill``
    or a ``replay://`` capture of the in-band form)."""
    return MdbBillValidator(_open_link(url, response_timeout, options))
