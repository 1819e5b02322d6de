"""``sessionhive.client``: ``RemoteHive`` / ``AsyncRemoteHive``, the Hive API against a ``sessionhive serve``.

Same method names, results, events and errors as :class:`~sessionhive.Hive` /
:class:`~sessionhive.AsyncHive`, so code moves between embedded and remote
with one line::

    hive = RemoteHive("http://127.0.0.1:8765", token=...)   # instead of Hive.start(...)

Needs ``httpx`` (the ``serve`` or ``client`` extra).
"""

from __future__ import annotations

from ._codec import (
    RemoteError,
    ServiceUnavailable,
    Unauthorized,
    error_from_problem,
    event_from_dict,
    result_from_dict,
)
from ._core import HistoryPage, PendingConfirmation, SessionPage
from ._loadtest import check_target, remote_hive_factory
from ._remote import AsyncRemoteHive, RemoteHive
from ._streams import AsyncRemoteSubscription, AsyncRemoteTurnStream, RemoteSubscription, RemoteTurnStream

__all__ = [
    "AsyncRemoteHive",
    "AsyncRemoteSubscription",
    "AsyncRemoteTurnStream",
    "HistoryPage",
    "PendingConfirmation",
    "RemoteError",
    "RemoteHive",
    "RemoteSubscription",
    "RemoteTurnStream",
    "ServiceUnavailable",
    "SessionPage",
    "Unauthorized",
    "check_target",
    "error_from_problem",
    "event_from_dict",
    "remote_hive_factory",
    "result_from_dict",
]
