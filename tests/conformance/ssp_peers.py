"""Helpers for the SSP conformance tests: where the third-party peers are, and a CRC that is
not vendhw's. A missing peer is a clear skip on a workstation and a failure in CI (CI=true):
CI installs them (``.ci/setup.d/20-npm-essp.sh``, ``pip install -e .[dev]``)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
NODE_DIR = HERE / "ssp_node"
NODE_PACKAGE = "encrypted-smiley-secure-protocol"
PYPI_ESSP = "eSSP==1.0.2"


def missing(what: str, how: str) -> None:
    """Fail in CI, skip elsewhere, naming what is missing and how to get it."""
    message = f"{what} is not installed ({how})"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI: {message}")
    pytest.skip(message)


def node_host() -> list[str]:
    """The command that runs the Node eSSP host driver (``ssp_node/host.js``)."""
    node = shutil.which("node")
    how = "run .ci/setup.d/20-npm-essp.sh"
    if node is None:
        missing("node", "install Node.js 20")
        raise AssertionError  # unreachable: missing() raises
    check = subprocess.run([node, "-e", f"require('{NODE_PACKAGE}'); require('serialport')"],
                           cwd=NODE_DIR, capture_output=True, text=True, timeout=30)
    if check.returncode != 0:
        missing(f"npm {NODE_PACKAGE} (with a working serialport)", how)
    return [node, str(NODE_DIR / "host.js")]


def node_run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a Node snippet inside ``ssp_node`` (so it sees the peer's modules)."""
    node_host()
    return subprocess.run(["node", "-e", script, *args], cwd=NODE_DIR, capture_output=True,
                          text=True, timeout=60)


# The PyPI eSSP package (pc-coholic/eSSP, 1.0.2, 2017) is Python 2 code. These are the only
# edits applied to its source before it runs here, each a Python 2 -> 3 bytes/str change:
PYPI_PATCHES = (
    # Python 2 `str.decode('hex')` turned the hex text into the bytes to send.
    ("prepedstring = prepedstring.decode('hex')", "prepedstring = bytes.fromhex(prepedstring)"),
    # Reading a Python 3 serial port gives bytes whose items are already ints.
    ("expected_bytes += ord(bytes_read[2]) + 2", "expected_bytes += bytes_read[2] + 2"),
    ("array += [hex(ord(response[i]))]", "array += [hex(response[i])]"),
)
"""Besides these, the package's ``__init__.py`` (``from eSSP import eSSP``, a Python 2 implicit
relative import) is bypassed: its one module, ``eSSP/eSSP.py``, is loaded by file path."""


def pypi_essp() -> types.ModuleType:
    """The PyPI eSSP module, loaded from its installed file with :data:`PYPI_PATCHES`."""
    spec = importlib.util.find_spec("eSSP")
    if spec is None or not spec.submodule_search_locations:
        missing("the PyPI package eSSP", f"pip install '{PYPI_ESSP}' (in the dev extra)")
        raise AssertionError
    path = Path(next(iter(spec.submodule_search_locations))) / "eSSP.py"
    source = path.read_text(encoding="utf-8")
    for old, new in PYPI_PATCHES:
        assert source.count(old) == 1, f"eSSP source changed: {old!r}"
        source = source.replace(old, new)
    module = types.ModuleType("pypi_essp")
    module.__file__ = str(path)
    sys.modules["pypi_essp"] = module
    exec(compile(source, str(path), "exec"), module.__dict__)
    return module


def crc16_ssp(data: bytes) -> int:
    """CRC-16 of GA138 (poly 0x8005, seed 0xFFFF, MSB first), bit by bit: not vendhw's code."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def unstuff(raw: bytes) -> bytes:
    """SEQ..CRC of an SSP packet with every doubled 0x7F made single again."""
    return raw[1:].replace(b"\x7f\x7f", b"\x7f")


CASES = json.loads((HERE / "ssp_node_poll_cases.json").read_text())["cases"]
"""The POLL cases of the Node library's tests (see test_ssp_peer_poll_cases.py)."""

DEVIATIONS = {
    "parseData / POLL / FRAUD_ATTEMPT: Smart protocol < 6":
        "GA138 v2.2 'Fraud Attempt' (0xE6): 1 data byte, the channel, on every device; the "
        "peer reads a 4-byte value for SMART Hopper/Payout",
    "parseData / POLL / FRAUD_ATTEMPT: Smart protocol >= 6":
        "GA138 v2.2 'Fraud Attempt' (0xE6): 1 data byte; the peer reads value blocks",
    "parseData / POLL / COIN_MECH_ERROR":
        "GA138 v2.2 'Coin Mech Error' (0xB7) carries an error byte (example F0 B7 14); the "
        "peer's test gives none",
    "parseData / POLL / ERROR_DURING_PAYOUT: protocol < 6":
        "GA138 v2.2 'Error During Payout' (0xB1): value blocks then the error byte from "
        "protocol 6; the peer's test (named < 6, run with 6) gives a bare error byte",
    "parseData / POLL / COIN_CREDIT: protocol >= 6":
        "GA138 v2.2 'Coin Credit' (0xDF): one 4-byte value + 3-byte currency from protocol 6 "
        "(example F0 DF F4 01 00 00 47 42 50), no count byte; the peer reads a count and "
        "blocks. vendhw reads the first 7 bytes as the spec says, reports the rest, and its "
        "host sends the unreadable currency to the operator instead of crediting it",
    "parseData / POLL / Skip unknown status":
        "the peer skips bytes it does not know (00 00 before B6); vendhw does not guess where "
        "the next event starts and reports them",
}
