"""Structured output over real HTTP: a schema in the turn and run bodies, ``output`` in their results.

The service runs under uvicorn on 127.0.0.1 (``ServerThread``); the clients are
``httpx`` and ``RemoteHive`` / ``AsyncRemoteHive``. A model class cannot travel:
RemoteHive sends its JSON Schema and validates the returned output into it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydantic
import pytest

from sessionhive import Hive, Message, OutputInvalid, Reply, ScriptedLlm
from sessionhive.client import AsyncRemoteHive, RemoteHive
from sessionhive.llm.base import LlmRequest
from sessionhive.serve import ServerThread, openapi_document, serve_app


class Forecast(pydantic.BaseModel):
    city: str
    celsius: int


def answer_to_the_schema(messages: list[Message], request: LlmRequest) -> Reply:
    """Answers a Forecast when asked for one by name, invalid JSON when the prompt says "garble"."""
    if "garble" in messages[-1].text or "garble" in messages[0].text:
        return Reply("not json at all")
    if request.output is not None and request.output.name == "Forecast":
        return Reply('{"city": "Oslo", "celsius": -3}')
    if request.output is not None:
        return Reply('{"x": 1, "y": 2}')
    return Reply("plain")


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    with Hive.start(store="memory", llm=ScriptedLlm(answer_to_the_schema), workspace=tmp_path) as hive:
        for session in ("s", "bad"):
            hive.create_session(session)
        server = ServerThread(serve_app(hive, require_token=False))
        try:
            yield server.url
        finally:
            server.stop()


POINT = {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}


def test_remote_hive_sends_the_class_schema_and_returns_an_instance(url: str) -> None:
    with RemoteHive(url) as remote:
        result = remote.generate("s", "weather?", output_schema=Forecast)
        assert result.output == Forecast(city="Oslo", celsius=-3)
        stream = remote.generate_streaming("s", "weather?", output_schema=Forecast)
        for _event in stream:
            pass
        assert stream.result().output == Forecast(city="Oslo", celsius=-3)
        confirmed = remote.generate("s", "weather?", output_schema=Forecast, on_confirmation=lambda _e: True)
        assert confirmed.output == Forecast(city="Oslo", celsius=-3)
        run = remote.start_run("s", "a point", output_schema=POINT)
        assert remote.wait_run(run.run_id, timeout=30).output == {"x": 1, "y": 2}
        assert remote.generate("s", "no schema").output is None


def test_a_json_schema_in_the_body_gives_output_in_the_result(url: str) -> None:
    answer = httpx.post(
        f"{url}/v1/sessions/s/turns", json={"prompt": "p", "output_schema": POINT}, timeout=30
    )
    assert answer.status_code == 200
    assert answer.json()["output"] == {"x": 1, "y": 2}
    refused = httpx.post(f"{url}/v1/sessions/s/turns", json={"prompt": "p", "output_schema": "x"}, timeout=30)
    assert refused.status_code == 422 and refused.json()["error"] == "InvalidConfig"


def test_output_invalid_is_a_502_problem_and_the_remote_raises_it(url: str) -> None:
    answer = httpx.post(
        f"{url}/v1/sessions/bad/turns", json={"prompt": "garble", "output_schema": POINT}, timeout=30
    )
    assert answer.status_code == 502
    assert answer.json()["error"] == "OutputInvalid"
    with RemoteHive(url) as remote:
        with pytest.raises(OutputInvalid, match="output_schema"):
            remote.generate("bad", "garble again", output_schema=Forecast)
        stream = remote.generate_streaming("bad", "garble streamed", output_schema=POINT)
        for _event in stream:
            pass
        with pytest.raises(OutputInvalid):
            stream.result()
        assert remote.generate("bad", "and now?").text == "not json at all"  # the session goes on


def test_async_remote_hive_returns_an_instance(url: str) -> None:
    async def main() -> None:
        async with AsyncRemoteHive(url) as remote:
            result = await remote.generate("s", "weather?", output_schema=Forecast)
            assert result.output == Forecast(city="Oslo", celsius=-3)

    asyncio.run(main())


def test_openapi_documents_output_schema_and_output() -> None:
    schemas = openapi_document()["components"]["schemas"]
    for body in ("Turn", "StartRun"):
        assert "output_schema" in schemas[body]["properties"]
    for result in ("AgentResult", "Run"):
        assert "output" in schemas[result]["properties"]
