"""DEX/UCS and EVA-DTS: audit reports from the machine's journals, and the serial link.

* :mod:`vendhw.dex.report` — the :class:`Audit` figures, :func:`generate` (text with a correct
  ``G85`` and ``SE``) and :func:`parse` (checks both, reads the figures back);
* :mod:`vendhw.dex.collect` — :func:`collect` the figures from ``vends.db``/``cash.db``;
* :mod:`vendhw.dex.link` — the DEX/UCS handshakes and blocks as sans-I/O engines
  (:class:`DexSlave` for the machine, :class:`DexMaster` for a handheld) and :func:`run`.

See ``docs/dex.md`` and ``protocols/dex/README.md``.
"""

from vendhw.dex.collect import ReadLog, collect
from vendhw.dex.link import DexMaster, DexResult, DexSlave, run
from vendhw.dex.report import (
    Audit,
    Counter,
    DexDocument,
    DexFormatError,
    EventAudit,
    ProductAudit,
    generate,
    parse,
    parse_all,
)

__all__ = ["Audit", "Counter", "DexDocument", "DexFormatError", "DexMaster", "DexResult",
           "DexSlave", "EventAudit", "ProductAudit", "ReadLog", "collect", "generate", "parse",
           "parse_all", "run"]
