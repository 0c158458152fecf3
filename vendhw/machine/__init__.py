"""The machine layer: dispense through a motor board (:class:`Machine`) and take cash.

``Machine``/``open_machine``/``DispenseResult`` load the board drivers on first use, so
``vendhw.machine.cash`` and the journal work without them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vendhw.machine.aio import AsyncMachine, open_async_machine
    from vendhw.machine.core import DispenseResult, Machine, open_machine
    from vendhw.machine.journal import VendJournal, VendRecord, VendState

_LAZY = {
    "Machine": "vendhw.machine.core",
    "DispenseResult": "vendhw.machine.core",
    "open_machine": "vendhw.machine.core",
    "AsyncMachine": "vendhw.machine.aio",
    "open_async_machine": "vendhw.machine.aio",
    "VendJournal": "vendhw.machine.journal",
    "VendRecord": "vendhw.machine.journal",
    "VendState": "vendhw.machine.journal",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'vendhw.machine' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = ["AsyncMachine", "DispenseResult", "Machine", "VendJournal", "VendRecord",
           "VendState", "open_async_machine", "open_machine"]
