"""A fault-injecting line for in-process simulators: both directions, seeded, counted.

Replies (device -> host) can be dropped, have a bit flipped, lose a byte, be cut short, be
duplicated, arrive late (after the host gave up: in front of the reply to its next command,
which is what a slow device does to a host that timed out), or come
with garbage around them; commands (host -> device) can be lost or corrupted. Device resets
are the caller's (each simulator has its own power cycle). Everything is counted per kind so
a run can say which faults it survived.

**Unplug mid-read** (``unplug_rate``, apart from ``rate``: unplugs are rare and the caller
plugs back): a reply is cut at a random byte, the host reads that much, and the port is gone:
every later read or write of that transport raises :class:`DisconnectedError` (what an
unplugged USB-serial adapter does). The device keeps its power and state. Plugging back is
a new transport on the same simulator (``faulty(plan)(simulator)``, e.g. from the opener the
machine layer reopens with).
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

from vendhw.errors import DisconnectedError
from vendhw.transport import SimTransport

UNPLUG = "unplug"
REPLY_FAULTS = ("drop", "flip", "drop_byte", "truncate", "duplicate", "late", "garbage")
COMMAND_FAULTS = ("lose_command", "corrupt_command")


class FaultPlan:
    """Which fault hits the next reply or command, from a seeded PRNG at a given rate."""

    def __init__(self, seed: int, rate: float, *, replay: bool = False) -> None:
        self.rng = random.Random(seed)
        self.rate = rate
        self.replay = replay
        """Also answer with an earlier valid reply (valid but unexpected, out of order: not a
        line fault but a confused device; used by the fuzz targets)."""
        self.history: list[bytes] = []
        self.counts: Counter[str] = Counter()
        self.enabled = True
        self.late: list[bytes] = []
        """Replies held back: they arrive right after the host's next command, before its
        own reply (the host gave up on them; no real time passes)."""
        self.unplug_rate = 0.0
        """Chance per reply that the port is unplugged in the middle of it."""
        self.unplug_due = False
        """A reply was cut by an unplug: the transport reading it dies after that part."""

    def pick(self, kinds: tuple[str, ...]) -> str | None:
        if not self.enabled or self.rng.random() >= self.rate:
            return None
        kind = self.rng.choice(kinds)
        self.counts[kind] += 1
        return kind

    def noise(self) -> bytes:
        return bytes(self.rng.randrange(256) for _ in range(self.rng.randrange(1, 12)))


class FaultyLine:
    """Stands in for a simulator's ``line`` (what the scheduler applies to every reply)."""

    def __init__(self, plan: FaultPlan) -> None:
        self.plan = plan

    def apply(self, replies: list[tuple[float, bytes]]) -> list[tuple[float, bytes]]:
        out: list[tuple[float, bytes]] = []
        rng = self.plan.rng
        for delay, data in replies:
            if not data:
                continue
            if self.plan.enabled and self.plan.unplug_rate and not self.plan.unplug_due \
                    and rng.random() < self.plan.unplug_rate:
                # Unplugged mid-read: this much of the reply arrives, nothing after it.
                self.plan.counts[UNPLUG] += 1
                self.plan.unplug_due = True
                self.plan.late.clear()  # held replies were in the adapter that went away
                cut = rng.randrange(len(data))
                if cut:
                    out.append((delay, bytes(data[:cut])))
                return out
            kind = self.plan.pick(REPLY_FAULTS + (("replay",) if self.plan.replay else ()))
            buf = bytearray(data)
            self.plan.history = [*self.plan.history[-15:], bytes(data)]
            if kind == "replay":
                buf = bytearray(rng.choice(self.plan.history))
            if kind == "drop":
                continue
            if kind == "flip":
                buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
            elif kind == "drop_byte":
                del buf[rng.randrange(len(buf))]
            elif kind == "truncate":
                del buf[rng.randrange(len(buf)):]
            elif kind == "garbage":
                where = rng.randrange(3)
                if where == 0:
                    buf[:0] = self.plan.noise()
                elif where == 1:
                    buf += self.plan.noise()
                else:
                    buf = bytearray(self.plan.noise())
            elif kind == "late":
                self.plan.late.append(bytes(buf))
                continue
            out.append((delay, bytes(buf)))
            if kind == "duplicate":
                out.append((delay, bytes(buf)))
        return out

    def set(self, name: str, value: Any) -> None:  # the simulators' set_fault falls back here
        raise KeyError(name)


