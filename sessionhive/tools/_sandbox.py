"""The ``bash`` sandbox: a bubblewrap command line that confines a command to its workspace.

Inside the sandbox the whole filesystem is read-only, ``/tmp`` and the home
directories are empty private scratch space (so dotfiles and keys there stay
hidden), any further hidden path (the store's directory) is masked, and only
the workspace is writable. The command has no network unless the session
allows it, and a CPU-time and file-size limit. Whether bubblewrap really
works here (it needs user namespaces, which some containers forbid) is
probed once per process by running ``true`` in the very sandbox a command
would get.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SandboxStatus", "bwrap_command", "probe_sandbox"]

# Where secrets usually live; each existing one becomes an empty tmpfs inside the sandbox.
_HOME_ROOTS = ("/home", "/root", "/var/lib/postgresql")
_PROBE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class SandboxStatus:
    """Whether commands can be sandboxed here; ``reason`` says why not (for the refusal message)."""

    available: bool
    bwrap: str | None = None
    extra_flags: tuple[str, ...] = ()
    reason: str = ""


def _is_inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _mask(path: str) -> list[str]:
    # A directory becomes an empty tmpfs; a file (an SQLite database) is covered by /dev/null.
    if os.path.isdir(path):
        return ["--tmpfs", path]
    if os.path.exists(path):
        return ["--ro-bind", "/dev/null", path]
    return []


def bwrap_command(
    status: SandboxStatus,
    workspace: Path,
    argv: Sequence[str],
    *,
    allow_network: bool,
    hidden: Iterable[str | os.PathLike[str]] = (),
    cpu_seconds: int,
    max_file_bytes: int,
) -> list[str]:
    """The command line that runs ``argv`` confined to ``workspace`` (which must be resolved).

    Limits are set by a small shell prologue inside the sandbox (``ulimit``),
    so they apply to the command and everything it starts.
    """
    if status.bwrap is None:
        raise RuntimeError("no sandbox available")
    ws = str(workspace)
    masks = [os.path.realpath(p) for p in (*_HOME_ROOTS, os.path.expanduser("~"), *hidden)]
    # Masks that contain the workspace go first (the workspace is bound back on top of
    # them); masks inside the workspace go after the bind, or the bind would undo them.
    outer = sorted({m for m in masks if not _is_inside(m, ws)})
    inner = sorted({m for m in masks if _is_inside(m, ws) and m != ws})
    cmd = [status.bwrap, *status.extra_flags, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    cmd += ["--tmpfs", "/tmp"]
    for path in outer:
        cmd += _mask(path)
    cmd += ["--bind", ws, ws]
    for path in inner:
        cmd += _mask(path)
    cmd += ["--chdir", ws, "--unshare-all", "--die-with-parent"]
    if allow_network:
        cmd.append("--share-net")
    # ``ulimit -t`` bounds CPU seconds, ``-f`` the size of any file written (in 1 KiB blocks
    # in bash, 512-byte blocks in a POSIX sh); then the user's command replaces the prologue shell.
    blocks = max(1, max_file_bytes // 1024)
    # The soft CPU limit sends SIGXCPU (the exit status says so); the hard one, a second
    # later, SIGKILL for a command that ignores it.
    prologue = (
        f"ulimit -S -t {cpu_seconds} && ulimit -H -t {cpu_seconds + 1} && ulimit -f {blocks} && "
        'exec "$0" -c "$1"'
    )
    shell, *rest = argv
    if rest[:1] != ["-c"] or len(rest) != 2:
        raise ValueError("argv must be [shell, '-c', command]")
    cmd += ["--", shell, "-c", prologue, shell, rest[1]]
    return cmd


@functools.lru_cache(maxsize=1)
def probe_sandbox() -> SandboxStatus:
    """Find bubblewrap and check, once per process, that it can run ``true`` in a full sandbox."""
    if not sys.platform.startswith("linux"):
        return SandboxStatus(False, reason=f"bubblewrap runs on Linux only (this is {sys.platform})")
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return SandboxStatus(
            False, reason="bubblewrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
        )
    failures: list[str] = []
    # Without a setuid bwrap an unprivileged user needs its own user namespace;
    # try the plain form first (root, setuid), then with --unshare-user.
    for extra in ((), ("--unshare-user",)):
        status = SandboxStatus(True, bwrap, extra)
        with tempfile.TemporaryDirectory(prefix="sessionhive-probe-") as scratch:
            workspace = Path(os.path.realpath(scratch))
            cmd = bwrap_command(
                status,
                workspace,
                [shutil.which("bash") or "/bin/sh", "-c", "true"],
                allow_network=False,
                cpu_seconds=5,
                max_file_bytes=1 << 20,
            )
            try:
                done = subprocess.run(
                    cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=_PROBE_TIMEOUT_S, check=False
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
                continue
        if done.returncode == 0:
            return status
        failures.append(done.stderr.decode("utf-8", "replace").strip() or f"exit code {done.returncode}")
    return SandboxStatus(
        False,
        bwrap,
        reason=f"bubblewrap is installed but cannot create a sandbox here ({'; '.join(failures)}); "
        "containers often forbid the user namespaces it needs",
    )
