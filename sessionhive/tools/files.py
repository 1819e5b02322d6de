"""Reading the workspace files a prompt names (``FilePart(path=...)``), confined to the workspace."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

from sessionhive.model.content import ContentPart, FilePart
from sessionhive.model.validate import MAX_PART_BYTES
from sessionhive.tools._common import ToolError
from sessionhive.tools._workspace import resolve_inside, resolve_root

__all__ = ["WorkspaceFileRefused", "check_workspace_parts", "read_workspace_parts"]


class WorkspaceFileRefused(ToolError):
    """A ``FilePart`` path that resolves outside the workspace, is missing, or is too large."""


def check_workspace_parts(workspace: str | os.PathLike[str], parts: Sequence[ContentPart]) -> int:
    """The bytes of the workspace files ``parts`` name; WorkspaceFileRefused for one that cannot be read.

    Checked when a session accepts a turn, so that a caller learns of a
    missing file, or one outside the workspace, before the turn starts.
    """
    paths = [part.path for part in parts if isinstance(part, FilePart) and part.path is not None]
    if not paths:
        return 0
    try:
        root = resolve_root(workspace)
        total = 0
        for path in paths:
            real = resolve_inside(root, path)
            if not real.is_file():
                raise WorkspaceFileRefused(f"{path!r} is no file of the session's workspace")
            size = real.stat().st_size
            if size > MAX_PART_BYTES:
                raise WorkspaceFileRefused(
                    f"{path} holds {size} bytes; the limit of a part is {MAX_PART_BYTES}"
                )
            total += size
    except WorkspaceFileRefused:
        raise
    except OSError as exc:
        raise WorkspaceFileRefused(f"cannot read a file of the workspace: {exc.strerror}") from None
    except ToolError as exc:
        raise WorkspaceFileRefused(str(exc)) from None
    return total


def read_workspace_parts(
    workspace: str | os.PathLike[str], parts: Sequence[ContentPart]
) -> tuple[ContentPart, ...]:
    """``parts`` with every workspace ``FilePart`` replaced by one holding the file's bytes.

    The path is resolved as the OS will (symlinks and ``..`` included) and
    refused unless it lies inside ``workspace``: a prompt can hand the model a
    file of its session's workspace, never one outside it. The read part
    keeps the path as its ``name``.
    """
    if not any(isinstance(part, FilePart) and part.path is not None for part in parts):
        return tuple(parts)
    try:
        root = resolve_root(workspace)
    except ToolError as exc:
        raise WorkspaceFileRefused(str(exc)) from None
    read: list[ContentPart] = []
    for part in parts:
        if not isinstance(part, FilePart) or part.path is None:
            read.append(part)
            continue
        try:
            real = resolve_inside(root, part.path)
            size = os.path.getsize(real)
            if size > MAX_PART_BYTES:
                raise WorkspaceFileRefused(
                    f"{part.path} holds {size} bytes; the limit of a part is {MAX_PART_BYTES}"
                )
            data = real.read_bytes()
        except OSError as exc:
            raise WorkspaceFileRefused(
                f"cannot read {part.path!r} from the workspace: {exc.strerror}"
            ) from None
        except ToolError as exc:
            raise WorkspaceFileRefused(str(exc)) from None
        read.append(dataclasses.replace(part, data=data, path=None, name=part.path))
    return tuple(read)
