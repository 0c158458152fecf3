"""Operator surfaces: catalogue documents, machine registration, CLI tools, settings, and the
layering rule (the backend never imports hardware code)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from vendhw.cli.backend import backend as backend_cli
from vendhw.client import BackendClient
from vendhw.errors import ConfigurationError
from vendhw.server.settings import ServerSettings, load_provider_file, parse_duration
from vendhw.server.states import transition_table_markdown
from vendhw.testing.backend import InProcessServer

ROOT = Path(__file__).resolve().parents[2]


def test_backend_and_client_never_import_hardware_layers() -> None:
    for package in ("server", "client"):
        for path in (ROOT / "vendhw" / package).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                for name in names:
                    assert not name.startswith(("vendhw.machine", "vendhw.devices",
                                                "vendhw.transport")), f"{path}: {name}"


def test_backend_docs_show_the_real_state_table() -> None:
    text = (ROOT / "docs" / "backend.md").read_text(encoding="utf-8")
    assert transition_table_markdown() in text


@pytest.mark.parametrize(("text", "seconds"), [
    ("90", 90.0), ("90s", 90.0), ("500ms", 0.5), ("2h", 7200.0), ("1m30s", 90.0),
    ("1.5s", 1.5), (3, 3.0), ("1d", 86400.0)])
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "2x", "h", "1h 2", "-1s", "2h!"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ConfigurationError, match="duration"):
        parse_duration(text)


def test_provider_file_reads_key_files(tmp_path: Path) -> None:
    (tmp_path / "key.pem").write_text("PEM-TEXT")
    (tmp_path / "p.toml").write_text('[alipay]\napp_id = "1"\nprivate_key_file = "key.pem"\n')
    assert load_provider_file(tmp_path / "p.toml") == {
        "alipay": {"app_id": "1", "private_key": "PEM-TEXT"}}
    settings = ServerSettings.from_env({"VENDHW_BACKEND_ORDER_TTL": "2s",
                                        "VENDHW_OPERATOR_TOKEN": "t",
                                        "VENDHW_BACKEND_PROVIDERS": str(tmp_path / "p.toml")})
    assert (settings.order_ttl, settings.operator_token) == (2.0, "t")
    assert settings.providers["alipay"]["app_id"] == "1"


def test_catalogue_validation_and_machine_registration(server: InProcessServer) -> None:
    bad = server.operator("POST", "/operator/v1/catalogue", json={
        "products": [{"id": "cola", "name": "Cola"}],
        "machines": [{"id": "m9", "secret": "short", "slots": []}]})
    assert bad.status_code == 422 and "16+" in bad.json()["detail"]
    no_price = server.operator("POST", "/operator/v1/catalogue", json={
        "products": [{"id": "cola"}],
        "machines": [{"id": "m9", "secret": "s" * 16, "slots": [{"slot": "A1",
                                                                "product": "cola"}]}]})
    assert no_price.status_code == 422 and "no price" in no_price.json()["detail"]
    server.operator("POST", "/operator/v1/catalogue",
                    json={"products": [{"id": "cola", "name": "Cola", "price": 300}]})
    put = server.operator("PUT", "/operator/v1/machines/m9", json={
        "secret": "s" * 16, "name": "Lobby", "currency": "usd",
        "slots": [{"slot": "A1", "product": "cola"}, {"slot": "A2", "product": "cola",
                                                      "price": 250, "enabled": False}]})
    assert put.status_code == 200
    assert put.json()["currency"] == "USD"
    assert [(s["slot"], s["price"], s["enabled"]) for s in put.json()["slots"]] == [
        ("A1", 300, True), ("A2", 250, False)]
    server.secrets["m9"] = "s" * 16
    with server.client("m9") as client:
        assert client.create_order("A1").amount == 300
        with pytest.raises(Exception, match="unknown_slot"):
            client.create_order("A2")  # disabled


def test_cli_machines_and_resolve(server: InProcessServer, client: BackendClient,
                                  tmp_path: Path) -> None:
    runner = CliRunner()
    db = server.settings.db_url
    added = runner.invoke(backend_cli, ["machines", "add", "m5", "--slot", "C1=cola:360",
                                        "--name", "Hall", "--json", "--db", db])
    assert added.exit_code == 0, added.output
    assert json.loads(added.output)["slots"][0]["price"] == 360
    listed = runner.invoke(backend_cli, ["machines", "list", "--json", "--db", db])
    assert {json.loads(line)["id"] for line in listed.output.splitlines()} == {"m1", "m5"}
    catalogue = tmp_path / "cat.json"
    catalogue.write_text(json.dumps({"products": [{"id": "tea", "name": "Tea", "price": 300}]}))
    loaded = runner.invoke(backend_cli, ["load", str(catalogue), "--db", db])
    assert json.loads(loaded.output)["products"] == 1

    order = client.create_order("A1")
    server.pay(order.id)
    [ship] = client.next_instructions(wait=0)
    client.ack(ship.id)
    client.report_result(order.id, "unknown")
    review = runner.invoke(backend_cli, ["orders", "list", "--state", "needs_review", "--json",
                                         "--db", db])
    assert [json.loads(line)["id"] for line in review.output.splitlines()] == [order.id]
    resolved = runner.invoke(backend_cli, ["orders", "resolve", order.id, "--refund",
                                           "--note", "camera shows nothing dropped",
                                           "--db", db])
    assert resolved.exit_code == 0, resolved.output
    assert json.loads(resolved.output)["state"] == "refunded"
    shown = runner.invoke(backend_cli, ["orders", "show", order.id, "--db", db])
    assert "camera shows nothing dropped" in shown.output
    missing = runner.invoke(backend_cli, ["orders", "resolve", order.id, "--db", db])
    assert missing.exit_code != 0


def test_client_and_server_agree_on_outcomes_and_final_states() -> None:
    from vendhw.client.models import FINAL_STATES, OUTCOMES
    from vendhw.server.states import FINAL_STATES as SERVER_FINAL
    from vendhw.server.states import OUTCOMES as SERVER_OUTCOMES
    from vendhw.server.states import OrderState

    assert set(OUTCOMES) == SERVER_OUTCOMES
    assert set(FINAL_STATES) == {s.value for s in SERVER_FINAL} | {
        OrderState.NEEDS_REVIEW.value}
