"""Shutting the shipper down: a vend in progress finishes, an idle long poll is not waited out,
and an instruction that arrives after the stop is not shipped (nor acknowledged)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from vendhw.agent.shipper import Shipper


@dataclass(frozen=True)
class Instruction:
    id: str
    order_id: str
    slot: str


@dataclass(frozen=True)
class Result:
    outcome: str = "delivered"

    def to_dict(self) -> dict[str, Any]:
        return {"outcome": self.outcome}


class LongPollClient:
    """First poll: one instruction. Second poll: held open until ``answer`` is set."""

    def __init__(self) -> None:
        self.polls = 0
        self.answer = threading.Event()
        self.second_poll_open = threading.Event()
        self.acked: list[str] = []
        self.reported: list[str] = []

    def next_instructions(self, wait: float) -> list[Instruction]:
        self.polls += 1
        if self.polls == 1:
            return [Instruction("i1", "o1", "1")]
        self.second_poll_open.set()
        self.answer.wait(10)
        return [Instruction("i2", "o2", "1")]

    def ack(self, instruction_id: str, order_id: str = "") -> None:
        self.acked.append(instruction_id)

    def report_result(self, order_id: str, outcome: str, details: Any, **_: Any) -> None:
        self.reported.append(order_id)


class SlowMachine:
    def __init__(self) -> None:
        self.turning = threading.Event()
        self.finish = threading.Event()
        self.vends: list[str] = []

    def dispense(self, slot: str, vend_id: str) -> Result:
        self.vends.append(vend_id)
        self.turning.set()
        self.finish.wait(10)
        return Result()


def start(tmp_path: Path) -> tuple[Shipper, LongPollClient, SlowMachine, threading.Event,
                                   threading.Thread]:
    client, machine = LongPollClient(), SlowMachine()
    shipper = Shipper(client, machine, tmp_path / "ships.db")
    stop = threading.Event()
    runner = threading.Thread(target=shipper.run, args=(stop,), daemon=True)
    runner.start()
    return shipper, client, machine, stop, runner


def test_shutdown_waits_for_a_vend_in_progress(tmp_path: Path) -> None:
    shipper, client, machine, stop, runner = start(tmp_path)
    assert machine.turning.wait(5)
    stop.set()
    idle = threading.Thread(target=shipper.wait_idle)
    idle.start()
    idle.join(0.3)
    assert idle.is_alive()  # the motor is turning: shutdown waits for the result
    machine.finish.set()
    idle.join(5)
    runner.join(5)
    assert not idle.is_alive() and not runner.is_alive()
    assert client.acked == ["i1"] and client.reported == ["o1"]
    assert client.polls == 1  # stopped: no new long poll after the vend
    shipper.close()


@pytest.mark.timeout(20)
def test_shutdown_does_not_wait_out_an_open_long_poll(tmp_path: Path) -> None:
    shipper, client, machine, stop, runner = start(tmp_path)
    machine.finish.set()
    assert client.second_poll_open.wait(5)  # i1 shipped; the shipper waits for more
    stop.set()
    shipper.wait_idle()  # returns at once although the poll is still open
    assert runner.is_alive()
    client.answer.set()  # the backend answers the abandoned poll with i2
    runner.join(5)
    assert not runner.is_alive()
    assert client.acked == ["i1"] and len(machine.vends) == 1  # i2: not acked, not shipped
    shipper.close()
