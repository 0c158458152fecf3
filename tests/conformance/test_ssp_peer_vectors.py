"""Every SSP vector in ``protocols/ssp/vectors.json`` that comes from an independent
implementation or a real-device log has its CRC recomputed by code that is not vendhw's: the
bit-by-bit CRC in ``ssp_peers`` and, when node is there, the Node peer's own ``CRC16``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from ssp_peers import crc16_ssp, node_run, unstuff

from vendhw.resources import protocol_vectors

VECTORS = protocol_vectors("ssp")
PEER = [v for v in VECTORS if not v["source"].startswith("ssp-rs/ssp: spec/")]


def crc_input(vector: dict[str, Any]) -> tuple[bytes, bytes]:
    """(bytes the CRC covers, the CRC as sent) for a frame, an eSSP inner block or a CRC test."""
    raw = bytes.fromhex(vector["hex"])
    if vector.get("form") == "crc16":
        return raw, bytes.fromhex(vector["crc"])
    if vector.get("form") == "essp-inner":
        return raw[:-2], raw[-2:]
    body = unstuff(raw)
    return body[:-2], body[-2:]


def test_there_are_peer_vectors_with_their_sources() -> None:
    assert len(PEER) >= 10
    for vector in PEER:
        assert vector["source"]
        if "repository" in vector and not vector.get("path", "").startswith("issues/"):
            assert len(vector["commit"]) == 40 and vector["path"]


@pytest.mark.parametrize("vector", PEER, ids=[v["hex"][:29] for v in PEER])
def test_independent_crc(vector: dict[str, Any]) -> None:
    covered, sent = crc_input(vector)
    matches = crc16_ssp(covered).to_bytes(2, "little") == sent
    assert matches is vector.get("expect_valid", True)


def test_the_node_peers_crc16_agrees() -> None:
    inputs = [list(crc_input(v)[0]) for v in PEER]
    done = node_run("const { CRC16 } = require('encrypted-smiley-secure-protocol/src/utils');"
                    "console.log(JSON.stringify(JSON.parse(process.argv[1]).map(CRC16)))",
                    json.dumps(inputs))
    assert done.returncode == 0, done.stderr
    theirs = [bytes(crc) for crc in json.loads(done.stdout)]
    assert theirs == [crc16_ssp(bytes(data)).to_bytes(2, "little") for data in inputs]
    assert sum(crc == crc_input(v)[1] for crc, v in zip(theirs, PEER, strict=True)) == sum(
        1 for v in PEER if v.get("expect_valid", True))


def test_ssp_rs_known_answer_frame_decrypts_with_its_key() -> None:
    (kat,) = [v for v in PEER if v.get("essp_key")]
    body = unstuff(bytes.fromhex(kat["hex"]))
    block = body[3:-2]  # after SEQ, LEN and STEX
    assert body[2] == 0x7E
    decryptor = Cipher(algorithms.AES(bytes.fromhex(kat["essp_key"])), modes.ECB()).decryptor()
    plain = decryptor.update(block) + decryptor.finalize()
    assert plain[:7] == bytes.fromhex(kat["essp_plain"].replace(" ", ""))
    assert crc16_ssp(plain[:-2]).to_bytes(2, "little") == plain[-2:]
