"""vendhw's ID-003 host replays a session built from Kopachris/py-id003 and lamassu-machine.

Every frame of ``id003_captures/`` is a command or status that py-id003 (``src/id003.py``)
or lamassu-machine (``lib/id003/id003rs232.js``) defines, with the data those hosts send or
expect (py-id003's ``initialize`` defaults, lamassu's CURRENCY ASSIGN layout, py-id003's
``ESCROW_USA`` values); the CRC is computed by ``id003_independent.py``, not by vendhw. Each
record names its repository, commit and path. The replay checks what vendhw writes, byte for
byte. Notes: ``tests/conformance/ID003.md``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from id003_independent import frame_ok

from vendhw.devices.cash import CashEventKind
from vendhw.devices.id003 import Id003Acceptor
from vendhw.transport.replay import ReplayTransport

CAPTURES = Path(__file__).with_name("id003_captures")
K = CashEventKind


@pytest.mark.parametrize("name", sorted(p.name for p in CAPTURES.glob("*.jsonl")))
def test_capture_frames_pass_the_independent_crc_and_cite_a_peer(name: str) -> None:
    for line in (CAPTURES / name).read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        assert frame_ok(bytes.fromhex(record["hex"])), record
        assert record["source"]


def test_bring_up_escrow_stack_credit_and_reject_from_peer_frames() -> None:
    transport = ReplayTransport(f"replay://{CAPTURES / 'bringup_escrow_stack_usd.jsonl'}",
                                strict=True)
    dev = Id003Acceptor(transport, currency="EUR", reply_timeout=0.05, retries=0)
    dev.start()
    # lamassu's CURRENCY ASSIGN layout with py-id003's US values: 0x62 and 0x68 unused.
    assert dev.values == {0x61: 100, 0x63: 500, 0x64: 1000, 0x65: 2000, 0x66: 5000,
                          0x67: 10000}
    assert dev.currency == "USD" and dev.version.startswith("i(USA)")
    dev.enable()
    events = []
    while transport.remaining:
        polled = dev.poll()
        events += polled
        if any(e.kind is K.ESCROW for e in polled):
            dev.stack()
    kinds = [e.kind for e in events]
    assert kinds == [K.ESCROW, K.CREDIT, K.REJECTED]
    escrow, credit, rejected = events
    assert (escrow.value, credit.value, credit.currency) == (500, 500, "USD")
    assert rejected.reason == "true bill error"
    assert transport.mismatches == []


def test_faults_and_power_up_with_a_bill_in_the_stacker_from_peer_codes() -> None:
    """py-id003's error and power-up statuses in operation: each fault reported once, the
    cash box replaced, and POWER UP WITH BILL IN STACKER handed to an operator (never a
    credit) before the host initialises and enables the acceptor again, byte for byte."""
    transport = ReplayTransport(
        f"replay://{CAPTURES / 'faults_and_power_up_with_bill.jsonl'}", strict=True)
    dev = Id003Acceptor(transport, reply_timeout=0.05, retries=0)
    dev.start()
    dev.enable()
    events = []
    while transport.remaining:
        events += dev.poll()
    kinds = [e.kind for e in events]
    assert kinds == [K.CASHBOX_REMOVED, K.CASHBOX_REPLACED, K.JAM, K.FAULT, K.DEVICE_RESET,
                     K.FAULT]
    assert events[3].reason == "transport motor speed failure"
    assert "credited is unknown" in (events[5].reason or "")
    assert K.CREDIT not in kinds and dev.enabled and transport.mismatches == []
