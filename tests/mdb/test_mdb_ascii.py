"""``mdbascii://``: an ASCII MDB master adapter (Qibixx Generic Master command set) behind
the same MdbLink as ``mdb9://``, tested over a real pty against ``vendhw sim mdb-ascii``."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from vendhw.devices.mdb import MdbCoinChanger, MdbLink
from vendhw.framing.mdb import ACK, encode_9bit
from vendhw.sim.mdb_ascii import MdbAsciiAdapterSimulator
from vendhw.sim.pty import SimulatorOnPty
from vendhw.transport import open_transport
from vendhw.transport.mdbascii import MdbAsciiTransport, command_line, reply_block


def vendhw(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vendhw", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_an_addressed_block_becomes_an_r_line() -> None:
    assert command_line(0x0B, b"") == b"R,0B\n"
    assert command_line(0x0C, bytes((0x00, 0x3F, 0x00, 0x3F))) == b"R,0C,003F003F\n"


def test_p_lines_become_in_band_replies() -> None:
    assert reply_block("p,ACK") == encode_9bit([(ACK, True)])
    assert reply_block("p,NACK") is None
    assert reply_block("p,0102") == encode_9bit([(1, False), (2, False), (3, True)])


def test_the_transport_answers_like_a_9bit_link_and_absorbs_the_host_ack() -> None:
    with SimulatorOnPty(MdbAsciiAdapterSimulator()) as sim:
        transport = open_transport(f"mdbascii://{sim.port}")
        assert isinstance(transport, MdbAsciiTransport) and transport.acks_itself
        link = MdbLink(transport, response_timeout=0.5)
        assert link.transact(0x08, 0x00) is None  # RESET: ACK
        assert link.transact(0x08, 0x03) == bytes((0x0B,))  # POLL: JUST RESET
        link.ack()
        assert transport.host_acks_absorbed == 1
        assert link.transact(0x08, 0x03) is None  # acked by the adapter: not repeated
        assert sim.simulator.auto_acks == 1  # type: ignore[attr-defined]
        transport.close()


def test_nobody_at_an_address_is_no_response() -> None:
    from vendhw.errors import NoResponseError

    with SimulatorOnPty(MdbAsciiAdapterSimulator(members="mdb-changer")) as sim:
        link = MdbLink(open_transport(f"mdbascii://{sim.port}"), response_timeout=0.3)
        with pytest.raises(NoResponseError):
            link.transact(0x30, 0x03)  # no bill validator behind this adapter
        link.release()


def test_a_changer_starts_through_the_adapter() -> None:
    with SimulatorOnPty(MdbAsciiAdapterSimulator()) as sim:
        changer = MdbCoinChanger(MdbLink(open_transport(f"mdbascii://{sim.port}"),
                                         response_timeout=0.5))
        changer.start()
        assert changer.status()["currency"] == "EUR"
        changer.close()


@pytest.fixture(scope="module")
def adapter_pty() -> Iterator[str]:
    """``vendhw sim mdb-ascii`` in its own process (a 50 c coin comes once enabled)."""
    proc = subprocess.Popen([sys.executable, "-m", "vendhw", "sim", "mdb-ascii", "--json",
                             "-o", "coins=3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield json.loads(proc.stdout.readline())["port"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.slow
def test_cash_status_over_the_adapter(adapter_pty: str) -> None:
    result = vendhw("cash", "status", "--port", f"mdbascii://{adapter_pty}", "--protocol",
                    "mdb-changer", "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["currency"] == "EUR"
    assert status["identity"]["model"] == "SIM-CHANGER"


@pytest.mark.slow
def test_a_coin_through_the_adapter_is_credited_once(adapter_pty: str) -> None:
    result = vendhw("cash", "accept", "--port", f"mdbascii://{adapter_pty}", "--protocol",
                    "mdb-changer", "--json", "--seconds", "1.5", "--interval", "0.02")
    assert result.returncode == 0, result.stderr
    credits = [e for e in map(json.loads, result.stdout.splitlines()) if e["kind"] == "credit"]
    assert [(e["value"], e["channel"]) for e in credits] == [(50, 3)]


@pytest.mark.slow
def test_payout_through_the_adapter_finishes(adapter_pty: str) -> None:
    result = vendhw("cash", "payout", "35", "--port", f"mdbascii://{adapter_pty}",
                    "--protocol", "mdb-changer", "--json", "--interval", "0.01",
                    "--timeout", "20")
    assert result.returncode == 0, result.stderr
    last = json.loads(result.stdout.splitlines()[-1])
    assert (last["kind"], last["value"], last["requested"]) == ("payout_done", 35, 35)


def test_a_changer_and_a_bill_validator_share_one_adapter() -> None:
    import time

    from vendhw.devices.cash import CashEventKind
    from vendhw.devices.mdb import open_bill_validator, open_changer

    with SimulatorOnPty(MdbAsciiAdapterSimulator(notes="1")) as sim:
        url = f"mdbascii://{sim.port}"
        changer, bills = open_changer(url), open_bill_validator(url)
        try:
            assert changer.link is bills.link
            changer.start()
            bills.start()
            bills.enable()
            events = []
            for _ in range(50):
                events += bills.poll()
                if events:
                    break
                time.sleep(0.02)
            assert [(e.kind, e.value) for e in events] == [(CashEventKind.ESCROW, 1000)]
        finally:
            changer.close()
            bills.close()
