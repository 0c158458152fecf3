"""Server settings, durations and the clock, in one place so tests can replace each.

Nothing here imports FastAPI or SQLAlchemy: the CLI parses options with it before deciding
whether the server extra is even needed.
"""

from __future__ import annotations

import os
import re
import secrets
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from vendhw.errors import ConfigurationError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

DEFAULT_DB_URL = "sqlite:///vendhw-backend.db"

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(text: str | float | int) -> float:
    """Seconds from ``90``, ``"90s"``, ``"500ms"``, ``"2h"`` or ``"1m30s"``.

    One parser for every option and catalogue field, so ``--order-ttl 2s`` and
    ``"valid_for": "2h"`` mean what they say everywhere.
    """
    if isinstance(text, (int, float)):
        if text < 0:
            raise ConfigurationError(f"duration must not be negative: {text}")
        return float(text)
    raw = text.strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(?:\.\d+)?", raw):
        return float(raw)
    pos, total = 0, 0.0
    for match in _PART.finditer(raw):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(raw) or not raw:
        raise ConfigurationError(
            f"not a duration: {text!r} (examples: 90s, 500ms, 2h, 1m30s)")
    return total


class Clock(Protocol):
    """Where the server reads the time; tests pass a clock they can move forward."""

    def now(self) -> float:
        """Unix seconds."""
        ...


class SystemClock:
    """The wall clock: unix seconds from :func:`time.time`."""

    def now(self) -> float:
        return time.time()


class FakeClock:
    """A clock that moves only when told: expiry, backoff and lockouts without sleeping."""

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        """Move forward by ``seconds`` and return the new time."""
        self._now += seconds
        return self._now


