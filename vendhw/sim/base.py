"""Device simulators: sans-I/O responders that speak the real wire protocol.

A :class:`Simulator` gets bytes (and the monotonic time) and answers with a list of
``(delay_s, bytes)`` replies; a board that is bus master also produces output on its own
clock through :meth:`Simulator.tick`. The :class:`Scheduler` turns those into a byte stream
due at given times, with line faults applied, and is shared by the two runners: the
in-process ``sim://`` transport and the pty server behind ``vendhw sim NAME``.

Simulators reuse the framers of :mod:`vendhw.framing`, never a host engine, so a bug in a host
engine cannot hide behind the same bug in its simulator.
"""

from __future__ import annotations

import heapq
import itertools
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from vendhw.options import option_flag

Reply = tuple[float, bytes]
"""``(delay in seconds from now, bytes)`` a simulator wants to send."""


LINE_FAULTS: tuple[str, ...] = ("drop_byte", "flip_bit", "delay", "silent", "garbage")
"""Faults of the line, which every simulator takes."""


@dataclass
class LineFaults:
    """Faults of the line itself, applied to whatever any simulator sends.

    Counters (``drop_byte``, ``flip_bit``) apply to that many of the next replies; device
    faults (jam, empty slot, fraud...) belong to each simulator.
    """

    drop_byte: int = 0
    """Drop one byte from each of the next N replies."""
    flip_bit: int = 0
    """Flip one bit in each of the next N replies."""
    delay: float = 0.0
    """Extra seconds before every reply (a slow device)."""
    silent: bool = False
    """Answer nothing at all (a dead or disconnected device)."""
    garbage: bytes = b""
    """Bytes sent once before the next reply (line noise)."""
    rng: random.Random = field(default_factory=lambda: random.Random(0x5EED))

    def apply(self, replies: list[Reply]) -> list[Reply]:
        if self.silent:
            return []
        out: list[Reply] = []
        for delay, data in replies:
            if not data:
                continue
            buf = bytearray(data)
            if self.drop_byte > 0:
                self.drop_byte -= 1
                del buf[self.rng.randrange(len(buf))]
            if self.flip_bit > 0 and buf:
                self.flip_bit -= 1
                pos = self.rng.randrange(len(buf))
                buf[pos] ^= 1 << self.rng.randrange(8)
            if self.garbage:
                buf[:0], self.garbage = self.garbage, b""
            out.append((delay + self.delay, bytes(buf)))
        return out

    def set(self, name: str, value: Any) -> None:
        """Set a fault by name (``"silent"``, ``"delay"``...) from a CLI or URL option."""
        if name not in ("drop_byte", "flip_bit", "delay", "silent", "garbage"):
            raise KeyError(name)
        current = getattr(self, name)
        if isinstance(current, bool):
            if not isinstance(value, bool):
                value = option_flag(value)
        elif isinstance(current, int):
            value = int(value)
        elif isinstance(current, float):
            value = float(value)
        elif isinstance(current, bytes) and isinstance(value, str):
            value = bytes.fromhex(value)
        setattr(self, name, value)


class Simulator(ABC):
    """One simulated device. Subclasses set the class attributes and implement receive."""

    name: ClassVar[str]
    kind: ClassVar[str]
    """``"board"`` or ``"cash"``."""
    protocol: ClassVar[str]
    """The framer name it speaks."""
    description: ClassVar[str] = ""
    baudrate: ClassVar[int | None] = None
    device_faults: ClassVar[tuple[str, ...]] = ()
    """Names accepted by :meth:`set_fault` beyond the line faults."""

    def __init__(self, **options: Any) -> None:
        if options:
            from vendhw.errors import ConfigurationError

            raise ConfigurationError(
                f"{self.name}: unknown option {sorted(options)[0]!r}; options: "
                f"{', '.join(self.option_names()) or 'none'}; faults: "
                f"{', '.join(LINE_FAULTS + tuple(self.device_faults))}")
        self.line = LineFaults()
        self.options = options

    @classmethod
    def option_annotations(cls) -> dict[str, str]:
        """Option name -> its annotation text, from every constructor in the MRO."""
        import inspect

        out: dict[str, str] = {}
        for klass in cls.__mro__:
            init = klass.__dict__.get("__init__")
            if init is None:
                continue
            for name, param in inspect.signature(init).parameters.items():
                if param.kind is inspect.Parameter.KEYWORD_ONLY:
                    out.setdefault(name, str(param.annotation))
        return out

    @classmethod
    def option_names(cls) -> list[str]:
        """The keyword options this simulator's constructors take (for errors and --help)."""
        import inspect

        names: list[str] = []
        for klass in cls.__mro__:
            init = klass.__dict__.get("__init__")
            if init is None:
                continue
            for name, param in inspect.signature(init).parameters.items():
                if param.kind is inspect.Parameter.KEYWORD_ONLY and name not in names:
                    names.append(name)
        return names

    @abstractmethod
    def receive(self, data: bytes, now: float) -> list[Reply]:
        """Bytes from the host arrived at ``now``; return the replies to send."""

    def tick(self, now: float) -> list[Reply]:
        """Output on the device's own clock (a polling bus master); default none."""
        return []

    def next_tick(self) -> float | None:
        """Monotonic time at which :meth:`tick` wants to run next, or ``None``."""
        return None

    def set_fault(self, name: str, value: Any = True) -> None:
        """Switch a fault on (or off with ``False``): a line fault or a device fault."""
        try:
            self.line.set(name, value)
        except KeyError:
            raise KeyError(
                f"{self.name}: unknown fault {name!r}; line faults: drop_byte, flip_bit, delay, "
                f"silent, garbage; device faults: {', '.join(self.device_faults) or 'none'}"
            ) from None

    @classmethod
    def info(cls) -> dict[str, Any]:
        """The ``vendhw sim --list --json`` entry."""
        return {"name": cls.name, "kind": cls.kind, "protocol": cls.protocol,
                "description": cls.description}


class Scheduler:
    """Turns a simulator's replies into bytes due at given monotonic times (no I/O, no clock)."""

    def __init__(self, simulator: Simulator) -> None:
        self.simulator = simulator
        self._queue: list[tuple[float, int, bytes]] = []
        self._seq = itertools.count()

    def _push(self, replies: list[Reply], now: float) -> None:
        for delay, data in self.simulator.line.apply(replies):
            heapq.heappush(self._queue, (now + max(delay, 0.0), next(self._seq), data))

    def on_input(self, data: bytes, now: float) -> None:
        """The host wrote ``data`` at ``now``."""
        self._push(self.simulator.receive(data, now), now)

    def due(self, now: float) -> bytes:
        """Everything the device has sent by ``now`` (running its clock first)."""
        wake = self.simulator.next_tick()
        if wake is not None and wake <= now:
            # Once per call: a bus master that fell behind (a busy host, a suspended process)
            # polls again now, it does not replay every poll it missed in a burst.
            self._push(self.simulator.tick(now), now)
        out = bytearray()
        while self._queue and self._queue[0][0] <= now:
            out += heapq.heappop(self._queue)[2]
        return bytes(out)

    def next_deadline(self) -> float | None:
        """When something will next become due (a queued reply or the device's clock)."""
        times = [t for t in (self._queue[0][0] if self._queue else None,
                             self.simulator.next_tick()) if t is not None]
        return min(times) if times else None
