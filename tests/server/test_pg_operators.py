"""Operator commands: codes list/revoke, order refund, orders export (CSV / JSON lines)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from vendhw.cli.backend import backend as backend_cli
from vendhw.testing.backend import InProcessServer


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(backend_cli, list(args))
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def _lines(out: str) -> list[dict[str, Any]]:
    """A --json list: one object per line."""
    return [json.loads(line) for line in out.splitlines()]


def test_codes_list_and_revoke(tmp_path: Path) -> None:
    db = str(tmp_path / "b.db")
    server = InProcessServer(tmp_path / "b.db")
    try:
        server.add_machine("m1", slots={"A1": ("cola", 350)})
        code_rc, out = _cli("codes", "create", "--product", "cola", "--count", "3", "--db", db,
                            "--json")
        assert code_rc == 0
        created = json.loads(out)["codes"]
        # One of them is being used right now.
        server.client("m1").redeem_code(created[0]["code"])
        rc, out = _cli("codes", "list", "--db", db, "--json")
        assert rc == 0
        listed = {c["id"]: c for c in _lines(out)}
        assert set(listed) == {c["id"] for c in created}
        assert listed[created[0]["id"]]["status"] == "reserved"
        assert all("code" not in c for c in listed.values())  # digits are never shown again
        rc, out = _cli("codes", "revoke", str(created[1]["id"]), "--note", "lost", "--db", db,
                       "--json")
        assert rc == 0 and _lines(out)[0]["status"] == "revoked"
        rc, out = _cli("codes", "revoke", str(created[0]["id"]), "--db", db, "--json")
        assert rc == 1 and _lines(out)[0]["error"] == "code_in_use"
        rc, out = _cli("codes", "list", "--status", "revoked", "--db", db, "--json")
        assert [c["id"] for c in _lines(out)] == [created[1]["id"]]
        # A revoked code no longer ships anything.
        response = server.client("m1")
        try:
            response.redeem_code(created[1]["code"])
            raised = None
        except Exception as exc:  # BackendError
            raised = exc
        assert raised is not None and getattr(raised, "code", "") == "code_revoked"
        # The operator API has the same.
        http = server.operator("GET", "/operator/v1/codes", params={"status": "active"})
        assert [c["id"] for c in http.json()["codes"]] == [created[2]["id"]]
        http = server.operator("POST", f"/operator/v1/codes/{created[2]['id']}/revoke",
                               json={"note": "x"})
        assert http.status_code == 200 and http.json()["status"] == "revoked"
        http = server.operator("POST", "/operator/v1/codes/999999/revoke", json={})
        assert http.status_code == 404
    finally:
        server.close()


def test_refund_and_export(tmp_path: Path) -> None:
    db = str(tmp_path / "b.db")
    server = InProcessServer(tmp_path / "b.db")
    try:
        server.add_machine("m1", slots={"A1": ("cola", 350)})
        client = server.client("m1")
        paid = client.create_order("A1")
        server.pay(paid.id, notify=1)
        unpaid = client.create_order("A1")
        rc, out = _cli("orders", "refund", unpaid.id, "--db", db, "--json")
        assert rc != 0 and "awaiting_payment" in out
        rc, out = _cli("orders", "refund", paid.id, "--note", "machine offline", "--db", db,
                       "--json")
        assert rc == 0, out
        assert json.loads(out)["state"] == "refunded"
        rc, out = _cli("orders", "export", "--db", db)
        assert rc == 0
        rows = list(csv.DictReader(io.StringIO(out)))
        assert {r["id"]: r["state"] for r in rows} == {paid.id: "refunded",
                                                       unpaid.id: "awaiting_payment"}
        assert rows[0]["amount"] == "3.50"  # major units (docs/backend-operators.md)
        rc, out = _cli("orders", "export", "--state", "refunded", "--json", "--db", db)
        assert [json.loads(line)["id"] for line in out.splitlines()] == [paid.id]
    finally:
        server.close()


def test_machines_list_shows_online_and_what_they_sell(tmp_path: Path) -> None:
    db = str(tmp_path / "b.db")
    server = InProcessServer(tmp_path / "b.db")  # its FakeClock starts at the real time
    try:
        server.add_machine("m1", slots={"A1": ("cola", 350), "B2": ("chips", 500)})
        server.add_machine("m2", slots={"A1": ("cola", 300)})
        server.client("m1").catalogue()  # m1 makes a signed request (its last_seen is set)
        rc, out = _cli("machines", "list", "--db", db, "--json")
        assert rc == 0
        rows = {r["id"]: r for r in _lines(out)}
        assert rows["m1"]["last_seen"] is not None and rows["m2"]["last_seen"] is None
        assert rows["m2"]["online"] is False
        assert rows["m1"]["online"] is True
        assert rows["m1"]["slots"] == 2 and rows["m2"]["slots"] == 1  # show lists them
        rc, out = _cli("machines", "list", "--db", db)
        assert rc == 0 and "m1" in out and "open orders" in out
    finally:
        server.close()
