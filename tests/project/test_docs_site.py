"""The documentation site builds with ``mkdocs build --strict`` and no relative link is dead."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

# [text](target) and [label]: target; images too. Code is removed before matching.
_INLINE = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)
_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)


def _markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def _relative_links(text: str) -> list[str]:
    text = _CODE_SPAN.sub("", _FENCE.sub("", text))
    links = _INLINE.findall(text) + _REFERENCE.findall(text)
    return [link for link in links
            if not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", link) and not link.startswith("#")]


@pytest.mark.parametrize("path", _markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_at_files(path: Path) -> None:
    dead = []
    for link in _relative_links(path.read_text(encoding="utf-8")):
        target = link.split("#", 1)[0].split("?", 1)[0]
        if target and not (path.parent / target).exists():
            dead.append(link)
    assert not dead, f"{path.relative_to(ROOT)}: links to missing files: {dead}"


def test_link_finder_sees_links_and_skips_code() -> None:
    text = ("[a](docs/x.md) ![i](img.png \"t\") [web](https://e.org) [s](#top)\n"
            "`[no](code.md)`\n```\n[no](fenced.md)\n```\n[ref]: other.md#part\n")
    assert sorted(_relative_links(text)) == ["docs/x.md", "img.png", "other.md#part"]


def test_readme_stays_a_summary() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 150, "README.md grows: move the topic to a page in docs/"
    quick = text.split("## Quick start", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    commands = quick.splitlines()
    assert len(commands) == 2 and "vendhw demo" in commands[0] and "pytest" in commands[1]


@pytest.mark.timeout(180)
def test_mkdocs_build_strict(tmp_path: Path) -> None:
    missing = [name for name in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers")
               if importlib.util.find_spec(name) is None]
    if missing:
        reason = (f"the docs toolchain is not installed ({', '.join(missing)}); "
                  "pip install -e \".[docs]\"")
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(reason)
        pytest.skip(reason)
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict",
         "--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=170,
    )
    # Never --quiet: it hides the warnings that strict mode counts, and the build passes.
    warnings = [line for line in result.stderr.splitlines()
                if line.startswith(("WARNING", "ERROR"))]
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr[-4000:]}"
    assert not warnings, "\n".join(warnings)
    assert (tmp_path / "site" / "api" / "machine" / "index.html").is_file()
