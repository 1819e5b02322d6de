"""Content parts over HTTP: RemoteHive sends them as JSON (base64 bytes) to a real ``serve``."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from jsonschema import Draft202012Validator

from sessionhive import FilePart, Hive, ImagePart, InvalidConfig, Message, Reply, ScriptedLlm, TextPart
from sessionhive.client import AsyncRemoteHive, RemoteHive
from sessionhive.serve import ServerThread, openapi_document, serve_app

TOKEN = "parts-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
IMAGE = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
PDF = b"%PDF-1.7\n" + bytes(range(256))
MAX_BODY = 64 * 1024


def describe(messages: list[Message]) -> Reply:
    """A model that says what the prompt's parts are, byte counts included: it sees the parts."""
    prompt = messages[-1]
    seen = [
        f"{type(p).__name__}:{len(p.data or b'') if not isinstance(p, TextPart) else p.text}"
        for p in prompt.parts
    ]
    return Reply(" ".join(seen) or f"text:{prompt.text}")


@dataclass
class Served:
    url: str
    hive: Hive


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "notes.pdf").write_bytes(PDF)
    with (
        Hive.start(
            store=f"sqlite:///{tmp_path / 's.db'}", llm=ScriptedLlm(describe), workspace=workspace
        ) as hive,
        ServerThread(serve_app(hive, token=TOKEN, max_body=MAX_BODY)) as server,
    ):
        yield Served(server.url, hive)


def test_a_remote_generate_with_parts_reaches_the_model_and_comes_back_in_the_history(served: Served) -> None:
    with RemoteHive(served.url, token=TOKEN) as remote:
        remote.create_session("s")
        result = remote.generate(
            "s", [TextPart("what is this?"), ImagePart(IMAGE, "image/png"), FilePart(path="notes.pdf")]
        )
        assert result.text == f"TextPart:what is this? ImagePart:{len(IMAGE)} FilePart:{len(PDF)}"
        (prompt, _answer) = remote.history("s")
    assert prompt.text == "what is this?"
    assert prompt.parts == (
        TextPart("what is this?"),
        ImagePart(IMAGE, "image/png"),
        FilePart(PDF, "application/pdf", name="notes.pdf"),
    )
    assert served.hive.history("s")[0] == prompt  # the service holds exactly what the client sees


def test_an_async_remote_run_takes_parts(served: Served) -> None:
    async def main() -> str | None:
        async with AsyncRemoteHive(served.url, token=TOKEN) as remote:
            await remote.create_session("s")
            run = await remote.start_run("s", [ImagePart(url="https://example.com/a.png")])
            return (await remote.wait_run(run.run_id)).text

    assert asyncio.run(main()) == "ImagePart:0"


def test_bad_parts_are_refused_with_a_422_naming_the_part(served: Served) -> None:
    with httpx.Client(base_url=served.url, headers=AUTH, timeout=30) as http:
        assert http.post("/v1/sessions", json={"id": "s"}).status_code in (200, 201)

        def turn(prompt: object) -> httpx.Response:
            return http.post("/v1/sessions/s/turns", json={"prompt": prompt})

        cases = {
            "empty sequence": turn([]),
            r"image/tiff": turn([{"type": "image", "media_type": "image/tiff", "data": "AAAA"}]),
            "not valid base64": turn([{"type": "image", "media_type": "image/png", "data": "%%%"}]),
            "type must be one of": turn([{"type": "audio"}]),
            "inside the session's workspace": turn([{"type": "file", "path": "../etc/passwd"}]),
        }
        for detail, response in cases.items():
            assert response.status_code == 422, (detail, response.text)
            assert detail in response.json()["detail"], (detail, response.json())
        # Base64 bytes count against the service's body limit like any other body.
        big = base64.b64encode(bytes(MAX_BODY)).decode()
        too_big = turn([{"type": "image", "media_type": "image/png", "data": big}])
        assert too_big.status_code == 413
    with RemoteHive(served.url, token=TOKEN) as remote, pytest.raises(InvalidConfig, match="image/tiff"):
        remote.generate("s", [ImagePart(b"x", "image/tiff")])  # refused by the client before it sends


def test_the_openapi_document_describes_exactly_the_parts_the_service_takes() -> None:
    document = openapi_document()
    resolver = {"components": document["components"], **document["components"]["schemas"]["Prompt"]}
    validator = Draft202012Validator(resolver)
    sent = [
        part.to_dict()
        for part in (
            TextPart("hi"),
            ImagePart(IMAGE, "image/png"),
            ImagePart(url="https://example.com/a.png"),
            FilePart(PDF, name="a.pdf"),
            FilePart(path="docs/a.pdf"),
        )
    ]
    assert validator.is_valid(sent) and validator.is_valid("plain text")
    for refused in (
        [],
        [{"type": "image", "media_type": "image/tiff", "data": "AAAA"}],
        [{"type": "image", "media_type": "image/png", "data": "%%%"}],
        [{"type": "image", "url": "https://x", "data": "AAAA", "media_type": "image/png"}],
        [{"type": "file", "path": "../etc/passwd"}],
        [{"type": "file", "path": "a//b"}],
        [{"type": "text", "text": "x", "extra": "y"}],
    ):
        assert not validator.is_valid(refused), refused
