"""The data folders ship inside the wheel and are found at run time."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_wheel_contains_protocols_and_boards(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True,
    )
    if result.returncode != 0:
        pytest.fail(f"wheel build failed: {result.stderr[-2000:]}")
    wheel = next(tmp_path.glob("vendhw-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "vendhw/_data/protocols/mdb/vectors.json" in names
    assert "vendhw/_data/protocols/mdb/README.md" in names
    assert any(n.startswith("vendhw/_data/boards/") for n in names)
    assert "vendhw/py.typed" in names
    # subpackages ship whole (the ccTalk host and the board simulators are packages)
    assert {"vendhw/devices/cctalk/__init__.py", "vendhw/devices/cctalk/hopper.py",
            "vendhw/sim/boards/__init__.py", "vendhw/sim/boards/fafb.py"} <= names


def test_installed_layout_is_found_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vendhw import resources

    package = tmp_path / "vendhw"
    (package / "_data" / "protocols").mkdir(parents=True)
    monkeypatch.setattr(resources, "_PACKAGE", package)
    resources.data_dir.cache_clear()
    try:
        assert resources.data_dir("protocols") == package / "_data" / "protocols"
    finally:
        resources.data_dir.cache_clear()