@dataclass
class ServerSettings:
    """Everything the backend can be told; every field has a safe, documented default."""

    db_url: str = DEFAULT_DB_URL
    """Any SQLAlchemy URL; SQLite files run in WAL mode with synchronous=FULL."""
    public_url: str = "http://127.0.0.1:8080"
    """Base URL customers' phones and providers reach (sandbox pay page, notify URLs)."""
    internal_url: str | None = None
    """URL the sandbox uses to deliver its notifications over HTTP; None = in process."""
    provider: str = "sandbox"
    """Provider of new orders unless the machine asks for another enabled one."""
    providers: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per-provider options (``[wechat]``, ``[alipay]`` tables of the provider file)."""
    operator_token: str = ""
    """Bearer token of the operator API; generated (and printed by ``serve``) when empty."""
    order_ttl: float = 120.0
    """How long a QR can be paid; after that the order expires and a late payment is refunded."""
    query_interval: float = 2.0
    """First provider query this long after the QR is issued; doubles up to ``query_max``."""
    query_max: float = 30.0
    """Longest gap between two provider queries of one order."""
    late_window: float = 2 * 3600.0
    """How long expired/cancelled orders keep being queried to catch (and refund) late payers."""
    refund_retry: float = 5.0
    """First retry of a refund the provider refused or did not confirm; doubles up to query_max."""
    redeliver_after: float = 10.0
    """An instruction the machine has not acknowledged is delivered again after this long."""
    auth_window: float = 300.0
    """Largest allowed gap between a machine's timestamp and the server's clock."""
    code_digits: int = 10
    """Length of pickup codes: a 4-digit selector and the rest a secret verifier."""
    code_max_failures: int = 5
    """Wrong codes one machine may enter for one code prefix before that prefix locks."""
    machine_max_failures: int = 20
    """Wrong codes one machine may enter (any prefix) before the machine's keypad locks."""
    code_failure_window: float = 900.0
    """Window over which wrong attempts are counted."""
    code_lockout: float = 900.0
    """How long a locked prefix (or keypad) stays locked."""
    max_body: int = 1 << 20
    """Largest request body (bytes) of machine, provider and sandbox routes; refused (413)
    before it is read."""
    max_operator_body: int = 16 << 20
    """Largest operator request body (a fleet's catalogue), checked after the token."""
    idempotency_lease: float = 60.0
    """The last resort for an Idempotency-Key "in progress" whose holder cannot be judged (a
    row from before migration 0004, a server that old, a process without a heartbeat): after
    this long its request is taken for dead and a retry takes the key over. Keys of a
    process with a heartbeat follow that instead (``instance_timeout``)."""
    idempotency_keep: float = 7 * 86400.0
    """How long an answered Idempotency-Key is kept (then purged by the background loop,
    with the expired nonces). A machine retries within minutes, its report outbox within
    its time offline; what runs again after this is idempotent by state (a result, a cash
    sale once per order or reference), so the table no longer grows with every request."""
    instance_heartbeat: float = 1.0
    """How often a serving process renews its ``server_instances`` row (on a thread of its
    own, one small commit per beat)."""
    instance_timeout: float = 5.0
    """A process not seen for this long (its beats stopped: SIGKILL, power cut) is dead: a
    retry takes over the Idempotency-Keys it held. At least twice ``instance_heartbeat``;
    clocks of processes sharing a database must agree far better than this (NTP)."""
    max_long_poll: float = 60.0
    """Longest ``wait`` a long-poll may ask for."""
    run_poller: bool = True
    """Run the provider-query/expiry/refund loop in the app (off for extra workers)."""
    sandbox_secret: str = field(default_factory=lambda: secrets.token_hex(32))
    """Key of the sandbox's notification signature (a fresh one per process by default)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> ServerSettings:
        """Settings from ``VENDHW_BACKEND_*`` variables, then explicit overrides."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        simple = {"DB": "db_url", "PUBLIC_URL": "public_url", "PROVIDER": "provider"}
        for suffix, name in simple.items():
            if f"VENDHW_BACKEND_{suffix}" in env:
                values[name] = env[f"VENDHW_BACKEND_{suffix}"]
        if "VENDHW_OPERATOR_TOKEN" in env:
            values["operator_token"] = env["VENDHW_OPERATOR_TOKEN"]
        durations = {"ORDER_TTL": "order_ttl", "QUERY_INTERVAL": "query_interval",
                     "QUERY_MAX": "query_max", "LATE_WINDOW": "late_window",
                     "REDELIVER_AFTER": "redeliver_after"}
        for suffix, name in durations.items():
            if f"VENDHW_BACKEND_{suffix}" in env:
                values[name] = parse_duration(env[f"VENDHW_BACKEND_{suffix}"])
        if "VENDHW_BACKEND_PROVIDERS" in env:
            values["providers"] = load_provider_file(env["VENDHW_BACKEND_PROVIDERS"])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def ensure_operator_token(self) -> str:
        """The operator token, generating an unguessable one when none was configured."""
        if not self.operator_token:
            self.operator_token = secrets.token_urlsafe(24)
        return self.operator_token


def load_provider_file(path: str | Path) -> dict[str, dict[str, Any]]:
    """Provider options from a TOML file with ``[wechat]`` and ``[alipay]`` tables.

    Values ending in ``_file`` are read from disk here (key PEMs), so a provider receives the
    key text and its tests can pass keys they generated without touching files.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"cannot read provider file {path}: {exc}") from exc
    result: dict[str, dict[str, Any]] = {}
    for name, table in data.items():
        if not isinstance(table, dict):
            raise ConfigurationError(f"{path}: [{name}] must be a table")
        options: dict[str, Any] = {}
        for key, value in table.items():
            if key.endswith("_file") and isinstance(value, str):
                file = (path.parent / value).expanduser()
                try:
                    options[key[: -len("_file")]] = file.read_text(encoding="utf-8")
                except OSError as exc:
                    raise ConfigurationError(f"{path}: {key}: {exc}") from exc
            else:
                options[key] = value
        result[name] = options
    return result


__all__ = [
    "DEFAULT_DB_URL",
    "Clock",
    "FakeClock",
    "ServerSettings",
    "SystemClock",
    "load_provider_file",
    "parse_duration",
]
