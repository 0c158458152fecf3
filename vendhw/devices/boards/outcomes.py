"""Vend outcomes: moved to :mod:`vendhw.boards.outcomes`, re-exported here."""

from vendhw.boards.outcomes import *  # noqa: F403
from vendhw.boards.outcomes import __all__  # noqa: F401
