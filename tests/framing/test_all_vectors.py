"""Every protocol folder's golden vectors decode through `vendhw decode` as the vectors say.

This runs over every protocol that has a ``protocols/<name>/vectors.json`` and a registered
framer, so each new protocol is held to the same bar: valid vectors decode and name their
command; known-bad ones are reported invalid with a message.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from vendhw.cli import cli
from vendhw.framing import framer_names
from vendhw.resources import data_dir


def _cases() -> list[tuple[str, dict[str, Any]]]:
    cases = []
    for folder in sorted(data_dir("protocols").iterdir()):
        vectors_file = folder / "vectors.json"
        if folder.name not in framer_names() or not vectors_file.is_file():
            continue
        data = json.loads(vectors_file.read_text(encoding="utf-8"))
        vectors = data["vectors"] if isinstance(data, dict) else data
        cases += [(folder.name, v) for v in vectors]
    return cases


CASES = _cases()


def test_the_foundation_protocols_have_vectors() -> None:
    assert "mdb" in {name for name, _ in CASES}


@pytest.mark.parametrize(("protocol", "vector"), CASES,
                         ids=[f"{p}:{v['hex'][:30]}" for p, v in CASES])
def test_vector_decodes_through_the_cli(protocol: str, vector: dict[str, Any]) -> None:
    if vector.get("wire") not in (None, "plain") or vector.get("form"):
        pytest.skip("not a plain frame of this protocol (9-bit wire form, decrypted eSSP "
                    "block); the protocol's own tests cover it")
    args = ["decode", protocol, "--json", "--direction", vector["direction"]]
    if vector.get("checksum"):
        args += ["--checksum", vector["checksum"]]
    result = CliRunner().invoke(cli, [*args, vector["hex"]])
    out = json.loads(result.stdout.splitlines()[0])
    if vector.get("expect_valid", True):
        assert result.exit_code == 0, out
        assert out["valid"] is True and out["error"] is None
        assert isinstance(out["command"], str) and out["command"]
    else:
        assert result.exit_code == 1 and out["valid"] is False and out["error"]
