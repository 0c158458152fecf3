"""Board profiles: moved to :mod:`vendhw.boards.profile`, re-exported here."""

from vendhw.boards.profile import *  # noqa: F403
from vendhw.boards.profile import __all__  # noqa: F401
