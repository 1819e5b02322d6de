"""Every event class, importable as ``sessionhive.events.<Name>``."""

from sessionhive.model.events import *  # noqa: F403
from sessionhive.model.events import __all__ as __all__
