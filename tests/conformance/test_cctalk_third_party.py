"""A third-party ccTalk packet parser drives vendhw's coin simulator over a real pty.

The npm packages ``serialport`` and ``@serialport/parser-cctalk`` (installed by
``.ci/setup.d/40-cctalk-node-peers.sh`` into ``.peers/cctalk``) read the simulator's replies;
``cctalk_node_host.js`` is a 70-line host on them. In CI (``CI=true``) a missing install is a
failure; elsewhere the test is skipped with the command to run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULES = ROOT / ".peers" / "cctalk" / "node_modules"
SCRIPT = Path(__file__).with_name("cctalk_node_host.js")
VENDHW = shutil.which("vendhw", path=str(Path(sys.executable).parent)) or "vendhw"


def _need_node_peers() -> str:
    node = shutil.which("node")
    missing = [] if node else ["node"]
    if not (MODULES / "@serialport" / "parser-cctalk").is_dir():
        missing.append(str(MODULES / "@serialport" / "parser-cctalk"))
    if missing:
        reason = (f"missing {', '.join(missing)}: run sh .ci/setup.d/40-cctalk-node-peers.sh "
                  "from the repository root")
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    assert node is not None
    return node


def test_serialport_parser_cctalk_reads_ids_and_credits_from_the_simulator() -> None:
    node = _need_node_peers()
    sim = subprocess.Popen([VENDHW, "sim", "cctalk-coin", "--json", "-o", "echo=true",
                            "-o", "auto_insert=1,6"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        assert sim.stdout is not None
        port = json.loads(sim.stdout.readline())["port"]
        done = subprocess.run([node, str(SCRIPT), port, str(MODULES)], capture_output=True,
                              text=True, timeout=60, check=False)
    finally:
        sim.terminate()
        sim.wait(timeout=10)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert all(seen["checksums"]) and len(seen["checksums"]) >= 13
    assert seen["poll"] == 0 and seen["inhibits"] == 0 and seen["master"] == 0  # ACKs
    assert seen["category"] == "Coin Acceptor"
    assert seen["coinIds"]["1"] == "EU005A" and seen["coinIds"]["6"] == "EU200A"
    assert seen["coinIds"]["8"] == "......"
    assert seen["credits"] == [[1, 1], [6, 1]]  # channel, sorter path: in insertion order
