"""Peer frames in ``protocols/mdb/vectors.json``: each cites its source, and its CHK is
recomputed here with a sum written for this test (not vendhw's checksum catalogue)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from vendhw.framing.mdb import MdbFramer
from vendhw.resources import data_dir

PEERS = ("temoto/vender@225a5e4f4a4734052af75b8ac3f4a3ed614baaf4:",
         "Zzzzipper/projects@038e09f76eba575136edc673a4a0e9cc4a204b7a:")


def peer_vectors() -> list[dict[str, Any]]:
    data = json.loads((data_dir("protocols") / "mdb" / "vectors.json").read_text("utf-8"))
    return [v for v in data["vectors"] if "peer_hex" in v]


VECTORS = peer_vectors()


def independent_chk(data: bytes) -> int:
    total = 0
    for byte in data:
        total += byte
        total &= 0xFF
    return total


def test_there_are_peer_vectors_from_both_peers() -> None:
    assert len(VECTORS) >= 50
    for peer in PEERS:
        assert sum(v["source"].startswith(peer) for v in VECTORS) >= 15


@pytest.mark.parametrize("vector", VECTORS, ids=[f"{v['direction']}:{v['hex'][:24]}"
                                                 for v in VECTORS])
def test_peer_vector_checksum_and_source(vector: dict[str, Any]) -> None:
    frame = bytes.fromhex(vector["hex"])
    payload = bytes.fromhex(vector["peer_hex"])
    assert frame[:-1] == payload  # exactly the bytes the peer's test gives
    assert frame[-1] == independent_chk(payload)
    assert vector["source"].startswith(PEERS)
    assert re.search(r":[\w/.-]+_test\.go$|:[\w/.-]+Test\.cpp$", vector["source"])
    parsed = MdbFramer().parse(frame, direction=vector["direction"])  # raises on a bad CHK
    assert isinstance(parsed["command"], str) and parsed["command"]
