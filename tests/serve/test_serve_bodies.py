"""Bad request bodies are a 400 (or a 422 naming the field), never a 500: real HTTP on 127.0.0.1.

Each body here gave a 500 with a traceback, or would have reached the file
system or the store, before the checks in serve/_bodies.py and
model/validate.py: a NUL in a workspace, JSON nested 100,000 deep, numbers no
field can hold, lone surrogates, a NUL in a tool id.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sessionhive import (
    ConfirmationPolicy,
    Hive,
    InvalidConfig,
    InvalidSessionId,
    Reply,
    ScriptedLlm,
    SessionConfig,
)
from sessionhive.model.ids import MAX_ID_LENGTH, check_id, id_pattern
from sessionhive.model.validate import MAX_INT, MAX_SECONDS, check_int, check_path
from sessionhive.serve import ServerThread, openapi_document, serve_app
from sessionhive.serve._bodies import MAX_DEPTH

TOKEN = "bodies-test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Served:
    http: httpx.Client
    workspace: Path
    hive: Hive

    def create(self, body: dict[str, Any] | bytes) -> httpx.Response:
        if isinstance(body, bytes):
            return self.http.post("/v1/sessions", content=body, headers={"Content-Type": "application/json"})
        return self.http.post("/v1/sessions", json=body)


@pytest.fixture
def served(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Iterator[Served]:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    caplog.set_level(logging.ERROR, logger="sessionhive.serve")
    with Hive.start(
        store=f"sqlite:///{tmp_path / 'bodies.db'}", llm=ScriptedLlm([Reply("hi")]), workspace=workspace
    ) as hive:
        app = serve_app(hive, token=TOKEN, max_body=4 << 20, workspace_root=workspace)
        with ServerThread(app) as server, httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as http:
            yield Served(http, workspace, hive)
            # A 500 is logged with its traceback; none of these requests may produce one.
            assert not [r for r in caplog.records if r.name == "sessionhive.serve"], caplog.text


def invalid_body(response: httpx.Response, detail: str) -> None:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["error"] == "InvalidBody", body
    assert re.search(detail, body["detail"]), body["detail"]


def test_a_nul_in_the_workspace_is_a_400_and_creates_nothing(served: Served) -> None:
    before = sorted(served.workspace.rglob("*"))
    invalid_body(served.create({"id": "a", "config": {"workspace": "team\x00/x"}}), "NUL")
    assert sorted(served.workspace.rglob("*")) == before
    assert served.http.get("/v1/sessions/a").status_code == 404


def test_a_workspace_path_the_file_system_refuses_is_a_400_or_422_not_a_500(served: Served) -> None:
    invalid_body(served.create({"id": "a", "config": {"workspace": "x" * 300}}), "component of 300 bytes")
    invalid_body(served.create({"id": "a", "config": {"workspace": "d/" * 2100}}), "limit is 4096")
    (served.workspace / "a-file").write_text("not a directory")
    taken = served.create({"id": "a", "config": {"workspace": "a-file/below"}})
    assert taken.status_code == 422 and "cannot be created" in taken.json()["detail"]
    made = served.create({"id": "a", "config": {"workspace": "team/a"}})
    assert made.status_code == 201 and (served.workspace / "team" / "a").is_dir()


@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_json_nested_100000_deep_is_a_400_before_the_parser_recurses(served: Served, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    deep = '{"id": "a", "config": {"metadata": {"x": ' + opener * 100_000 + "1" + closer * 100_000 + "}}}"
    invalid_body(served.create(deep.encode()), f"deeper than {MAX_DEPTH} levels")
    assert served.http.get("/v1/stats").status_code == 200  # and the service answers on


def test_the_depth_limit_is_exactly_64_and_brackets_inside_strings_do_not_count(served: Served) -> None:
    def nested(depth: int) -> bytes:
        # The body object is level 1, config 2, metadata 3: the rest is filled with {"a": ...}.
        inner = '{"a": ' * (depth - 2) + '"[[[{{{"' + "}" * (depth - 2)
        return f'{{"id": "s{depth}", "config": {{"metadata": {inner}}}}}'.encode()

    assert served.create(nested(MAX_DEPTH)).status_code == 201
    invalid_body(served.create(nested(MAX_DEPTH + 1)), "deeper than 64")
    prompt = {"prompt": "[" * 100_000 + '\\"{' * 1000}
    assert served.http.post("/v1/sessions/s64/turns", json=prompt).status_code == 200


@pytest.mark.parametrize(
    "number",
    [
        "9223372036854775808",
        "-9223372036854775809",
        "1" * 5000,
        "1e999",
        "-1e999",
        "1e300",
        "NaN",
        "Infinity",
        "-Infinity",
    ],
)
def test_a_number_no_field_can_hold_is_a_400(served: Served, number: str) -> None:
    body = f'{{"id": "a", "config": {{"max_tool_rounds": {number}}}}}'
    invalid_body(served.create(body.encode()), "beyond what any field takes|not a JSON number")
    invalid_body(served.create(f'{{"id": "a", "anything": [{number}]}}'.encode()), "")


def test_numbers_within_range_pass_and_a_whole_float_is_an_integer(served: Served) -> None:
    metadata = f'{{"big": {MAX_INT}, "small": {-MAX_INT - 1}, "tiny": 1e-300}}'
    body = f'{{"id": "a", "config": {{"max_tool_rounds": 3.0, "metadata": {metadata}}}}}'
    assert served.create(body.encode()).status_code == 201
    out_of_its_range = served.create({"id": "b", "config": {"auto_compact_threshold": 2}})
    assert out_of_its_range.status_code == 422
    assert "auto_compact_threshold" in out_of_its_range.json()["detail"]
    too_long = served.create({"id": "c", "config": {"confirmation_policy": {"timeout_s": 1e12}}})
    assert too_long.status_code == 422 and "timeout_s" in too_long.json()["detail"]


def test_a_lone_surrogate_is_a_400_and_a_surrogate_pair_a_character(served: Served) -> None:
    invalid_body(served.create(b'{"id": "a", "config": {"system_prompt": "x\\ud800y"}}'), "surrogate")
    invalid_body(served.create(b'{"id": "a", "\\udfff": 1}'), "surrogate")
    assert served.create(b'{"id": "a", "config": {"system_prompt": "\\ud83d\\ude00"}}').status_code == 201
    assert served.http.get("/v1/sessions/a").status_code == 200


def test_a_body_that_is_not_utf8_is_a_400(served: Served) -> None:
    invalid_body(served.create('{"id": "a"}'.encode("utf-16")), "not UTF-8")
    invalid_body(served.create(b'{"id": "\xff"}'), "not UTF-8")


def test_a_nul_in_an_id_or_tool_id_is_a_400(served: Served) -> None:
    refused = served.create({"id": "a\x00b"})
    assert refused.status_code == 400 and refused.json()["error"] == "InvalidSessionId"
    assert served.create({"id": "a"}).status_code == 201
    for tool_id in ("call%00one", "call%0A", "%E2%80%8B"):  # NUL, a newline, a zero-width space
        answer = served.http.post(f"/v1/sessions/a/confirmations/{tool_id}", json={"approved": True})
        invalid_body(answer, "tool id")
    unknown = served.http.post("/v1/sessions/a/confirmations/call_1", json={"approved": True})
    assert unknown.status_code == 404 and unknown.json()["error"] == "ConfirmationNotFound"


def test_model_config_fields_llm_config_leaves_open_are_checked_over_http(served: Served) -> None:
    assert served.create({"id": "a"}).status_code == 201
    for model_config, field in (
        ({"provider": "scripted", "model": "m", "base_url": 5}, "base_url"),
        ({"provider": "scripted", "model": "m", "temperature": "hot"}, "temperature"),
        ({"provider": "scripted", "model": "m", "timeout_s": 1e12}, "timeout_s"),
    ):
        answer = served.http.put("/v1/sessions/a/configure", json={"model_config": model_config})
        assert answer.status_code == 422 and field in answer.json()["detail"], answer.text


def test_the_library_refuses_the_same_values_by_name() -> None:
    with pytest.raises(InvalidConfig, match=r"SessionConfig\.workspace must not contain a NUL"):
        SessionConfig(workspace="a\x00b")
    with pytest.raises(InvalidConfig, match="component of 256 bytes"):
        SessionConfig(workspace="/tmp/" + "x" * 256)
    with pytest.raises(InvalidConfig, match="no file name can"):
        check_path("p", "\ud800")
    with pytest.raises(
        InvalidConfig, match=r"SessionConfig.max_tool_rounds must be an integer >= 1 \(and below 2\*\*63\)"
    ):
        SessionConfig(max_tool_rounds=MAX_INT + 1)
    with pytest.raises(
        InvalidConfig,
        match=r"ConfirmationPolicy\.timeout_s must be a finite number > 0 and <= 2592000 seconds",
    ):
        ConfirmationPolicy(timeout_s=1e300)
    assert check_int("n", MAX_INT) == MAX_INT
    assert ConfirmationPolicy(timeout_s=MAX_SECONDS).timeout_s == MAX_SECONDS


@settings(max_examples=300, database=None, deadline=None)
@given(
    st.text(max_size=6) | st.sampled_from([" a", "a ", "a\n", "\u200b", "a\u2028b", "\x85", "x/y", "\u00e9"])
)
def test_the_openapi_id_pattern_accepts_exactly_what_check_id_accepts(candidate: str) -> None:
    try:
        check_id(candidate)
        accepted = True
    except InvalidSessionId:
        accepted = False
    matched = re.fullmatch(id_pattern(), candidate) is not None and len(candidate) <= MAX_ID_LENGTH
    assert matched == accepted


def test_every_authenticated_route_documents_401_and_403_and_every_body_route_400_413_422() -> None:
    document = openapi_document()
    for path, methods in document["paths"].items():
        for operation in methods.values():
            statuses = set(operation["responses"])
            if operation["security"]:
                assert {"401", "403", "503"} <= statuses, path
            if "requestBody" in operation:
                assert {"400", "413", "422"} <= statuses, path
            if "{session_id}" in path:
                assert {"400", "404"} <= statuses, path


def test_a_blank_paging_parameter_is_refused_not_ignored(served: Served) -> None:
    for query in ("offset=", "limit=", "limit=0", "offset=-1", "limit=x"):
        invalid_body(served.http.get(f"/v1/sessions?{query}"), "query parameter")
