"""Every event class, importable as ``sessionhive.events.<Name>``."""

from sessionhive.agent.events import *  # noqa: F403
from sessionhive.agent.events import __all__ as __all__
