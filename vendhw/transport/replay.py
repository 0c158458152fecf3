"""``replay://capture.jsonl``: play a recorded session back to host code.

A capture (``open_transport(url, capture=PATH)`` or ``--trace`` tooling) holds every byte with
its time and direction. Replaying it feeds the recorded device bytes (``rx``) to whatever host
code reads from this transport, in order, and checks what the host writes against the
recorded ``tx`` bytes: a field capture of a misbehaving device becomes a regression test that
needs no hardware. ``strict=True`` turns a divergence into a ProtocolError.
"""

from __future__ import annotations

import collections
import json
import logging
from pathlib import Path
from typing import Any

from vendhw.errors import ConfigurationError, ProtocolError
from vendhw.transport.base import Transport

log = logging.getLogger(__name__)


class ReplayTransport(Transport):
    """Serve a JSON Lines capture: device bytes are read back, host bytes are checked."""

    def __init__(self, url: str, *, strict: bool = False, **options: Any) -> None:
        path = Path(url.split("://", 1)[1])
        if not path.is_file():
            raise ConfigurationError(f"{url}: no capture file {path}")
        super().__init__(url, trace=options.pop("trace", None))
        self.strict = strict
        self._records: collections.deque[tuple[str, bytes]] = collections.deque()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                self._records.append((record["dir"], bytes.fromhex(record["hex"])))
            except (ValueError, KeyError) as exc:
                raise ConfigurationError(f"{path}:{number}: not a capture record ({exc})") from None
        self.mismatches: list[tuple[bytes, bytes]] = []
        """(expected, written) pairs where the host diverged from the recording."""

    @property
    def remaining(self) -> int:
        """Records not yet replayed."""
        return len(self._records)

    def _read_some(self, timeout: float) -> bytes:
        out = b""
        while self._records and self._records[0][0] == "rx":
            out += self._records.popleft()[1]
        return out

    def _write(self, data: bytes) -> None:
        expected = b""
        while self._records and self._records[0][0] == "tx" and len(expected) < len(data):
            expected += self._records.popleft()[1]
        if expected != data:
            self.mismatches.append((expected, data))
            message = (f"{self.url}: host wrote {data.hex(' ').upper()}, the capture has "
                       f"{expected.hex(' ').upper() or 'nothing'}")
            if self.strict:
                raise ProtocolError(message)
            log.warning(message)

    def _close(self) -> None:
        self._records.clear()
