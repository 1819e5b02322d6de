"""A real MCP server for the tests, built with the ``mcp`` package's own server API.

Run as ``python server.py stdio`` or ``python server.py http PORT``. Every
process appends its pid to ``connections.log`` in its working directory, so a
test counts the connections (stdio: one process each) at the server.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from mcp.server.mcpserver import Context, Image, MCPServer
from mcp.types import ToolAnnotations

server = MCPServer("fixture")


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def add(a: int, b: int) -> str:
    """Add two integers."""
    return str(a + b)


@server.tool()
def write(path: str, text: str) -> str:
    """Write text to a file, wherever the process may."""
    Path(path).write_text(text)
    return f"wrote {len(text)} characters to {path}"


@server.tool()
def crash() -> str:
    """Die by SIGKILL in the middle of the call, as a server killed from outside would."""
    os.kill(os.getpid(), signal.SIGKILL)
    return "not reached"


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def flaky_read() -> str:
    """A read that kills its server the first time (it leaves crashed.once behind), then answers."""
    marker = Path("crashed.once")
    if not marker.exists():
        marker.write_text("1")
        os.kill(os.getpid(), signal.SIGKILL)
    return "read ok"


#: What ``picture`` returns: bytes no encoding step may change (every byte value).
PICTURE = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 20


@server.tool(annotations=ToolAnnotations(read_only_hint=True), structured_output=False)
def picture() -> list[str | Image]:
    """A caption and an image (PNG bytes)."""
    return ["a test picture", Image(data=PICTURE, format="png")]


def shout(text: str) -> str:
    """Upper-case the text (offered only after ``grow``)."""
    return text.upper()


@server.tool()
async def grow(ctx: Context) -> str:
    """Add the tool ``shout`` and tell the client that the tool list changed."""
    server.add_tool(shout)
    await ctx.session.send_tool_list_changed()
    return "shout added"


if __name__ == "__main__":
    with open("connections.log", "a") as log:
        log.write(f"{os.getpid()}\n")
    if sys.argv[1] == "stdio":
        server.run("stdio")
    else:
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
