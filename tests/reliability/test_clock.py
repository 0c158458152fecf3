"""A machine whose clock is wrong (no RTC battery: 1970; an NTP jump) still gets in: the client
learns the backend's time from a stale-timestamp refusal and signs again, once."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest

from vendhw.client import BackendClient
from vendhw.client.errors import AuthenticationError
from vendhw.testing.backend import BASE_URL, InProcessServer


@pytest.fixture
def server() -> Iterator[InProcessServer]:
    srv = InProcessServer()
    srv.add_machine("m1", slots={"1": ("tea", 500)})
    yield srv
    srv.close()


class Clock:
    def __init__(self, now: float) -> None:
        self.value = now

    def __call__(self) -> float:
        return self.value


@pytest.mark.parametrize("skew", [-1_700_000_000.0, -3600.0, 86_400.0 * 30])
def test_a_machine_with_a_wrong_clock_gets_in(server: InProcessServer, skew: float) -> None:
    clock = Clock(server.clock.now() + skew)  # 1970, an hour slow, a month fast
    seen: list[int] = []

    def count(response: httpx.Response) -> None:
        seen.append(response.status_code)

    server.http.event_hooks["response"] = [count]
    client = server.client(clock=clock, retries=0)
    try:
        assert client.catalogue()["slots"][0]["slot"] == "1"
        assert seen == [401, 200]  # one refusal, one corrected attempt
        order = client.create_order("1")  # the offset stays learned: no more refusals
        assert seen == [401, 200, 201] and order.state
    finally:
        client.close()


def test_a_clock_jump_after_the_offset_was_learned_is_learned_again(
        server: InProcessServer) -> None:
    clock = Clock(0.0)
    client = server.client(clock=clock, retries=0)
    try:
        client.catalogue()
        clock.value = server.clock.now() + 5000  # NTP synced: the local clock jumped forward
        assert client.catalogue()["slots"]
    finally:
        client.close()


def test_the_date_header_is_enough_and_a_refusal_never_loops(tmp_path: Path) -> None:
    """A backend (or proxy) that only sends ``Date``; and one whose clock stays refused."""
    now = datetime(2026, 12, 5, 8, 0, tzinfo=timezone.utc)
    stamps: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        stamp = int(request.headers["X-Vendhw-Timestamp"])
        stamps.append(stamp)
        if abs(stamp - now.timestamp()) > 300:
            return httpx.Response(401, json={"error": "stale_timestamp", "detail": "clock"},
                                  headers={"Date": format_datetime(now, usegmt=True)})
        return httpx.Response(200, json={"slots": []})

    http = httpx.Client(transport=httpx.MockTransport(handler))
    client = BackendClient(BASE_URL, "m1", "s" * 32, http=http, retries=0, backoff=0.0,
                           clock=lambda: 12.0, outbox=tmp_path / "outbox.db")
    assert client.catalogue() == {"slots": []}
    assert stamps[0] == 12 and abs(stamps[1] - now.timestamp()) <= 1

    def always_stale(request: httpx.Request) -> httpx.Response:
        stamps.append(int(request.headers["X-Vendhw-Timestamp"]))
        return httpx.Response(401, json={"error": "stale_timestamp"},
                              headers={"Date": format_datetime(now, usegmt=True)})

    stamps.clear()
    client.http = httpx.Client(transport=httpx.MockTransport(always_stale))
    with pytest.raises(AuthenticationError):
        client.catalogue()
    assert len(stamps) == 1  # the offset already matches the Date: no second attempt
    client.close()


# --- journals do not depend on the wall clock going forward -------------------------------


class BackwardsTime:
    """time.time() that goes backwards a day at every call (NTP, a dead RTC battery)."""

    def __init__(self) -> None:
        self.value = 2_000_000_000.0

    def __call__(self) -> float:
        self.value -= 86_400.0
        return self.value


def test_journals_keep_their_order_when_the_clock_goes_backwards(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time as time_module

    from vendhw.agent.shipper import Shipper
    from vendhw.devices.cash import CashEvent, CashEventKind
    from vendhw.machine.cash import CashJournal
    from vendhw.machine.journal import VendJournal

    monkeypatch.setattr(time_module, "time", BackwardsTime())
    vends = VendJournal(tmp_path / "vends.db")
    for i in range(4):
        vends.begin(f"v{i}", board="b", slot=str(i + 1), motor=i + 1, drop_sensor=False,
                    sequence_range=(1, 255))
    assert [r.vend_id for r in vends.in_flight("b")] == ["v0", "v1", "v2", "v3"]
    assert [r.vend_id for r in vends.history(10, "b")] == ["v3", "v2", "v1", "v0"]
    seqs = [r.seq for r in vends.in_flight("b")]
    assert len(set(seqs)) == 4  # numbers come from the sequence table, not the clock
    vends.close()

    cash = CashJournal(tmp_path / "cash.db")
    for i in range(3):
        cash.record(CashEvent(CashEventKind.CREDIT, "d", 100, "EUR", event_id=f"e{i}"))
        cash.spend(50, f"sale:{i}")
    assert [e["event_id"] for e in cash.events()] == ["e2", "e1", "e0"]
    assert [r for r, _ in cash.unsettled("sale:")] == ["sale:0", "sale:1", "sale:2"]
    cash.close()

    class Client:
        def ack(self, instruction_id: str, order_id: str) -> None:
            raise ConnectionError("backend down after the journal write")

    shipper = Shipper(Client(), object(), tmp_path / "ships.db")

    class Ins:
        def __init__(self, i: int) -> None:
            self.id, self.order_id, self.slot = f"i{i}", f"o{i}", "1"

    for i in range(3):
        with pytest.raises(ConnectionError):
            shipper.process(Ins(i))  # type: ignore[arg-type]
    assert [row[0] for row in shipper.unfinished()] == ["i0", "i1", "i2"]
    shipper.close()
