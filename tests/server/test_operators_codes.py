"""Codes list and revoke: only active codes are revoked; a code in a running vend and a used
one are left alone and reported; a revoke racing a redeem never lets both win."""

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
from vendhw.server.testing import InProcessServer


def _states(ops: Operators, **where: Any) -> dict[int, str]:
    return {c["id"]: c["state"] for c in ops.list_codes(**where)}


def test_list_and_revoke_by_state(server: InProcessServer, client: BackendClient) -> None:
    backend = server.backend
    ops = Operators(backend)
    batch = backend.create_codes("cola", 4, "1h")
    other = backend.create_codes("chips", 1, "1h")
    batch_id = batch[0]["batch_id"]
    assert batch_id and {c["batch_id"] for c in batch} == {batch_id} != {other[0]["batch_id"]}
    used, in_vend, active, revoked = (c["id"] for c in batch)
    # one used (delivered), one in a running vend (reserved), one revoked before
    done = backend.redeem_code("m1", batch[0]["code"])
    client.report_result(done["order"]["id"], "delivered")
    backend.redeem_code("m1", batch[1]["code"])
    assert ops.revoke_codes([revoked])[0]["result"] == "revoked"
    assert _states(ops, product_id="cola") == {used: "consumed", in_vend: "reserved",
                                               active: "active", revoked: "revoked"}
    assert set(_states(ops, state="active")) == {active, other[0]["id"]}
    assert set(_states(ops, batch_id=batch_id)) == {used, in_vend, active, revoked}
    with pytest.raises(ApiError):
        ops.list_codes(state="bogus")

    results = {r["id"]: r["result"] for r in ops.revoke_codes(batch_id=batch_id)}
    assert results == {used: "consumed", in_vend: "in_use", active: "revoked",
                       revoked: "already_revoked"}
    assert _states(ops, product_id="cola")[in_vend] == "reserved"  # the vend goes on
    with pytest.raises(ApiError) as gone:
        backend.redeem_code("m1", batch[2]["code"])
    assert gone.value.code == "code_revoked"
    with pytest.raises(ApiError) as unknown:
        ops.revoke_codes(batch_id="cbnope")
    assert unknown.value.code == "unknown_batch"
    assert [a["to"] for a in backend.audit(str(active))] == ["active", "revoked"]


def test_revoke_racing_redeem_never_both_win(db_url: str) -> None:
    """Per code, a redeem and a revoke at once: either the code is revoked and the redeem
    refused (410), or the vend runs and the revoke reports in_use (SQLite and PostgreSQL)."""
    backend = Backend(ServerSettings(db_url=db_url, operator_token="t", run_poller=False,
                                     public_url="http://testserver"))
    try:
        backend.load_catalogue({"currency": "CNY", "products": [{"id": "cola", "price": 350}],
                                "machines": [{"id": "m1", "secret": "s3cret-m1-0123456789",
                                              "slots": [{"slot": "A1", "product": "cola"}]}]})
        codes = backend.create_codes("cola", 6, "1h")
        ops = Operators(backend)
        for code in codes:
            barrier = threading.Barrier(2)
            out: dict[str, Any] = {}

            def redeem(code: dict[str, Any] = code, out: dict[str, Any] = out,
                       barrier: threading.Barrier = barrier) -> None:
                barrier.wait()
                try:
                    out["redeem"] = backend.redeem_code("m1", code["code"])
                except ApiError as exc:
                    out["redeem"] = exc

            def revoke(code: dict[str, Any] = code, out: dict[str, Any] = out,
                       barrier: threading.Barrier = barrier) -> None:
                barrier.wait()
                out["revoke"] = ops.revoke_codes([code["id"]])[0]["result"]

            threads = [threading.Thread(target=redeem), threading.Thread(target=revoke)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=60)
            state = _states(ops)[code["id"]]
            if out["revoke"] == "revoked":
                assert isinstance(out["redeem"], ApiError)
                assert out["redeem"].code == "code_revoked" and state == "revoked"
            else:
                assert out["revoke"] == "in_use" and state == "reserved"
                assert out["redeem"]["order"]["state"] == "paid"
    finally:
        backend.close()


def test_cli_codes_list_and_revoke(server: InProcessServer, client: BackendClient,
                                   tmp_path: Path) -> None:
    db = str(tmp_path / "backend.db")
    runner = CliRunner()
    made = runner.invoke(backend_cli, ["codes", "create", "--product", "cola", "--count", "3",
                                       "--json", "--db", db])
    created = json.loads(made.output)["codes"]
    batch_id = created[0]["batch_id"]
    listed = runner.invoke(backend_cli, ["codes", "list", "--product", "cola", "--json",
                                         "--db", db])
    rows = [json.loads(line) for line in listed.output.splitlines()]
    assert len(rows) == 3 and {r["state"] for r in rows} == {"active"}
    assert "code" not in rows[0]  # digits are never stored
    one = runner.invoke(backend_cli, ["codes", "revoke", created[0]["code"], "--db", db])
    assert one.exit_code == 0 and one.output == f"code {created[0]['id']}: revoked\n"
    server.backend.redeem_code("m1", created[1]["code"])  # now in a running vend
    rest = runner.invoke(backend_cli, ["codes", "revoke", "--batch", batch_id, "--json",
                                       "--db", db])
    assert rest.exit_code == 1  # not everything could be revoked
    results = {r["id"]: r["result"] for r in map(json.loads, rest.output.splitlines())}
    assert results == {created[0]["id"]: "already_revoked", created[1]["id"]: "in_use",
                       created[2]["id"]: "revoked"}
    table = runner.invoke(backend_cli, ["codes", "list", "--state", "reserved", "--db", db])
    assert batch_id in table.output and "reserved" in table.output
    for args, text in ((["00000000"], "no such code"),
                       ([], "give one of"),
                       (["--batch", "cbnope"], "no codes in batch")):
        bad = runner.invoke(backend_cli, ["codes", "revoke", *args, "--db", db])
        assert bad.exit_code != 0 and text in bad.output and "Traceback" not in bad.output
