"""Content parts on the wire: images and PDFs reach OpenAI- and Anthropic-format servers as they expect.

The official SDKs talk over real HTTP to the loopback servers of
``llm_servers``; the tests decode what the server received and compare the
bytes with what the caller handed over.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sessionhive import (
    ContentPart,
    FilePart,
    Hive,
    ImagePart,
    InvalidConfig,
    Message,
    SessionConfig,
    TextPart,
    ToolCall,
)
from sessionhive.llm import LlmRequest
from tests.llm.llm_servers import AnthropicServer, LoopbackLlmServer, OpenAiServer, ReplySpec
from tests.llm.test_llm_hive import NO_CONFIRM, config_for
from tests.llm.test_llm_providers import Provider, run

IMAGE = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 24  # past the blob threshold: stored as a blob
PDF = b"%PDF-1.7\n" + bytes(range(256)) * 3


@pytest.fixture(params=["openai", "anthropic"])
def server(request: pytest.FixtureRequest) -> Iterator[LoopbackLlmServer]:
    with OpenAiServer() if request.param == "openai" else AnthropicServer() as started:
        started.provider = request.param  # type: ignore[attr-defined]
        yield started


def data_url_bytes(url: str, media_type: str) -> bytes:
    prefix = f"data:{media_type};base64,"
    assert url.startswith(prefix)
    return base64.b64decode(url[len(prefix) :])


def received_parts(provider: str, body: dict[str, Any]) -> tuple[str, bytes, bytes]:
    """The text, image bytes and PDF bytes of the first user message ``body`` carries."""
    content = body["messages"][0]["content"]
    if provider == "openai":
        text, image, document = content
        assert image["type"] == "image_url" and document["type"] == "file"
        assert document["file"]["filename"] == "report.pdf"
        return (
            text["text"],
            data_url_bytes(image["image_url"]["url"], "image/png"),
            data_url_bytes(document["file"]["file_data"], "application/pdf"),
        )
    text, image, document = content
    assert image["type"] == "image" and image["source"]["type"] == "base64"
    assert image["source"]["media_type"] == "image/png"
    assert document["type"] == "document" and document["source"]["media_type"] == "application/pdf"
    assert document["title"] == "report.pdf"
    return (
        text["text"],
        base64.b64decode(image["source"]["data"]),
        base64.b64decode(document["source"]["data"]),
    )


def test_an_image_and_a_workspace_pdf_reach_the_provider_and_survive_a_restart(
    server: LoopbackLlmServer, workspace: Path, tmp_path: Path
) -> None:
    provider = server.provider  # type: ignore[attr-defined]
    (workspace / "report.pdf").write_bytes(PDF)
    store = f"sqlite:///{tmp_path / 'h.db'}"
    prompt: list[ContentPart] = [
        TextPart("What is in these?"),
        ImagePart(IMAGE, "image/png"),
        FilePart(path="report.pdf"),
    ]
    server.script(ReplySpec("A picture and a report."), ReplySpec("Still the same picture."))
    with Hive.start(store=store, llm=config_for(server), workspace=workspace) as hive:
        hive.create_session("s", NO_CONFIRM)
        result = hive.generate("s", prompt)
    assert result.text == "A picture and a report."
    assert received_parts(provider, server.bodies[0]) == ("What is in these?", IMAGE, PDF)

    with Hive.start(store=store, llm=config_for(server), workspace=workspace) as hive:  # a restart
        history = hive.history("s")
        assert history[0].text == "What is in these?"
        assert history[0].parts[1] == ImagePart(IMAGE, "image/png")
        assert history[0].parts[2] == FilePart(PDF, "application/pdf", name="report.pdf")
        hive.generate("s", "And now?")
    # The restored history carries the parts to the provider again, byte for byte.
    assert received_parts(provider, server.bodies[1]) == ("What is in these?", IMAGE, PDF)


def test_an_image_url_and_a_tool_image_in_each_wire_format(server: LoopbackLlmServer) -> None:
    provider = server.provider  # type: ignore[attr-defined]
    server.script(ReplySpec("ok"))
    model = "gpt-4o-mini" if provider == "openai" else "claude-test-1"
    client = Provider(provider, server, "", model).client()
    shot = ImagePart(IMAGE, "image/png")
    history = (
        Message.user("", (TextPart("Compare"), ImagePart(url="https://example.com/a.png"))),
        Message.assistant("", (ToolCall("screenshot", {}, "call_1"),)),
        Message.tool("call_1", "[image result (image/png)]", parts=(shot,)),
    )

    run(client, lambda: client.complete(LlmRequest("s1", None, history)))

    (sent,) = server.bodies
    messages = sent["messages"]
    if provider == "openai":
        assert messages[0]["content"][1] == {
            "type": "image_url",
            "image_url": {"url": "https://example.com/a.png"},
        }
        # A chat tool message holds text only: the image follows the tool results as a user message.
        assert messages[2] == {
            "role": "tool",
            "tool_call_id": "call_1",
            "content": "[image result (image/png)]",
        }
        follow = messages[3]
        assert follow["role"] == "user" and "call_1" in follow["content"][0]["text"]
        assert data_url_bytes(follow["content"][1]["image_url"]["url"], "image/png") == IMAGE
    else:
        assert messages[0]["content"][1] == {
            "type": "image",
            "source": {"type": "url", "url": "https://example.com/a.png"},
        }
        (result,) = messages[2]["content"]
        assert result["type"] == "tool_result" and result["tool_use_id"] == "call_1"
        (image,) = result["content"]
        assert image["type"] == "image" and base64.b64decode(image["source"]["data"]) == IMAGE


def test_a_workspace_file_outside_the_workspace_is_refused(workspace: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.pdf"
    secret.write_bytes(PDF)
    os.symlink(secret, workspace / "link.pdf")
    with OpenAiServer() as server:
        server.provider = "openai"  # type: ignore[attr-defined]
        server.script(ReplySpec("never"))
        with Hive.start(store="memory", llm=config_for(server), workspace=workspace) as hive:
            hive.create_session("s", NO_CONFIRM)
            with pytest.raises(InvalidConfig, match="inside the session's workspace"):
                hive.generate("s", [FilePart(path="../secret.pdf")])
            with pytest.raises(InvalidConfig, match="inside the session's workspace"):
                hive.generate("s", [FilePart(path=str(secret))])
            # A symlink pointing out is resolved, and refused, before the turn starts; so is a missing file.
            with pytest.raises(InvalidConfig, match=r"link\.pdf' resolves to .* outside the workspace"):
                hive.generate("s", [TextPart("read it"), FilePart(path="link.pdf")])
            with pytest.raises(InvalidConfig, match=r"'gone\.pdf' is no file of the session's workspace"):
                hive.generate("s", [FilePart(path="gone.pdf")])
            assert server.bodies == []
            assert hive.list_runs("s") == []  # no run was started


def test_a_prompt_past_the_sessions_content_limit_is_refused(workspace: Path) -> None:
    with OpenAiServer() as server:
        server.provider = "openai"  # type: ignore[attr-defined]
        server.script(ReplySpec("one"))
        with Hive.start(store="memory", llm=config_for(server), workspace=workspace) as hive:
            limit = len(IMAGE) + 100
            hive.create_session("s", SessionConfig(max_content_bytes=limit))
            hive.generate("s", [ImagePart(IMAGE, "image/png")])
            with pytest.raises(InvalidConfig, match=rf"past its limit of {limit} .*max_content_bytes"):
                hive.generate("s", [ImagePart(IMAGE, "image/png")])
            assert len(server.bodies) == 1
