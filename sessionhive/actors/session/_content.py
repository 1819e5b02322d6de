"""The checks a session makes of a prompt's content parts when it accepts the turn."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sessionhive.model.content import ContentPart, part_bytes
from sessionhive.model.errors import InvalidConfig
from sessionhive.tools.files import WorkspaceFileRefused, check_workspace_parts

if TYPE_CHECKING:
    from sessionhive.actors.session._state import SessionState

__all__ = ["check_prompt_parts"]


def check_prompt_parts(session: SessionState, parts: tuple[ContentPart, ...]) -> None:
    """InvalidConfig when a workspace file ``parts`` name cannot be read from the session's workspace
    (missing, or outside it), or when they would take the session's images and files past
    ``SessionConfig.max_content_bytes``."""
    workspace = session.config.workspace or session.services.workspace
    try:
        from_files = check_workspace_parts(workspace, parts)
    except WorkspaceFileRefused as exc:
        raise InvalidConfig(str(exc)) from None
    limit = session.config.max_content_bytes
    held = sum(part_bytes(part) for message in session.messages for part in message.parts)
    adding = sum(part_bytes(part) for part in parts) + from_files
    if held + adding > limit:
        raise InvalidConfig(
            f"session {session.session_id!r} holds {held} bytes of images and files; this prompt adds "
            f"{adding}, past its limit of {limit} (SessionConfig.max_content_bytes)"
        )
