"""vendhw: drive vending-machine hardware and run the whole sale.

Layers, each importing only those below it: ``transport`` (byte pipes) and ``sim``
(simulated devices), ``framing`` (frames and checksums), ``devices`` (protocol engines and
drivers), ``machine`` (dispense and cash behind one API), then ``client``, ``server``,
``agent`` and ``cli``.
"""

from vendhw.errors import VendhwError

__version__ = "0.1.0"

__all__ = ["VendhwError", "__version__"]
