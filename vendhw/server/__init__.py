"""The reference backend (extra ``[server]``): FastAPI + SQLAlchemy 2.

``create_app(settings)`` builds the ASGI app; ``vendhw backend serve`` runs it with uvicorn.
Attributes load lazily so importing :mod:`vendhw.server.settings` needs no FastAPI.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "create_app": "vendhw.server.app",
    "Backend": "vendhw.server.service",
    "ApiError": "vendhw.server.service",
    "ServerSettings": "vendhw.server.settings",
    "FakeClock": "vendhw.server.settings",
    "OrderState": "vendhw.server.states",
    "TRANSITIONS": "vendhw.server.states",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'vendhw.server' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = sorted(_EXPORTS)
