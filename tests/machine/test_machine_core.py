"""Machine.dispense and the journal against the in-memory contract board."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from machine_fakes import FakeBoard, FakeProfile, as_board

from vendhw.devices.boards import Outcome
from vendhw.errors import ConfigurationError, NoResponseError, NotSupportedError, SequenceError
from vendhw.machine.core import DispenseResult, Machine
from vendhw.machine.journal import VendJournal, VendState


def machine(board: FakeBoard | None = None, journal: str | Path | None = None) -> Machine:
    return Machine.from_board(as_board(board or FakeBoard()), journal=journal)


def test_delivered_result_carries_everything(tmp_path: Path) -> None:
    board = FakeBoard()
    with machine(board, tmp_path / "j.db") as m:
        result = m.dispense("1-3", "order-1")
    assert result.outcome is Outcome.DELIVERED and result.delivered
    assert (result.slot, result.motor, result.slot_label) == ("1-3", 3, "1-3")
    assert result.vend_id == "order-1" and result.raw_code == 0x02
    assert result.drop_time_ms == 42 and result.duration_ms is not None
    assert not result.replayed
    assert board.vends == [(3, result.seq)]
    d = result.to_dict()
    assert d["outcome"] == "delivered" and d["slot"] == "1-3" and d["motor"] == 3


def test_plain_board_number_works_and_id_is_generated() -> None:
    with machine() as m:
        a = m.dispense(4)
        b = m.dispense("4")
    assert a.motor == b.motor == 4
    assert a.vend_id and b.vend_id and a.vend_id != b.vend_id


def test_unknown_slot_refused_before_anything_is_journaled(tmp_path: Path) -> None:
    board = FakeBoard()
    with machine(board, tmp_path / "j.db") as m:
        with pytest.raises(ConfigurationError, match="unknown slot"):
            m.dispense("9-9", "x")
        assert m.history() == [] and board.vends == []


def test_drop_sensor_requested_on_a_board_without_one() -> None:
    board = FakeBoard(profile=FakeProfile(capabilities=frozenset({"spiral"})))
    with machine(board) as m:
        with pytest.raises(NotSupportedError):
            m.dispense(1, drop_sensor=True)
        assert m.dispense(1).drop_time_ms is None  # default follows the profile
    assert len(board.vends) == 1


def test_same_vend_id_never_vends_twice(tmp_path: Path) -> None:
    board = FakeBoard()
    path = tmp_path / "j.db"
    with machine(board, path) as m:
        first = m.dispense(2, "v1")
        again = m.dispense(2, "v1")
    with machine(board, path) as m:
        later = m.dispense("1-2", "v1")
    assert board.vends == [(2, first.seq)]
    assert again.replayed and later.replayed
    assert again.outcome is later.outcome is Outcome.DELIVERED
    assert later.seq == first.seq


def test_vend_id_reused_for_another_slot_is_refused() -> None:
    with machine() as m:
        m.dispense(2, "v1")
        with pytest.raises(ConfigurationError, match="use a new vend_id"):
            m.dispense(3, "v1")


def test_board_outcomes_are_returned_and_journaled(tmp_path: Path) -> None:
    board = FakeBoard(inventory={5: 0})
    with machine(board, tmp_path / "j.db") as m:
        empty = m.dispense(5, "e")
        board.fail = "jam"
        jammed = m.dispense(6, "j")
        assert [r.outcome for r in m.history()] == ["jammed", "empty"]
    assert empty.outcome is Outcome.EMPTY and jammed.outcome is Outcome.JAMMED
    assert jammed.raw_code == 0x03
    assert board.vends == []


def test_silent_board_aborts_and_the_same_vend_id_may_try_again(tmp_path: Path) -> None:
    board = FakeBoard(fail="silent")
    with machine(board, tmp_path / "j.db") as m:
        with pytest.raises(NoResponseError):
            m.dispense(1, "v")
        assert m.journal.get("v").state is VendState.ABORTED  # type: ignore[union-attr]
        assert m.pending() == []
        result = m.dispense(1, "v")
    assert result.outcome is Outcome.DELIVERED and len(board.vends) == 1


def test_driver_refusing_before_the_write_aborts_not_unknown() -> None:
    board = FakeBoard(fail="refuse")
    with machine(board) as m:
        with pytest.raises(ConfigurationError, match="refuses"):
            m.dispense(2, "v")
        record = m.journal.get("v")
        assert record is not None and record.state is VendState.ABORTED
        assert m.pending() == []
    assert board.vends == []


def test_link_lost_after_send_is_asked_again_by_seq() -> None:
    board = FakeBoard(fail="lost")
    with machine(board) as m:
        result = m.dispense(1, "v")
    assert result.outcome is Outcome.DELIVERED
    assert "asked the board by seq" in result.detail
    assert board.queries == [(1, result.seq)]
    assert len(board.vends) == 1


def test_link_lost_on_a_board_that_cannot_be_asked_is_unknown_and_pending() -> None:
    board = FakeBoard(fail="lost", sequence_range=None)
    with machine(board) as m:
        result = m.dispense(1, "v")
        assert result.outcome is Outcome.UNKNOWN and result.seq is None
        assert [r.vend_id for r in m.pending()] == ["v"]
        assert m.dispense(1, "v").outcome is Outcome.UNKNOWN  # reported, not re-sent
        settled = m.resolve("v", "delivered", "checked the slot")
        assert settled.outcome is Outcome.DELIVERED and settled.resolved_by == "operator"
        assert m.pending() == []
        with pytest.raises(ConfigurationError, match="already settled"):
            m.resolve("v", "empty")
        with pytest.raises(ConfigurationError, match="unknown outcome"):
            m.resolve("v", "lost")
    assert len(board.vends) == 1


def test_exception_after_the_ack_becomes_unknown(tmp_path: Path) -> None:
    board = FakeBoard(fail="raise_after_ack", remember=False)
    with machine(board, tmp_path / "j.db") as m:
        result = m.dispense(7, "v")
        log = m.journal.log("v")
    assert result.outcome is Outcome.UNKNOWN and "DisconnectedError" in result.detail
    assert [step["state"] for step in log] == ["intent", "sent", "acknowledged", "result"]


def test_journal_pragmas_are_durable(tmp_path: Path) -> None:
    journal = VendJournal(tmp_path / "j.db")
    mode = journal._store.db.execute("PRAGMA journal_mode").fetchone()[0]
    sync = journal._store.db.execute("PRAGMA synchronous").fetchone()[0]
    journal.close()
    assert mode == "wal" and sync == 2  # 2 = FULL


def test_sequence_numbers_are_monotonic_and_wrap() -> None:
    board = FakeBoard(sequence_range=(1, 3))
    with machine(board) as m:
        seqs = [m.dispense(1).seq for _ in range(5)]
    assert all(s is not None and 1 <= s <= 3 for s in seqs)
    first = seqs[0]
    assert first is not None
    assert seqs == [(first - 1 + i) % 3 + 1 for i in range(5)]


def test_sequence_of_an_unresolved_vend_is_never_reused() -> None:
    board = FakeBoard(sequence_range=(1, 3), remember=False)
    with machine(board) as m:
        board.fail = "lost"
        stuck = m.dispense(1, "stuck")
        assert stuck.outcome is Outcome.UNKNOWN
        used = [m.dispense(2).seq for _ in range(4)]
        assert stuck.seq not in used
        board.fail = "lost"
        m.dispense(3, "stuck2")
        board.fail = "lost"
        m.dispense(3, "stuck3")
        with pytest.raises(SequenceError, match="unresolved"):
            m.dispense(4, "blocked")
        assert m.journal.get("blocked") is None
        m.resolve("stuck", Outcome.DELIVERED)
        assert m.dispense(4, "free").seq == stuck.seq


def test_reconcile_on_open_asks_the_board_by_seq(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    board = FakeBoard()
    journal = VendJournal(path)
    # A previous run died right after the command was written: the row is "sent".
    record = journal.begin("crashed", board="fake", slot="1-4", motor=4, drop_sensor=True,
                           sequence_range=(1, 255))
    journal.mark("crashed", VendState.SENT)
    board._turn(4, record.seq)  # the board did vend it
    journal.close()
    with machine(board, path) as m:
        result = m.dispense("1-4", "crashed")
        assert result.outcome is Outcome.DELIVERED and result.resolved_by == "reconcile"
        assert m.pending() == []
    assert board.vends == [(4, record.seq)] and board.queries == [(4, record.seq)]


def test_reconcile_marks_unknown_when_the_board_cannot_tell(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    journal = VendJournal(path)
    journal.begin("a", board="fake", slot=1, motor=1, drop_sensor=True, sequence_range=None)
    journal.begin("b", board="fake", slot=2, motor=2, drop_sensor=True, sequence_range=None)
    journal.mark("b", VendState.ACKNOWLEDGED)
    journal.begin("other", board="another-board", slot=2, motor=2, drop_sensor=True,
                  sequence_range=None)
    journal.close()
    board = FakeBoard(sequence_range=None)
    with machine(board, path) as m:
        pending = {r.vend_id: r for r in m.pending()}
        assert set(pending) == {"a", "b"}  # another board's rows are left to that board
        assert all(r.outcome == "unknown" for r in pending.values())
        assert "before the command was confirmed" in pending["a"].detail
        assert "after the command was acknowledged" in pending["b"].detail
        assert m.reconcile(include_unknown=True) == []  # still cannot tell
    assert board.vends == [] and board.queries == []


def test_reconcile_include_unknown_settles_once_the_board_answers(tmp_path: Path) -> None:
    board = FakeBoard(fail="lost", remember=False)
    with machine(board, tmp_path / "j.db") as m:
        assert m.dispense(3, "v").outcome is Outcome.UNKNOWN
        board.remember = True
        settled = m.reconcile(include_unknown=True)
    assert [(r.vend_id, r.outcome) for r in settled] == [("v", Outcome.DELIVERED)]
    assert settled[0].resolved_by == "reconcile"


def test_status_selftest_door_and_missing_temperature() -> None:
    board = FakeBoard(profile=FakeProfile(capabilities=frozenset({"door", "drop_sensor"})))
    with machine(board) as m:
        status = m.status()
        assert status["ok"] is True and status["unresolved_vends"] == 0
        assert m.door() == "closed"
        with pytest.raises(NotSupportedError):
            m.temperature()
        assert m.selftest()["ok"] is True
    assert board.closed


def test_closed_machine_refuses_work() -> None:
    m = machine()
    m.close()
    m.close()
    with pytest.raises(ConfigurationError, match="closed"):
        m.dispense(1)


def test_threads_share_one_machine_without_double_vends(tmp_path: Path) -> None:
    board = FakeBoard(inventory={1: 100})
    results: list[DispenseResult] = []
    with machine(board, tmp_path / "j.db") as m:
        def worker(n: int) -> None:
            for i in range(5):
                results.append(m.dispense(1, f"v{i}"))  # every thread asks for the same ids

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(board.vends) == 5
    assert sum(not r.replayed for r in results) == 5 and len(results) == 20


def test_journal_file_is_readable_by_plain_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    with machine(journal=path) as m:
        m.dispense(1, "v")
    rows = sqlite3.connect(path).execute("SELECT vend_id, state, outcome FROM vends").fetchall()
    assert rows == [("v", "result", "delivered")]


def test_bad_journal_folder_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        VendJournal(tmp_path / "missing" / "j.db")
