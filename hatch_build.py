"""Build hook: compile the optional stream scan (``vendhw/framing/_scan.c``) in place.

``pip install .`` and ``pip install -e .`` run it through hatchling. Without a C compiler
(or on a platform this does not know how to build for) it says so and the package stays
pure Python: every deframer then runs the Python scan, same output, slower. Run it by hand
with ``python hatch_build.py`` after editing the C file.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
SOURCE = ROOT / "vendhw" / "framing" / "_scan.c"


def target() -> Path:
    return SOURCE.with_name("_scan" + str(sysconfig.get_config_var("EXT_SUFFIX") or ".so"))


def compile_scan() -> Path | None:
    """Compile ``_scan.c`` next to itself; the built file, or None (with a reason printed)."""
    out = target()
    include = sysconfig.get_paths().get("include", "")
    ldshared = sysconfig.get_config_var("LDSHARED")
    if sys.platform == "win32" or not ldshared or not (Path(include) / "Python.h").exists():
        print("vendhw: no C toolchain or Python headers here: the pure-Python stream scan "
              "will be used", file=sys.stderr)
        return None
    command = [*shlex.split(ldshared), "-O2", "-fPIC", "-Wall", f"-I{include}",
               str(SOURCE), "-o", str(out)]
    try:
        subprocess.run(command, check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        print(f"vendhw: could not compile {SOURCE.name} ({detail.strip()[:300]}): the "
              "pure-Python stream scan will be used", file=sys.stderr)
        return None
    return out


try:
    from hatchling.builders.hooks.plugin.interface import BuildHookInterface
except ImportError:  # run as a script, without hatchling
    BuildHookInterface = object  # type: ignore[assignment,misc]


class CompiledScanHook(BuildHookInterface):  # type: ignore[misc,valid-type]
    """Hatchling's custom build hook (``[tool.hatch.build.targets.wheel.hooks.custom]``)."""

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        built = compile_scan()
        if built is None:
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        if version != "editable":  # an editable install imports it from the source tree
            build_data["force_include"][str(built)] = f"vendhw/framing/{built.name}"


if __name__ == "__main__":
    path = compile_scan()
    print(path if path else "not built")
    sys.exit(0 if path else 1)
