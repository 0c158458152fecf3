"""The order state machine: moved to :mod:`vendhw.contract.states`, re-exported here."""

from vendhw.contract.states import *  # noqa: F403
from vendhw.contract.states import S, __all__  # noqa: F401
