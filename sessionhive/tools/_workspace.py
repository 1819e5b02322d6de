"""Workspace confinement: resolving tool paths, refusing escapes, and writing files atomically.

Every path a built-in tool touches goes through :func:`resolve_inside`, which
resolves it the way the operating system will (``os.path.realpath``: ``..``,
symlinked directories, and a symlink as the final component) and refuses the
result unless it lies under the workspace root. The check happens before any
read or write, so a refused path is never touched.

This defends against an LLM naming paths outside its workspace, not against a
concurrent process inside the workspace swapping a directory for a symlink
between the check and the use (the ``bash`` tool could do that; it is
unconfined and asks a human by default).
"""

from __future__ import annotations

import functools
import os
import secrets
import stat
from contextlib import suppress
from pathlib import Path

from sessionhive.tools._common import ToolError

__all__ = ["atomic_write_text", "relative", "resolve_inside", "resolve_root"]


@functools.lru_cache(maxsize=4096)
def _real_root(workspace: str) -> str:
    # A workspace's real path is resolved once: realpath stats every
    # component, and it ran on every tool call of every session.
    return os.path.realpath(workspace)


def resolve_root(workspace: str | os.PathLike[str]) -> Path:
    """The real path of a workspace directory; a :class:`ToolError` unless it is an existing directory."""
    real = _real_root(os.fspath(workspace))
    if not os.path.isdir(real):
        _real_root.cache_clear()  # gone, or replaced: resolve afresh next time
        raise ToolError(
            f"the workspace {os.fspath(workspace)!r} is not an existing directory; "
            "create it, or configure the session with an existing workspace"
        )
    return Path(real)


def resolve_inside(root: Path, path: object) -> Path:
    """The real path ``path`` names, relative to ``root`` unless absolute; refused outside ``root``.

    ``root`` must come from :func:`resolve_root`. The returned path contains
    no symlinks in its existing part, so using it cannot be redirected by
    one.
    """
    if not isinstance(path, str) or not path:
        raise ToolError("path must be a non-empty string, relative to the workspace or absolute inside it")
    if "\0" in path:
        raise ToolError(f"path {path!r} contains a NUL character; file names cannot")
    real = os.path.realpath(os.path.join(root, path))
    if os.path.commonpath([real, root]) != str(root):
        raise ToolError(
            f"path {path!r} resolves to {real}, which is outside the workspace {root}; "
            "tools may only use files inside the workspace (relative paths are taken from it)"
        )
    return Path(real)


def relative(root: Path, path: Path) -> str:
    """``path`` as the LLM should write it: relative to the workspace, with ``/``."""
    return Path(os.path.relpath(path, root)).as_posix()


def atomic_write_text(target: Path, content: str) -> None:
    """Replace ``target`` with ``content`` (UTF-8) so readers see the old or the new file, never half.

    Writes a temporary file beside ``target``, syncs it, and renames it over
    ``target``; parent directories are created. An existing file keeps its
    permission bits; a new one gets the default mode under the umask.
    """
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    try:
        mode: int | None = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = None
    temp = parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
    # O_EXCL: never write through something already at the temporary name.
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        if mode is not None:
            os.chmod(temp, mode)
        os.replace(temp, target)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temp)
        raise
