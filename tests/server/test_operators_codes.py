"""Codes by batch (list, revoke) and a revoke racing a redeem: only active codes are revoked,
a code in a running vend and a used one are left alone and reported, never both win."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from vendhw.cli.backend import backend as backend_cli
from vendhw.client import BackendClient
from vendhw.server.operators import Operators
from vendhw.server.service import ApiError, Backend
from vendhw.server.settings import ServerSettings
from vendhw.testing.backend import InProcessServer


def test_batches_list_and_revoke(server: InProcessServer, client: BackendClient) -> None:
    backend = server.backend
    ops = Operators(backend)
    batch = backend.create_codes("cola", 4, "1h")
    other = backend.create_codes("chips", 1, "1h")
    batch_id = batch[0]["batch_id"]
    assert batch_id and {c["batch_id"] for c in batch} == {batch_id} != {other[0]["batch_id"]}
    used, in_vend, active, revoked = (c["id"] for c in batch)
    done = backend.redeem_code("m1", batch[0]["code"])
    client.report_result(done["order"]["id"], "delivered")  # consumed
    backend.redeem_code("m1", batch[1]["code"])  # reserved: a vend is running
    backend.revoke_code(revoked)
    listed = {c["id"]: c for c in backend.list_codes(batch_id=batch_id)}
    assert {i: c["status"] for i, c in listed.items()} == {
        used: "consumed", in_vend: "reserved", active: "active", revoked: "revoked"}
    assert {c["batch_id"] for c in listed.values()} == {batch_id}
    assert ops.find_code(batch[2]["code"]) == active and ops.find_code("12x") is None

    results = {r["id"]: r.get("status") or r["error"] for r in ops.revoke_batch(batch_id)}
    assert results == {used: "code_used", in_vend: "code_in_use", active: "revoked",
                       revoked: "revoked"}
    assert {c["id"]: c["status"] for c in backend.list_codes(batch_id=batch_id)}[in_vend] == (
        "reserved")  # the vend goes on
    with pytest.raises(ApiError) as gone:
        backend.redeem_code("m1", batch[2]["code"])
    assert gone.value.code == "code_revoked"
    with pytest.raises(ApiError) as unknown:
        ops.revoke_batch("cbnope")
    assert unknown.value.code == "unknown_batch"
    via_http = server.operator("POST", f"/operator/v1/code-batches/{other[0]['batch_id']}"
                               "/revoke", json={"note": "recall"})
    assert via_http.status_code == 200 and via_http.json()["codes"][0]["status"] == "revoked"
    listed_http = server.operator("GET", "/operator/v1/codes", params={"batch": batch_id})
    assert {c["id"] for c in listed_http.json()["codes"]} == {used, in_vend, active, revoked}


def test_revoke_racing_redeem_never_both_win(db_url: str) -> None:
    """Per code, a redeem and a revoke at once: either the code is revoked and the redeem
    refused (410), or the vend runs and the revoke is refused (code_in_use); SQLite and
    PostgreSQL."""
    backend = Backend(ServerSettings(db_url=db_url, operator_token="t", run_poller=False,
                                     public_url="http://testserver"))
    try:
        backend.load_catalogue({"currency": "CNY", "products": [{"id": "cola", "price": 350}],
                                "machines": [{"id": "m1", "secret": "s3cret-m1-0123456789",
                                              "slots": [{"slot": "A1", "product": "cola"}]}]})
        codes = backend.create_codes("cola", 6, "1h")
        for code in codes:
            barrier = threading.Barrier(2)
            out: dict[str, Any] = {}

            def call(name: str, fn: Any, out: dict[str, Any] = out,
                     barrier: threading.Barrier = barrier) -> None:
                barrier.wait()
                try:
                    out[name] = fn()
                except ApiError as exc:
                    out[name] = exc

            threads = [
                threading.Thread(target=call, args=(
                    "redeem", lambda c=code: backend.redeem_code("m1", c["code"]))),
                threading.Thread(target=call, args=(
                    "revoke", lambda c=code: backend.revoke_code(c["id"])))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=60)
            [row] = [c for c in backend.list_codes(limit=100) if c["id"] == code["id"]]
            if isinstance(out["revoke"], dict):
                assert out["revoke"]["status"] == "revoked" == row["status"]
                assert isinstance(out["redeem"], ApiError)
                assert out["redeem"].code == "code_revoked"
            else:
                assert out["revoke"].code == "code_in_use" and row["status"] == "reserved"
                assert out["redeem"]["order"]["state"] == "paid"
    finally:
        backend.close()


def test_cli_batch_and_code(server: InProcessServer, client: BackendClient,
                            tmp_path: Path) -> None:
    db = str(tmp_path / "backend.db")
    runner = CliRunner()
    made = runner.invoke(backend_cli, ["codes", "create", "--product", "cola", "--count", "3",
                                       "--db", db])
    assert made.exit_code == 0 and ", batch cb" in made.output
    listed = runner.invoke(backend_cli, ["codes", "list", "--json", "--db", db])
    created = sorted([json.loads(x) for x in listed.output.splitlines()], key=lambda c: c["id"])
    batch_id = created[0]["batch_id"]
    digits = made.output.split()[:3]
    one = runner.invoke(backend_cli, ["codes", "revoke", "--code", digits[0], "--db", db])
    assert one.exit_code == 0 and one.output == f"{created[0]['id']}: revoked\n"
    server.backend.redeem_code("m1", digits[1])  # now in a running vend
    rest = runner.invoke(backend_cli, ["codes", "revoke", "--batch", batch_id, "--json",
                                       "--db", db])
    assert rest.exit_code == 1  # not everything could be revoked
    results = {r["id"]: r.get("status") or r["error"]
               for r in [json.loads(x) for x in rest.output.splitlines()]}
    assert results == {created[0]["id"]: "revoked", created[1]["id"]: "code_in_use",
                       created[2]["id"]: "revoked"}
    by_state = runner.invoke(backend_cli, ["codes", "list", "--state", "reserved", "--batch",
                                           batch_id, "--json", "--db", db])
    reserved = [json.loads(x)["id"] for x in by_state.output.splitlines()]
    assert reserved == [created[1]["id"]]
    table = runner.invoke(backend_cli, ["codes", "list", "--db", db])
    assert table.exit_code == 0 and "batch" in table.output
    for args, text in ((["--code", "0000000000"], "no such code"),
                       ([], "give code ids, --code CODE or --batch ID"),
                       (["--batch", "cbnope"], "no codes in batch")):
        bad = runner.invoke(backend_cli, ["codes", "revoke", *args, "--db", db])
        assert bad.exit_code != 0 and text in bad.output and "Traceback" not in bad.output
