"""EVA-DTS reports from the journals, the parser, and the DEX/UCS link (memory and pty)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from vendhw.cli import cli
from vendhw.devices.cash import CashEvent, CashEventKind
from vendhw.dex import Audit, DexMaster, DexSlave, ReadLog, collect, generate, parse, run
from vendhw.dex.link import ACK0, ACK1, ENQ, handshake_frame
from vendhw.dex.report import DexFormatError, g85
from vendhw.machine.cash import CashJournal
from vendhw.machine.journal import VendJournal
from vendhw.transport import PtyPair

DATA = Path(__file__).parent / "data"
# lanmark7/dex-utility@90ccbf1174cf7e76a1e582381f77a04f0bd12130: TestData/Test1.dex (a real
# machine's file, as the research note boards-backend.md §2.1 quotes it).
PEER_FILE = DATA / "lanmark7-Test1.dex"


def make_journals(folder: Path) -> Path:
    """A machine's data dir: every kind of vend and some cash movements."""
    vends = VendJournal(folder / "vends.db")
    cash = CashJournal(folder / "cash.db")
    outcomes = [
        ("sale:1:a", "1", "delivered"), ("sale:1:b", "1", "delivered"),
        ("sale:2:c", "2", "jammed"), ("order-42", "2", "delivered"),
        ("card:3:d", "3", "delivered"), ("card:3:e", "3", "not_dropped"),
        ("manual-1", "4", "delivered"), ("order-43", "3", "unknown"),
    ]
    for vend_id, slot, outcome in outcomes:
        vends.begin(vend_id, board="b", slot=slot, motor=int(slot), drop_sensor=True,
                    sequence_range=None)
        vends.finish(vend_id, outcome)
    cash.record(CashEvent(CashEventKind.CREDIT, "cctalk-coin@x", 200, "EUR", route="tubes",
                          event_id="c1"))
    cash.record(CashEvent(CashEventKind.CREDIT, "ssp@y", 500, "EUR", route="cashbox",
                          event_id="c2"))
    cash.record(CashEvent(CashEventKind.PAYOUT_DONE, "cctalk-coin@x", 70, "EUR",
                          event_id="p1"))
    cash.record(CashEvent(CashEventKind.JAM, "ssp@y", 0, "EUR", event_id="j1"))
    for reference, amount in (("sale:1:a", 150), ("sale:1:b", 150), ("sale:2:c", 180)):
        cash.spend(amount, reference)
    vends.close()
    cash.close()
    return folder / "vends.db"


PRICES = {"1": 150, "2": 180, "3": 250, "4": 90}


def test_the_peer_file_checks_out() -> None:
    doc = parse(PEER_FILE.read_text(encoding="ascii"))
    assert doc.valid and doc.g85_ok is True and doc.g85_computed == "E8BC"
    assert doc.se_convention == "without loops"  # SE*54 leaves out LS/LE in this file
    audit = doc.audit
    assert (audit.paid.value, audit.paid.count) == (69250, 1306)
    assert (audit.cash.value, audit.cash.count) == (54400, 302)
    assert (audit.cashless1.value, audit.cashless1.count) == (12600, 220)
    assert [p.price for p in audit.products] == [500] * 10


def test_a_corrupted_peer_file_is_flagged_not_rejected() -> None:
    text = PEER_FILE.read_text(encoding="ascii").replace("VA1*69250", "VA1*69251")
    doc = parse(text)
    assert doc.g85_ok is False and not doc.valid
    assert "G85 says E8BC" in doc.problems[0]


def test_handshake_frames_match_the_research_examples() -> None:
    # boards-backend.md §2.2 (computed from soda-pop-refresh dex.c's strings).
    assert handshake_frame(b"1234567890RR01L01") == (
        b"\x10\x01" + b"1234567890RR01L01" + b"\x10\x03" + bytes.fromhex("DE4D"))
    assert handshake_frame(b"001234567890R01L01")[-2:] == bytes.fromhex("C266")


