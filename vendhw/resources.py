"""Find the data folders (``protocols/``, ``boards/``) in a wheel or a source checkout.

The wheel carries them as ``vendhw/_data/<name>``; a checkout or an editable install keeps
them at the repository root. Looking in both places means one code path for both.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from vendhw.errors import ConfigurationError

_PACKAGE = Path(__file__).resolve().parent


@cache
def data_dir(name: str) -> Path:
    """Return the folder ``name`` (``"protocols"`` or ``"boards"``) that ships with vendhw."""
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise ConfigurationError(f"vendhw data folder {name!r} not found; is the install complete?")


def protocol_vectors(protocol: str) -> list[dict[str, Any]]:
    """The golden vectors of one protocol (``protocols/<protocol>/vectors.json``)."""
    path = data_dir("protocols") / protocol / "vectors.json"
    if not path.is_file():
        raise ConfigurationError(f"no golden vectors for protocol {protocol!r} ({path})")
    data = json.loads(path.read_text(encoding="utf-8"))
    vectors = data["vectors"] if isinstance(data, dict) else data
    assert isinstance(vectors, list)
    return vectors
