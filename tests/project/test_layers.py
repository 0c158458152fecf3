"""The layers of ``vendhw`` point down only (see ``docs/layers.md``).

Every module's imports are read with ``ast`` (module-level and function-level, relative
ones resolved, ``from vendhw import sim`` counted as an import of ``vendhw.sim``) and each
import of another top-level part of the package must go to a lower layer. Parts on the same
rank are peers and must not import each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import vendhw

ROOT = Path(vendhw.__file__).parent

# Lowest first. A part may import its own modules and any part of a lower rank.
LAYERS: list[set[str]] = [
    {"errors", "registry", "crash"},
    {"__init__", "money", "options", "resources", "store"},
    {"framing", "boards"},
    {"transport"},
    {"sim"},
    {"devices", "dex"},
    {"tools"},
    {"machine"},
    {"contract"},
    {"client"},
    {"server", "agent"},
    {"testing"},
    {"cli"},
    {"__main__"},
]
# Lower parts that a part must not import all the same: the backend and its client meet
# only in ``contract`` (a server never runs the client's code to check a signature).
APART: set[tuple[str, str]] = {("server", "client")}
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}

# Imports that break the order and are not fixed yet: (importing module, imported module).
# Each entry is a debt: remove it when its import is gone (the test fails on stale entries).
KNOWN: set[tuple[str, str]] = set()


def _module_name(path: Path) -> str:
    parts = ("vendhw", *path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    rel = Path(*name.split(".")[1:])
    return (ROOT / rel).with_suffix(".py").is_file() or (ROOT / rel / "__init__.py").is_file()


def imports_of(path: Path) -> set[str]:
    """The ``vendhw`` modules that the file at ``path`` imports, anywhere in its body."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "vendhw")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "vendhw":
                continue
            subs = [f"{target}.{a.name}" for a in node.names if _is_module(f"{target}.{a.name}")]
            found.update(subs or [target])
    return found


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def violations() -> set[tuple[str, str]]:
    bad: set[tuple[str, str]] = set()
    for path in sorted(ROOT.rglob("*.py")):
        if "migrations" in path.parts:
            continue  # Alembic scripts, run by Alembic, not imported
        importer = _module_name(path)
        for imported in imports_of(path):
            a, b = _part(importer), _part(imported)
            if a == b:
                continue
            assert a in RANK, f"{importer}: part {a!r} has no layer in LAYERS"
            assert b in RANK, f"{imported}: part {b!r} has no layer in LAYERS"
            if RANK[b] >= RANK[a] or (a, b) in APART:
                bad.add((importer, imported))
    return bad


def test_every_part_has_a_layer() -> None:
    parts = {p.stem if p.is_file() else p.name for p in ROOT.iterdir()
             if (p.suffix == ".py" or (p / "__init__.py").is_file())}
    assert parts - set(RANK) == set()


def test_layers_point_down() -> None:
    bad = violations()
    new = sorted(bad - KNOWN)
    assert not new, "imports that point up or sideways:\n" + "\n".join(
        f"  {a} -> {b}" for a, b in new)


def test_known_violations_are_still_real() -> None:
    stale = sorted(KNOWN - violations())
    assert not stale, "fixed, remove from KNOWN:\n" + "\n".join(f"  {a} -> {b}" for a, b in stale)
