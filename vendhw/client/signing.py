"""The machine request signature: moved to :mod:`vendhw.contract.signing`, re-exported here."""

from vendhw.contract.signing import *  # noqa: F403
from vendhw.contract.signing import __all__  # noqa: F401
