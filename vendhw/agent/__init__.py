"""The machine agent: what runs on the machine's controller between the backend and the board.

:mod:`vendhw.agent.shipper` turns backend ship instructions into vends exactly once;
:mod:`vendhw.agent.demo` runs a whole simulated sale (``vendhw demo``).
"""
