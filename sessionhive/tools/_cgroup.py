"""A process limit for sandboxed commands that holds for root: one ``pids`` cgroup per call.

``RLIMIT_NPROC`` (``ulimit -u``) is not enforced for processes whose real
user is root outside every user namespace, and a sandboxed command started by
a root service is one of those (bubblewrap maps its user back to root). A
cgroup's ``pids.max`` counts every process in it whoever owns them, so where
this process may create cgroups (root, or a delegated subtree) each ``bash``
call gets a child cgroup of its own: the command is moved into it before it
execs bubblewrap, forks beyond the limit fail with ``EAGAIN``, and at the end
of the call every process left in it is killed and the cgroup removed.

Both hierarchies are handled: cgroup v2 (``cgroup.kill`` ends the whole
group at once) and the v1 ``pids`` controller (killed by listing
``cgroup.procs`` until it is empty; the limit keeps that list short).
"""

from __future__ import annotations

import errno
import functools
import itertools
import logging
import os
import signal
import threading
import time
from contextlib import suppress
from pathlib import Path

__all__ = ["CallCgroup", "PidsCgroupParent", "find_pids_cgroup"]

logger = logging.getLogger(__name__)

_KILL_PAUSE_S = 0.01
# How long, after its call ended, a cgroup may take to empty before we give up on removing it.
_REMOVE_PATIENCE_S = 10.0
_call_numbers = itertools.count(1)


class CallCgroup:
    """The cgroup of one sandboxed call: created with its limit, emptied and removed at the end."""

    def __init__(self, path: Path, *, version: int) -> None:
        self.path = path
        self.version = version
        self._removed = False

    @property
    def procs_file(self) -> Path:
        """Writing a pid here moves that process (and so all it later starts) into the cgroup."""
        return self.path / "cgroup.procs"

    def _pids(self) -> list[int]:
        try:
            return [int(line) for line in self.procs_file.read_text().split()]
        except (OSError, ValueError):
            return []

    def kill(self) -> bool:
        """SIGKILL every process now in the cgroup (one round); True when it held none."""
        kill_file = self.path / "cgroup.kill"
        if self.version == 2 and kill_file.exists():
            with suppress(OSError):
                kill_file.write_text("1")
        pids = self._pids()
        for pid in pids:
            with suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        return not pids

    def remove(self) -> None:
        """Kill every process in the cgroup and remove it (idempotent).

        Runs on the caller's thread (an event loop) only while that is one
        round of kills and an ``rmdir``; a cgroup that needs longer (processes
        forked before their SIGKILL landed, exits still under way) is finished
        by a background thread, so the call returns at once.
        """
        if self._removed:
            return
        self._removed = True
        self.kill()
        if self._try_rmdir():
            return
        threading.Thread(target=self._remove_later, name="sessionhive-cgroup-reaper", daemon=True).start()

    def _try_rmdir(self) -> bool:
        try:
            self.path.rmdir()
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                return False
            logger.warning("could not remove cgroup %s: %s", self.path, exc)
            return True
        return True

    def _remove_later(self) -> None:
        deadline = time.monotonic() + _REMOVE_PATIENCE_S
        while time.monotonic() < deadline:
            # pids.max keeps each round short; exits take a moment to leave cgroup.procs.
            self.kill()
            if self._try_rmdir():
                return
            time.sleep(_KILL_PAUSE_S)
        logger.warning("cgroup %s is still busy %g s after its call ended", self.path, _REMOVE_PATIENCE_S)


class PidsCgroupParent:
    """A directory under which this process can create cgroups that carry a ``pids.max``."""

    def __init__(self, path: Path, *, version: int) -> None:
        self.path = path
        self.version = version

    def __repr__(self) -> str:
        return f"PidsCgroupParent({str(self.path)!r}, version={self.version})"

    def new_call(self, max_processes: int) -> CallCgroup:
        """A fresh cgroup allowing at most ``max_processes`` processes (raises OSError if it cannot)."""
        path = self.path / f"sessionhive-{os.getpid()}-{next(_call_numbers)}"
        path.mkdir()
        call = CallCgroup(path, version=self.version)
        try:
            (path / "pids.max").write_text(str(max_processes))
        except OSError:
            call.remove()
            raise
        return call


def _own_cgroups() -> tuple[dict[str, str], str | None]:
    """This process's v1 cgroup path per controller, and its v2 path (``/proc/self/cgroup``)."""
    v1: dict[str, str] = {}
    v2: str | None = None
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return v1, v2
    for line in lines:
        number, controllers, path = line.split(":", 2)
        if number == "0" and controllers == "":
            v2 = path
        for controller in controllers.split(","):
            v1[controller] = path
    return v1, v2


def _mounts() -> list[tuple[str, str, set[str]]]:
    """``(filesystem type, mount point, options)`` of every cgroup mount."""
    found: list[tuple[str, str, set[str]]] = []
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        fields = line.split()
        if len(fields) >= 4 and fields[2] in ("cgroup", "cgroup2"):
            found.append((fields[2], fields[1], set(fields[3].split(","))))
    return found


def _candidates() -> list[PidsCgroupParent]:
    v1, v2 = _own_cgroups()
    candidates = []
    for fstype, mount_point, options in _mounts():
        if fstype == "cgroup2" and v2 is not None:
            candidates.append(PidsCgroupParent(Path(mount_point + v2.rstrip("/")), version=2))
        elif fstype == "cgroup" and "pids" in options and "pids" in v1:
            candidates.append(PidsCgroupParent(Path(mount_point + v1["pids"].rstrip("/")), version=1))
    # v2 first: cgroup.kill ends a group in one write.
    return sorted(candidates, key=lambda parent: -parent.version)


def _usable(parent: PidsCgroupParent) -> bool:
    if parent.version == 2:
        controllers = (parent.path / "cgroup.controllers").read_text().split()
        if "pids" not in controllers:
            return False
        enabled = (parent.path / "cgroup.subtree_control").read_text().split()
        if "pids" not in enabled:
            # Fails (EBUSY) where processes live in this cgroup and it is not the root:
            # cgroup v2 forbids controllers on a cgroup that holds processes itself.
            (parent.path / "cgroup.subtree_control").write_text("+pids")
    probe = parent.new_call(1)
    probe.remove()
    return True


def _remove_stale(parent: PidsCgroupParent) -> None:
    """Remove the empty call cgroups of processes that died without removing them (a SIGKILL)."""
    for path in parent.path.glob("sessionhive-*-*"):
        owner = path.name.split("-")[1]
        if owner.isdigit() and not Path("/proc", owner).exists():
            with suppress(OSError):  # still busy, or another process got there first
                path.rmdir()


@functools.lru_cache(maxsize=1)
def find_pids_cgroup() -> PidsCgroupParent | None:
    """Where per-call ``pids`` cgroups can be made here, or None (checked once per process)."""
    for parent in _candidates():
        try:
            if _usable(parent):
                _remove_stale(parent)
                return parent
        except OSError as exc:
            logger.debug("no per-call pids cgroup under %s: %s", parent.path, exc)
    return None
