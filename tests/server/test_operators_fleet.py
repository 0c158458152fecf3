"""Machines (online, last seen, what they hold) and the orders export (CSV, JSON lines)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from click.testing import CliRunner

from vendhw.cli.backend import backend as backend_cli
from vendhw.client import BackendClient
from vendhw.server.operators import EXPORT_COLUMNS, ONLINE_WINDOW_S, Operators
from vendhw.server.service import iso
from vendhw.testing.backend import InProcessServer


def test_machines_online_last_seen_and_what_they_hold(server: InProcessServer,
                                                      client: BackendClient) -> None:
    server.add_machine("m2", slots={"B1": ("cola", 300)})
    ops = Operators(server.backend)
    before = {m["id"]: m for m in ops.machines()}
    assert before["m2"]["online"] is False and before["m2"]["last_seen"] is None
    assert before["m2"]["seen_ago_s"] is None and before["m2"]["slots"] == 1
    order = client.create_order("A1")  # m1 has now been seen, and holds an open order
    server.pay(order.id)  # ... and a ship instruction it has not acknowledged
    rows = {m["id"]: m for m in ops.machines()}
    m1 = rows["m1"]
    assert set(before["m1"]) <= set(m1)  # the old keys are all still there
    assert {k: m1[k] for k in ("id", "name", "currency")} == {
        k: before["m1"][k] for k in ("id", "name", "currency")}
    assert m1["online"] is True and m1["last_seen"] is not None and m1["seen_ago_s"] == 0
    assert (m1["pending_instructions"], m1["open_orders"], m1["slots"]) == (1, 1, 2)
    assert rows["m2"]["pending_instructions"] == 0 and rows["m2"]["open_orders"] == 0

    detail = ops.machine("m1")
    assert [i["order_id"] for i in detail["instructions"]] == [order.id]
    assert [(o["id"], o["state"]) for o in detail["orders"]] == [(order.id, "paid")]
    assert [s["slot"] for s in detail["slot_list"]] == ["A1", "A2"]

    server.clock.advance(ONLINE_WINDOW_S + 1)  # type: ignore[attr-defined]
    later = {m["id"]: m for m in ops.machines()}["m1"]
    assert later["online"] is False and later["seen_ago_s"] == ONLINE_WINDOW_S + 1
    via_http = server.operator("GET", "/operator/v1/machines/m1")
    assert via_http.status_code == 200 and via_http.json()["pending_instructions"] == 1
    assert server.operator("GET", "/operator/v1/machines/nope").status_code == 404


def test_cli_machines_list_and_show(server: InProcessServer, client: BackendClient,
                                    tmp_path: Path) -> None:
    order = client.create_order("A2")
    server.pay(order.id)
    db = str(tmp_path / "backend.db")
    runner = CliRunner()
    listed = runner.invoke(backend_cli, ["machines", "list", "--json", "--db", db])
    [m1] = [json.loads(line) for line in listed.output.splitlines()]  # one object a line
    assert m1["id"] == "m1" and m1["pending_instructions"] == 1 and m1["open_orders"] == 1
    table = runner.invoke(backend_cli, ["machines", "list", "--db", db])
    assert "open orders" in table.output and "m1" in table.output
    shown = runner.invoke(backend_cli, ["machines", "show", "m1", "--db", db])
    assert shown.exit_code == 0
    assert "A2=chips 5.00 CNY" in shown.output
    assert f"{order.id} paid slot A2 5.00 CNY" in shown.output
    assert "pending instructions: 1" in shown.output
    as_json = runner.invoke(backend_cli, ["machines", "show", "m1", "--json", "--db", db])
    assert json.loads(as_json.output)["orders"][0]["amount"] == 500
    missing = runner.invoke(backend_cli, ["machines", "show", "nope", "--db", db])
    assert missing.exit_code == 1 and missing.output == "Error: no machine 'nope'\n"


def _delivered(server: InProcessServer, client: BackendClient, slot: str) -> str:
    order = client.create_order(slot)
    server.pay(order.id)
    [ship] = client.next_instructions(wait=0)
    client.ack(ship.id, ship.order_id)
    client.report_result(order.id, "delivered", instruction_id=ship.id)
    return order.id


def test_orders_export(server: InProcessServer, client: BackendClient,
                       tmp_path: Path) -> None:
    ops = Operators(server.backend)
    first = _delivered(server, client, "A1")
    ops.refund_part(first, 120, "dented")
    server.clock.advance(3600)  # type: ignore[attr-defined]
    middle = server.clock.now()
    second = _delivered(server, client, "A2")
    server.clock.advance(3600)  # type: ignore[attr-defined]
    unpaid = client.create_order("A1").id

    rows = list(ops.export_orders(batch=2))  # batches: still every order once, in order
    assert [r["id"] for r in rows] == [first, second, unpaid]
    assert (rows[0]["paid"], rows[0]["refunded"], rows[0]["refund_pending"]) == (350, 120, 0)
    assert rows[2]["paid"] is None and rows[2]["state"] == "awaiting_payment"

    db = str(tmp_path / "backend.db")
    runner = CliRunner()
    out = tmp_path / "orders.csv"
    made = runner.invoke(backend_cli, ["orders", "export", "--format", "csv", "--output",
                                       str(out), "--db", db])
    assert made.exit_code == 0 and f"3 order(s) -> {out}" in made.output
    table = list(csv.reader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert tuple(table[0]) == EXPORT_COLUMNS and len(table) == 4
    row = dict(zip(table[0], table[1], strict=True))
    assert (row["id"], row["amount"], row["paid"], row["refunded"], row["currency"]) == (
        first, "3.50", "3.50", "1.20", "CNY")
    assert row["state"] == "delivered" and row["created_at"].endswith("Z")
    assert dict(zip(table[0], table[3], strict=True))["paid"] == ""

    since = iso(middle)
    assert since is not None
    window = runner.invoke(backend_cli, ["orders", "export", "--since", since, "--until",
                                         iso(middle + 1) or "", "--json", "--db", db])
    assert [json.loads(line)["id"] for line in window.output.splitlines()] == [second]
    delivered = runner.invoke(backend_cli, ["orders", "export", "--state", "delivered",
                                            "--format", "jsonl", "--db", db])
    lines = [json.loads(line) for line in delivered.output.splitlines()]
    assert [r["id"] for r in lines] == [first, second] and lines[1]["paid"] == 500
    bad = runner.invoke(backend_cli, ["orders", "export", "--since", "yesterday", "--db", db])
    assert bad.exit_code == 2 and "not an ISO 8601 date or time" in bad.output
    nowhere = runner.invoke(backend_cli, ["orders", "export", "--output",
                                          str(tmp_path / "no" / "such.csv"), "--db", db])
    assert nowhere.exit_code == 1 and nowhere.output.startswith("Error: cannot write ")
    assert "Traceback" not in nowhere.output

    via_http = server.operator("GET", "/operator/v1/exports/orders",
                               params={"state": "delivered"})
    assert via_http.status_code == 200 and via_http.text.splitlines()[0].startswith("id,")
    assert len(via_http.text.splitlines()) == 3
    refused = server.operator("GET", "/operator/v1/exports/orders", params={"state": "x"})
    assert refused.status_code == 422
