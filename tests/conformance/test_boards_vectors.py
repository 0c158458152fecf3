"""Motor-board vectors from the vendors' public code: checksums recomputed by code that is
not vendhw's (``boards_independent.py``), and vendhw's framers reading the same fields.

The "101" frames were produced by running Acccord/SPOpenApi's own ``S101Command`` (Java) at
the cited commit; the FA FB frames by running mohamed-29/try-5's ``vmc_protocol.build_frame``
(Python) or copied from mohamed-29/xyshjdemo; the Easivend frames follow github188/STC_bento's
board firmware (``CP_recv``/``CP_send``). Notes: ``tests/conformance/BOARDS.md``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from boards_independent import board101_ok, easivend_ok, fafb_ok

from vendhw.framing.board101 import Board101Framer
from vendhw.framing.easivend import EasivendFramer
from vendhw.framing.fafb import FaFbFramer
from vendhw.resources import data_dir

CHECKS = {"board101": (board101_ok, Board101Framer), "fafb": (fafb_ok, FaFbFramer),
          "easivend": (easivend_ok, EasivendFramer)}


def _peers(name: str) -> list[dict[str, Any]]:
    data = json.loads((data_dir("protocols") / name / "vectors.json").read_text("utf-8"))
    return [v for v in data["vectors"] if v.get("peer")]


CASES = [(name, v) for name in CHECKS for v in _peers(name)]


@pytest.mark.parametrize("name", list(CHECKS))
def test_peer_vectors_cite_repository_commit_and_path(name: str) -> None:
    peers = _peers(name)
    assert len(peers) >= 3
    for vector in peers:
        repo, _, rest = vector["source"].partition("@")
        commit, _, path = rest.partition(":")
        assert "/" in repo and len(commit) == 40 and path, vector


@pytest.mark.parametrize(("name", "vector"), CASES, ids=[f"{n}:{v['hex']}" for n, v in CASES])
def test_independent_checksum_and_vendhw_agree(name: str, vector: dict[str, Any]) -> None:
    raw = bytes.fromhex(vector["hex"])
    ok, framer = CHECKS[name]
    assert ok(raw)
    frame = framer().parse(raw, vector["direction"])
    if name == "board101":
        assert frame["code"] == raw[1] and frame["address"] == raw[0]
        if vector["direction"] == "device" and raw[1] == 0x03:
            assert (frame["result"], frame["drop_time_ms"]) == (raw[4], raw[11])
        if vector["direction"] == "host" and raw[1] == 0x05:
            assert (frame["motor_index"], frame["motor_type"], frame["light_type"]) == \
                tuple(raw[2:5])
    elif name == "easivend":
        assert frame["sn"] == raw[2] and frame["column"] == raw[4]


def test_101_reply_bytes_as_the_sdk_reads_them() -> None:
    """Data101ReviImpl.parseSpring: result at hex chars 8-10 (byte 4), curtain time at 22-24
    (byte 11); the SDK-built reply decodes to the same numbers in vendhw."""
    sdk_reply = "00030000000000000000002300000000000093D6"
    assert int(sdk_reply[8:10], 16) == 0 and int(sdk_reply[22:24], 16) == 35
    frame = Board101Framer().parse(bytes.fromhex(sdk_reply), "device")
    assert (frame["result"], frame["drop_time_ms"]) == (0, 35)