class FaultyTransport(SimTransport):
    """A SimTransport whose commands may be lost or corrupted on the way to the device, and
    whose port may be unplugged mid-read (then it is dead for good: plug back is a new one)."""

    plan: FaultPlan
    _order = -(10**12)
    unplugged = False

    def _gone(self) -> DisconnectedError:
        return DisconnectedError(f"{self.url}: device went away (unplugged mid-read)")

    def _read_some(self, timeout: float) -> bytes:
        if self.unplugged:
            raise self._gone()
        if self.plan.unplug_due:
            self.plan.unplug_due = False
            self.unplugged = True
            data = super()._read_some(0.0)  # the part of the reply that made it
            if data:
                return data
            raise self._gone()
        return super()._read_some(timeout)

    def _write(self, data: bytes) -> None:
        if self.unplugged:
            raise self._gone()
        kind = self.plan.pick(COMMAND_FAULTS) if data else None
        if kind == "lose_command":
            data = b""
        if kind == "corrupt_command":
            buf = bytearray(data)
            buf[self.plan.rng.randrange(len(buf))] ^= 1 << self.plan.rng.randrange(8)
            data = bytes(buf)
        held, self.plan.late = self.plan.late, []
        super()._write(data)
        with self._cond:
            for data in held:  # due before the reply to this command, in their order
                self._order += 1
                heapq.heappush(self._scheduler._queue, (float("-inf"), self._order, data))
            self._cond.notify_all()


Fate = Callable[[bytes], "str | bytes | None"]


class ScriptedLine:
    """A simulator's line whose faults are chosen, not drawn: ``fate(reply)`` says what
    becomes of each reply: ``"drop"`` (lost), ``"late"`` (it arrives after the host gave up,
    in front of the reply to its next command), other bytes (damaged on the way) or None
    (on time)."""

    def __init__(self, plan: FaultPlan, fate: Fate) -> None:
        self.plan = plan
        self.fate = fate

    def apply(self, replies: list[tuple[float, bytes]]) -> list[tuple[float, bytes]]:
        out = []
        for delay, data in replies:
            fate = self.fate(data) if data else None
            if fate == "late":
                self.plan.late.append(data)
            elif isinstance(fate, bytes):
                out.append((delay, fate))
            elif fate != "drop":
                out.append((delay, data))
        return out

    def set(self, name: str, value: Any) -> None:
        raise KeyError(name)


def scripted(simulator: Any, fate: Fate) -> FaultyTransport:
    """A transport to ``simulator`` whose replies meet the fates ``fate`` gives them (no
    random fault)."""
    plan = FaultPlan(0, 0.0)
    transport = FaultyTransport(simulator)
    transport.plan = plan
    simulator.line = ScriptedLine(plan, fate)
    return transport


def fates(*script: str | bytes | None, match: bytes) -> Fate:
    """For :func:`scripted`: the fate of each successive reply containing ``match`` (then
    on time); other replies on time."""
    left = list(script)

    def fate(reply: bytes) -> str | bytes | None:
        if match in reply and left:
            return left.pop(0)
        return None

    return fate


def faulty(plan: FaultPlan) -> Any:
    """A transport factory for the rigs: the simulator's line and the host's writes faulty."""

    def make(simulator: Any) -> FaultyTransport:
        simulator.line = FaultyLine(plan)
        transport = FaultyTransport(simulator)
        transport.plan = plan
        return transport

    return make