def test_report_round_trip(tmp_path: Path) -> None:
    journal = make_journals(tmp_path)
    log = ReadLog(tmp_path / "dex.db")
    audit = collect(journal, prices=PRICES, machine_id="M-0042", read_log=log, now=1.7e9)
    text = generate(audit)
    assert text.startswith("DXS*") and text.endswith("DXE*1*1\r\n")
    doc = parse(text)
    assert doc.valid and doc.g85_ok and doc.se_convention == "all", doc.problems
    back = doc.audit
    assert back == audit
    # The numbers themselves, from the journals above.
    assert (audit.cash.count, audit.cash.value) == (2, 300)
    assert (audit.cashless1.count, audit.cashless1.value) == (1, 250)
    assert (audit.cashless2.count, audit.cashless2.value) == (1, 180)
    assert (audit.paid.count, audit.paid.value) == (4, 730)
    assert (audit.test.count, audit.test.value) == (1, 90)
    assert audit.unknown_vends == 1
    by_slot = {p.selection: (p.price, p.paid.count, p.paid.value) for p in audit.products}
    assert by_slot == {"1": (150, 2, 300), "2": (180, 1, 180), "3": (250, 1, 250),
                       "4": (90, 0, 0)}
    events = {e.code: (e.count, e.count_reset) for e in audit.events}
    assert events == {"ELA": (1, 1), "EJL": (1, 1), "EN": (1, 1)}
    flow = audit.cash_flow
    assert (flow.cash_in, flow.to_tubes, flow.to_box, flow.bills_in, flow.dispensed) == (
        700, 200, 500, 500, 70)
    assert (audit.reads.total, audit.reads.resets) == (1, 0)


def test_segment_count_and_crc_are_those_of_the_text(tmp_path: Path) -> None:
    audit = collect(make_journals(tmp_path), prices=PRICES, machine_id="m1", now=1.7e9)
    lines = generate(audit).split("\r\n")[:-1]
    st, g, se = (next(i for i, line in enumerate(lines) if line.startswith(p))
                 for p in ("ST*", "G85*", "SE*"))
    assert lines[se] == f"SE*{se - st + 1}*0001"
    assert lines[g] == "G85*" + g85(lines[st:g])


def test_reset_starts_the_interim_figures_again(tmp_path: Path) -> None:
    journal = make_journals(tmp_path)
    log = ReadLog(tmp_path / "dex.db")
    first = collect(journal, prices=PRICES, read_log=log, reset=True, now=time.time() + 5)
    assert first.paid.count_reset == 4 and first.reads.resets == 1
    second = collect(journal, prices=PRICES, read_log=log, now=time.time() + 10)
    assert (second.paid.count, second.paid.value) == (4, 730)
    assert (second.paid.count_reset, second.paid.value_reset) == (0, 0)
    assert all(e.count_reset == 0 and e.count == 1 for e in second.events)
    assert (second.reads.total, second.reads.with_reset, second.reads.resets) == (2, 1, 1)
    assert second.reads.last_date == first.reads.date


def pump(master: DexMaster, slave: DexSlave, *, corrupt_block: int | None = None,
         lose_ack: int | None = None) -> None:
    """Connect the two engines byte-exactly, optionally breaking one block or one ack."""
    now = 0.0
    to_slave = master.start(now)
    blocks_seen = acks_seen = 0
    for _ in range(10_000):
        if master.done and slave.done:
            return
        now += 0.01
        if to_slave:
            to_master = slave.receive(to_slave, now)
        else:
            to_master = slave.expire(now) if slave.deadline and now >= slave.deadline else b""
        if to_master.startswith(b"\x10\x02"):
            blocks_seen += 1
            if blocks_seen == corrupt_block:
                to_master = to_master[:5] + bytes([to_master[5] ^ 0x20]) + to_master[6:]
        to_slave = master.receive(to_master, now) if to_master else b""
        if to_slave in (ACK0, ACK1) and slave.state == "data_ack":
            acks_seen += 1
            if acks_seen == lose_ack:
                to_slave = b""
                now = slave.deadline or now
    raise AssertionError(f"no end: master {master.state}, slave {slave.state}")


