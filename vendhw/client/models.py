"""The backend's message models: moved to :mod:`vendhw.contract.models`, re-exported here."""

from vendhw.contract.models import *  # noqa: F403
from vendhw.contract.models import __all__  # noqa: F401
