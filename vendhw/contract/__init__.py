"""The machine-backend contract, shared by the server, the client and the agent.

* :mod:`vendhw.contract.signing`: the HMAC request signature (both sides);
* :mod:`vendhw.contract.states`: order states, the transition table and the dispense outcomes;
* :mod:`vendhw.contract.models`: the messages the client parses (Order, Instruction, ...).

Pure standard library (plus :mod:`vendhw.errors`): the server never imports the client or the
hardware layers, the machine side never imports the server; both import this.
"""

from vendhw.contract import models, signing, states

__all__ = ["models", "signing", "states"]
