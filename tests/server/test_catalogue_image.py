"""Product pictures in the catalogue: ``image_url`` per product (migration 0003), loaded by
the operator API and ``vendhw backend load``, returned by the machine's catalogue."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from vendhw.server.db import Database
from vendhw.testing.backend import InProcessServer

PIC = "http://127.0.0.1:9/pictures/tea.png"


def _catalogue(image_url: object) -> dict:
    return {"products": [{"id": "tea", "name": "Green tea", "price": 300,
                          "image_url": image_url},
                         {"id": "cola", "name": "Cola", "price": 350}],
            "machines": [{"id": "m1", "secret": "s" * 32, "slots": [
                {"slot": "1", "product": "tea"}, {"slot": "2", "product": "cola"}]}]}


def test_machine_catalogue_returns_the_picture() -> None:
    server = InProcessServer()
    try:
        server.operator("POST", "/operator/v1/catalogue", json=_catalogue(PIC)
                        ).raise_for_status()
        server.secrets["m1"] = "s" * 32
        client = server.client()
        slots = {s["slot"]: s for s in client.catalogue()["slots"]}
        assert slots["1"]["image_url"] == PIC
        assert "image_url" not in slots["2"]  # no picture: the slot is as it always was
        # A reload without the key keeps the picture; null removes it.
        doc = _catalogue(PIC)
        del doc["products"][0]["image_url"]
        server.operator("POST", "/operator/v1/catalogue", json=doc).raise_for_status()
        assert client.catalogue()["slots"][0]["image_url"] == PIC
        server.operator("POST", "/operator/v1/catalogue", json=_catalogue(None)
                        ).raise_for_status()
        assert "image_url" not in client.catalogue()["slots"][0]
        client.close()
    finally:
        server.close()


@pytest.mark.parametrize("bad", ["ftp://x/tea.png", "tea.png", "http://", 7,
                                 "http://x/" + "a" * 500, "http://x/a b.png"])
def test_bad_image_url_is_one_clear_refusal(bad: object) -> None:
    server = InProcessServer()
    try:
        response = server.operator("POST", "/operator/v1/catalogue", json=_catalogue(bad))
        assert response.status_code == 422  # as every other catalogue mistake
        assert "image_url must be an http:// or https:// address" in response.text
    finally:
        server.close()


def test_backend_load_accepts_image_url(tmp_path: Path) -> None:
    doc = tmp_path / "catalogue.json"
    doc.write_text(json.dumps(_catalogue(PIC)))
    url = f"sqlite:///{tmp_path / 'b.db'}"
    run = subprocess.run([sys.executable, "-m", "vendhw", "backend", "load", str(doc),
                          "--db", url], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    engine = create_engine(url)
    with engine.begin() as c:
        assert c.execute(text("SELECT id, image_url FROM products ORDER BY id")).all() == [
            ("cola", None), ("tea", PIC)]
    engine.dispose()
    doc.write_text(json.dumps(_catalogue("javascript:alert(1)")))
    run = subprocess.run([sys.executable, "-m", "vendhw", "backend", "load", str(doc),
                          "--db", url], capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert "image_url must be" in run.stderr and len(run.stderr.strip().splitlines()) == 1


def test_0003_adds_image_url_and_keeps_products(db_url: str) -> None:
    from test_operators_migration import _upgrade

    _upgrade(db_url, "0002")
    engine = create_engine(db_url)
    with engine.begin() as c:
        c.execute(text("INSERT INTO products (id, name, price) VALUES ('tea', 'Tea', 300)"))
    engine.dispose()
    database = Database(db_url)
    assert database.migrate()["from"] == "0002"  # and on to the newest
    database.dispose()
    engine = create_engine(db_url)
    with engine.begin() as c:
        assert c.execute(text("SELECT id, name, price, image_url FROM products")).all() == [
            ("tea", "Tea", 300, None)]
    engine.dispose()
