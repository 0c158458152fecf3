"""Every ccTalk vector taken from another implementation: its checksum recomputed by code
that is not vendhw's (``cctalk_independent.py``), and vendhw's framer agreeing."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cctalk_independent import crc_packet_ok, simple_checksum_ok

from vendhw.errors import VendhwError
from vendhw.framing.cctalk import CcTalkFramer
from vendhw.resources import data_dir

VECTORS: list[dict[str, Any]] = json.loads(
    (data_dir("protocols") / "cctalk" / "vectors.json").read_text(encoding="utf-8"))["vectors"]
PEERS = [v for v in VECTORS if v.get("peer")]


def test_peer_vectors_cite_repository_commit_and_path() -> None:
    assert len(PEERS) >= 10
    for vector in PEERS:
        repo, _, rest = vector["source"].partition("@")
        commit, _, path = rest.partition(":")
        assert "/" in repo and len(commit) == 40 and path, vector


@pytest.mark.parametrize("vector", PEERS, ids=[v["hex"] for v in PEERS])
def test_independent_checksum_and_vendhw_agree(vector: dict[str, Any]) -> None:
    frame = bytes.fromhex(vector["hex"])
    crc = vector.get("checksum") == "crc16"
    expected = vector.get("expect_valid", True)
    assert (crc_packet_ok(frame) if crc else simple_checksum_ok(frame)) is expected or (
        not expected and frame[1] != len(frame) - 5)  # a bad length, not a bad checksum
    framer = CcTalkFramer(checksum="crc16" if crc else "simple")
    if expected:
        parsed = framer.parse(frame, vector["direction"])
        assert parsed["header"] == frame[3] and bytes(parsed["data"]) == frame[4:-1]
    else:
        with pytest.raises(VendhwError):
            framer.parse(frame, vector["direction"])
