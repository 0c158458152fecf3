"""Every ID-003 vector taken from py-id003 or lamassu-machine: the CRC recomputed by code
that is not vendhw's (``id003_independent.py``), and vendhw's framer naming it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from id003_independent import frame_ok

from vendhw.framing.id003 import Id003Framer
from vendhw.resources import data_dir

VECTORS: list[dict[str, Any]] = json.loads(
    (data_dir("protocols") / "id003" / "vectors.json").read_text(encoding="utf-8"))["vectors"]
PEERS = [v for v in VECTORS if v.get("peer")]


def test_peer_vectors_cite_repository_commit_and_path() -> None:
    assert len(PEERS) >= 50
    for vector in PEERS:
        repo, _, rest = vector["source"].partition("@")
        commit, _, path = rest.partition(":")
        assert "/" in repo and len(commit) == 40 and path, vector


@pytest.mark.parametrize("vector", PEERS, ids=[f"{v['direction']}:{v['hex']}" for v in PEERS])
def test_independent_crc_and_vendhw_agree(vector: dict[str, Any]) -> None:
    raw = bytes.fromhex(vector["hex"])
    assert frame_ok(raw)
    parsed = Id003Framer().parse(raw, vector["direction"])
    assert parsed["code"] == raw[2] and bytes(parsed["data"]) == raw[3:-2]
    assert "0x" not in parsed["command"]  # vendhw knows every command and status here
    if raw[2] == 0x17:
        assert "0x" not in parsed["reject_reason"]
    if raw[2] == 0x8A and vector["direction"] == "device":
        values = {e["escrow_code"]: e["value"] for e in parsed["currency_assign"]}
        assert values == {0x61: 1, 0x63: 5, 0x64: 10, 0x65: 20, 0x66: 50, 0x67: 100}
