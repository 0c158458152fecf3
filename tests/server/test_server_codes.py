"""Pickup and lottery codes: reserve on verify, consume on delivery, release on failure,
no reuse, and no brute force."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from vendhw.cli.backend import backend as backend_cli
from vendhw.client import BackendClient, BackendError, RateLimitedError
from vendhw.server.models import Code
from vendhw.testing.backend import InProcessServer


def make_codes(server: InProcessServer, count: int = 1, **extra: object) -> list[str]:
    response = server.operator("POST", "/operator/v1/codes",
                               json={"product": "cola", "count": count, "valid_for": "2h",
                                     **extra})
    assert response.status_code == 201, response.text
    return [item["code"] for item in response.json()["codes"]]


def code_status(server: InProcessServer, code_id: int) -> str:
    with server.backend.db.tx() as s:
        row = s.get(Code, code_id)
        assert row is not None
        return row.status


def wrong_code(right: str, prefix: str | None = None) -> str:
    prefix = prefix if prefix is not None else right[:4]
    tail = right[4:]
    wrong = str((int(tail) + 1) % 10 ** len(tail)).zfill(len(tail))
    return prefix + wrong


def test_codes_are_numeric_unique_and_stored_only_as_hashes(server: InProcessServer,
                                                            client: BackendClient) -> None:
    codes = make_codes(server, 50)
    assert len(set(codes)) == 50
    assert all(c.isdigit() and len(c) == 10 for c in codes)
    with server.backend.db.tx() as s:
        stored = s.execute(select(Code.code_hash, Code.selector)).all()
    assert len(stored) == 50
    assert not any(row[0] in codes for row in stored)
    assert sorted(row[1] for row in stored) == sorted(c[:4] for c in codes)


def test_code_is_reserved_then_consumed_and_never_reused(server: InProcessServer,
                                                         client: BackendClient) -> None:
    [code] = make_codes(server)
    redemption = client.redeem_code(code[:3] + " " + code[3:7] + "-" + code[7:])
    order = redemption.order
    assert (order.kind, order.state, order.slot, order.product_id) == ("code", "paid", "A1",
                                                                       "cola")
    assert redemption.instruction is not None and redemption.instruction.order_id == order.id
    assert client.next_instructions(wait=0) == []  # delivered in the answer already
    server.clock.advance(10)  # type: ignore[attr-defined]
    [pushed] = client.next_instructions(wait=0)  # not acknowledged: the channel repeats it
    assert (pushed.id, pushed.delivery) == (redemption.instruction.id, 2)
    with server.backend.db.tx() as s:
        code_id = s.execute(select(Code.id)).scalar_one()
    assert code_status(server, code_id) == "reserved"
    client.ack(pushed.id)
    receipt = client.report_result(order.id, "delivered")
    assert receipt.order is not None and receipt.order.state == "delivered"
    assert code_status(server, code_id) == "consumed"
    with pytest.raises(BackendError) as info:
        client.redeem_code(code)
    assert (info.value.status, info.value.code) == (409, "code_used")


def test_failed_vend_releases_the_code(server: InProcessServer, client: BackendClient) -> None:
    [code] = make_codes(server)
    first = client.redeem_code(code)
    client.report_result(first.order.id, "empty")
    assert server.state(first.order.id) == "refunded"
    second = client.redeem_code(code)  # usable again
    assert second.order.id != first.order.id
    client.report_result(second.order.id, "delivered")
    with pytest.raises(BackendError, match="code_used"):
        client.redeem_code(code)


def test_unknown_outcome_keeps_the_code_reserved_until_resolved(
        server: InProcessServer, client: BackendClient) -> None:
    secret = server.add_machine("m2", slots={"B1": ("cola", 350)})
    assert secret
    other = server.client("m2")
    [code] = make_codes(server)
    redemption = client.redeem_code(code)
    assert client.redeem_code(code).order.id == redemption.order.id  # same machine retrying
    with pytest.raises(BackendError, match="code_in_use"):
        other.redeem_code(code)
    client.report_result(redemption.order.id, "unknown")
    assert server.state(redemption.order.id) == "needs_review"
    with pytest.raises(BackendError, match="code_in_use"):
        other.redeem_code(code)
    server.operator("POST", f"/operator/v1/orders/{redemption.order.id}/resolve",
                    json={"decision": "refund", "note": "nothing dropped"})
    assert server.state(redemption.order.id) == "refunded"
    assert other.redeem_code(code).order.state == "paid"  # released, usable elsewhere


def test_expired_revoked_foreign_and_unstocked_codes(server: InProcessServer,
                                                     client: BackendClient) -> None:
    server.add_machine("m2", slots={"B1": ("chips", 500)})
    [code] = make_codes(server)
    [bound] = make_codes(server, machine="m2")
    other = server.client("m2")
    with pytest.raises(BackendError) as info:
        other.redeem_code(code)  # m2 does not sell cola
    assert info.value.code == "product_unavailable"
    with pytest.raises(BackendError) as info:
        client.redeem_code(bound)  # bound to m2: looks like any wrong code
    assert (info.value.status, info.value.code) == (404, "code_invalid")
    server.clock.advance(2 * 3600 + 1)  # type: ignore[attr-defined]
    with pytest.raises(BackendError) as info:
        client.redeem_code(code)
    assert (info.value.status, info.value.code) == (410, "code_expired")
    with pytest.raises(BackendError) as info:
        client.redeem_code("12ab")
    assert (info.value.status, info.value.code) == (400, "code_malformed")


def test_guessing_locks_the_prefix_then_the_keypad(server: InProcessServer,
                                                   client: BackendClient) -> None:
    [code] = make_codes(server)
    for attempt in range(4):
        with pytest.raises(BackendError) as info:
            client.redeem_code(wrong_code(code))
        assert info.value.code == "code_invalid"
        assert info.value.body["attempts_left"] == 4 - attempt
    with pytest.raises(RateLimitedError) as locked:
        client.redeem_code(wrong_code(code))
    assert locked.value.code == "code_locked" and locked.value.retry_after == 900
    with pytest.raises(RateLimitedError):  # even the right code, while locked
        client.redeem_code(code)
    server.clock.advance(901)  # type: ignore[attr-defined]
    assert client.redeem_code(code).order.state == "paid"

    # Spreading guesses over prefixes hits the per-machine limit (20) instead.
    refused = 0
    for i in range(25):
        try:
            client.redeem_code(f"{(i * 7919) % 10000:04d}000000")
        except RateLimitedError as exc:
            assert exc.code in ("keypad_locked", "code_locked")
            refused += 1
        except BackendError as exc:
            assert exc.code == "code_invalid"
    assert refused >= 5
    with pytest.raises(RateLimitedError) as info:
        client.redeem_code("0000000000")
    assert info.value.code == "keypad_locked"


def test_codes_cli_prints_codes_that_redeem(server: InProcessServer, client: BackendClient,
                                            tmp_path: Path) -> None:
    runner = CliRunner()
    db = str(server.settings.db_url)
    result = runner.invoke(backend_cli, ["codes", "create", "--product", "cola", "--count",
                                         "3", "--valid-for", "2h", "--kind", "lottery",
                                         "--json", "--db", db])
    assert result.exit_code == 0, result.output
    created = json.loads(result.output)["codes"]
    assert len(created) == 3 and all(c["kind"] == "lottery" for c in created)
    assert client.redeem_code(created[0]["code"]).order.state == "paid"
    plain = runner.invoke(backend_cli, ["codes", "create", "--product", "cola", "--db", db])
    assert plain.exit_code == 0 and plain.stdout.strip().isdigit()
    bad = runner.invoke(backend_cli, ["codes", "create", "--product", "nope", "--db", db])
    assert bad.exit_code != 0 and "nope" in bad.output