REPORT = ("DXS*0000000001*VA*V1/1*1\r\n" + "".join(
    f"PA1*{i}*{i * 10}\r\n" for i in range(200))).encode("ascii")


@pytest.mark.parametrize(("corrupt_block", "lose_ack"), [(None, None), (2, None),
                                                          (None, 3)])
def test_link_in_memory(corrupt_block: int | None, lose_ack: int | None) -> None:
    master, slave = DexMaster("HANDHELD01"), DexSlave(REPORT, "MACHINE001")
    pump(master, slave, corrupt_block=corrupt_block, lose_ack=lose_ack)
    assert master.error is None and slave.error is None
    assert master.result.data == REPORT  # nothing lost, nothing doubled
    assert slave.result.peer_comm_id == "HANDHELD01"
    assert master.result.peer_comm_id == "MACHINE001"
    assert slave.result.blocks == -(-len(REPORT) // 245)
    if corrupt_block or lose_ack:
        assert slave.result.retries >= 1


def test_slave_refuses_anything_but_a_read() -> None:
    slave = DexSlave(b"x", "MACHINE001")
    assert slave.receive(bytes([ENQ]), 0.0) == ACK0
    slave.receive(handshake_frame(b"1234567890SR01L01"), 0.1)
    assert slave.done and "only reads" in (slave.error or "")


def test_handheld_reads_the_machine_over_a_pty(tmp_path: Path) -> None:
    journal = make_journals(tmp_path)
    prices = [f"--price={slot}={price}" for slot, price in PRICES.items()]
    with PtyPair() as pair:
        server = subprocess.Popen(
            [sys.executable, "-m", "vendhw", "dex", "serve", "--port", pair.port,
             "--journal", str(journal), "--machine-id", "M-0042", "--once", *prices],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ})
        try:
            # Wait for the server to open the port: it says so on stderr.
            assert server.stderr is not None
            assert b"serving DEX" in server.stderr.readline()
            started = time.monotonic()
            result = run(DexMaster(), pair.master, idle_timeout=20)
            elapsed = time.monotonic() - started
            assert server.wait(timeout=20) == 0
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
    doc = parse(result.data.decode("ascii"))
    assert doc.valid and doc.g85_ok
    assert result.peer_comm_id == "M004200000"  # comm id from the machine id
    assert (doc.audit.paid.count, doc.audit.paid.value) == (4, 730)
    assert doc.audit.machine_id == "M-0042"
    print(f"DEX read over a pty: {len(result.data)} bytes in {result.blocks} blocks, "
          f"{elapsed:.3f} s (wire time at 9600 8N1: {result.wire_seconds:.2f} s)")


def test_cli_report_and_parse(tmp_path: Path) -> None:
    journal = make_journals(tmp_path)
    out = tmp_path / "audit.dex"
    runner = CliRunner()
    result = runner.invoke(cli, ["dex", "report", "--journal", str(journal), "--price", "1=150",
                                 "--machine-id", "m7", "-o", str(out)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["dex", "parse", str(out), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout.splitlines()[0])
    assert data["valid"] and data["g85"]["ok"] and data["audit"]["cash"]["count"] == 2


@pytest.mark.parametrize("args", [["dex", "report", "--journal", "/nonexistent/vends.db"],
                                  ["dex", "report", "--journal", "{j}", "--price", "1=x"],
                                  ["dex", "parse", "{bad}"]])
def test_cli_bad_input_is_one_line(tmp_path: Path, args: list[str]) -> None:
    journal = make_journals(tmp_path)
    bad = tmp_path / "bad.dex"
    bad.write_text("hello\n")
    args = [a.format(j=journal, bad=bad) for a in args]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error:")


def test_not_dex_is_a_clear_error() -> None:
    with pytest.raises(DexFormatError, match="expected a DXS"):
        parse("ST*001*0001\r\n")
    with pytest.raises(DexFormatError, match="empty"):
        parse("\r\n")
    assert isinstance(Audit("x").comm_id, str)


def test_protocol_vectors_are_what_the_engine_sends() -> None:
    from vendhw.dex.link import data_block
    from vendhw.resources import data_dir

    vectors = json.loads((data_dir("protocols") / "dex" / "vectors.json").read_text())
    frames = [bytes.fromhex(v["hex"]) for v in vectors["vectors"]]
    assert frames[2] == handshake_frame(b"1234567890RR01L01")
    assert frames[3] == handshake_frame(b"001234567890R01L01")
    assert frames[4] == data_block(b"DXS*1234567890*VA*V1/1*1\r\n", last=True)


def test_cli_read_is_a_handheld(tmp_path: Path) -> None:
    import threading

    audit = collect(make_journals(tmp_path), prices=PRICES, machine_id="m9", now=1.7e9)
    report = generate(audit).encode("ascii")
    out = tmp_path / "read.dex"
    with PtyPair() as pair:
        results: list[object] = []
        machine = threading.Thread(target=lambda: results.append(
            run(DexSlave(report, audit.comm_id), pair.master, idle_timeout=30)))
        machine.start()
        done = subprocess.run([sys.executable, "-m", "vendhw", "dex", "read", "--port",
                               pair.port, "--json", "-o", str(out)],
                              capture_output=True, text=True, timeout=60)
        machine.join(timeout=30)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["valid"] and summary["g85_ok"] and summary["paid"] == 4
    assert summary["machine"] == audit.comm_id and summary["wire_seconds_9600"] > 0
    assert out.read_bytes() == report and len(results) == 1


def test_prices_from_the_backend_catalogue() -> None:
    from vendhw.dex.collect import catalogue_prices
    from vendhw.testing.backend import InProcessServer

    server = InProcessServer()
    try:
        server.add_machine("m1", slots={"1": ("tea", 500), "2": ("cake", 1500)})
        client = server.client()
        prices, currency = catalogue_prices(client.catalogue())
        client.close()
    finally:
        server.close()
    assert prices == {"1": 500, "2": 1500} and currency


def test_cli_report_from_machine_toml_without_the_backend(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    make_journals(data)
    config = tmp_path / "machine.toml"
    config.write_text(f'''
[backend]
url = "http://127.0.0.1:9"
machine_id = "m-0042"
secret = "s"
[board]
profile = "easivend-column"
port = "sim://easivend-column"
[agent]
data_dir = "{data}"
''')
    result = CliRunner().invoke(cli, ["dex", "report", "--config", str(config),
                                      "--price", "1=150"])
    assert result.exit_code == 0, result.output
    assert "warning: no prices from the backend" in result.stderr
    doc = parse(result.stdout)
    assert doc.valid and doc.audit.machine_id == "m-0042"
    assert (doc.audit.cash.count, doc.audit.cash.value) == (2, 300)
    assert doc.audit.currency == "EUR"
    bad = CliRunner().invoke(cli, ["dex", "report", "--config", str(tmp_path / "none.toml")])
    assert bad.exit_code == 2 and bad.stderr.startswith("error: no configuration file")


def test_a_file_with_several_transmissions(tmp_path: Path) -> None:
    from vendhw.dex import parse_all

    audit = collect(make_journals(tmp_path), prices=PRICES, machine_id="m1", now=1.7e9)
    text = generate(audit) + PEER_FILE.read_text(encoding="ascii")
    first, second = parse_all(text)
    assert first.valid and first.audit == audit
    assert second.valid and second.comm_id == "9259630009"
    result = CliRunner().invoke(cli, ["dex", "parse", "-", "--json"], input=text)
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 2
