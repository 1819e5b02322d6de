"""`sessionhive serve`'s HTTP API over real HTTP on 127.0.0.1: every route, every error status, auth."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sessionhive import (
    CallTimeout,
    ConfirmationRequired,
    Hive,
    InvalidConfig,
    LlmConfig,
    Message,
    Overloaded,
    Reply,
    ScriptedLlm,
    SessionPaused,
    StoreError,
    ToolCall,
)
from sessionhive.serve import ServeApp, ServerThread, openapi_document, serve_app
from sessionhive.serve.problems import problem_for

TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def script(messages: list[Message]) -> Reply:
    """'write ...' asks to write a file (confirmed by default); anything else answers at once."""
    last = messages[-1]
    if last.role == "tool":
        return Reply(f"done: {last.text[:30]}")
    if last.text.startswith("write"):
        return Reply("writing", [ToolCall("write_file", {"path": "out.txt", "content": last.text})])
    return Reply(f"echo {last.text}")


class Served:
    def __init__(self, hive: Hive, server: ServerThread, workspace: Path) -> None:
        self.hive, self.server, self.workspace = hive, server, workspace
        self.http = httpx.Client(base_url=server.url, headers=AUTH, timeout=30)
        self.anonymous = httpx.Client(base_url=server.url, timeout=30)

    def sse(self, path: str, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """POST and read the whole event stream, approving each confirmation as it arrives."""
        events: list[tuple[str, dict[str, Any]]] = []
        with self.http.stream("POST", path, json=body, headers={"Accept": "text/event-stream"}) as response:
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"].startswith("text/event-stream")
            kind = ""
            for line in response.iter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                    events.append((kind, data))
                    if kind == "ConfirmationRequired":
                        sid = data["session_id"]
                        answer = self.http.post(
                            f"/v1/sessions/{sid}/confirmations/{data['tool_id']}",
                            json={"approved": True, "reason": "looks fine"},
                        )
                        assert answer.json() == {"confirmed": True}
        return events


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "team").mkdir()
    with Hive.start(
        store=f"sqlite:///{tmp_path / 'serve.db'}",
        llm=ScriptedLlm(script),
        workspace=workspace,
    ) as hive:
        app = serve_app(hive, token=TOKEN, max_body=4096, workspace_root=workspace)
        with ServerThread(app) as server:
            served = Served(hive, server, workspace)
            yield served
            served.http.close()
            served.anonymous.close()


def problem(response: httpx.Response, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["error"] == error and body["title"] == error
    assert body["type"].endswith(error) and body["detail"]
    return body


def test_sessions_lifecycle_routes(served: Served) -> None:
    http = served.http
    created = http.post("/v1/sessions", json={"id": "team/alice", "config": {"system_prompt": "Be terse."}})
    assert created.status_code == 201 and created.json() == {"id": "team/alice"}
    child = http.post("/v1/sessions/team%2Falice/children", json={"id": "team/alice/helper"})
    assert child.status_code == 201 and child.json()["parent_id"] == "team/alice"
    assert http.get("/v1/sessions/team%2Falice/children").json() == {"ids": ["team/alice/helper"]}
    for n in range(3):
        assert http.post("/v1/sessions", json={"id": f"s{n}"}).status_code == 201

    listing = http.get("/v1/sessions", params={"offset": 1, "limit": 2}).json()
    everything = sorted(served.hive.list_sessions())
    assert listing["total"] == 5 and listing["ids"] == everything[1:3]
    detailed = http.get("/v1/sessions", params={"details": "true", "limit": 1}).json()
    assert (
        detailed["sessions"][0]["state"] == "idle" and detailed["sessions"][0]["usage"]["total_tokens"] == 0
    )

    shown = http.get("/v1/sessions/team%2Falice").json()
    assert shown["children"] == ["team/alice/helper"] and shown["is_child"] is False
    assert shown["llm"] == {**LlmConfig("scripted", "scripted").to_dict()}
    assert shown["confirmation_policy"]["require_confirmation"] == ["write_file", "edit_file", "bash"]
    assert http.get("/v1/sessions/team%2Falice%2Fhelper").json()["is_child"] is True

    result = http.post("/v1/sessions/s0/turns", json={"prompt": "hello"})
    assert result.status_code == 200 and result.json()["text"] == "echo hello"
    history = http.get("/v1/sessions/s0/history", params={"offset": 1, "limit": 1}).json()
    assert history["total"] == 2 and history["messages"] == [{"role": "assistant", "text": "echo hello"}]
    usage = http.get("/v1/sessions/s0/usage").json()
    assert usage == served.hive.usage("s0").to_dict() and usage["total_tokens"] > 0
    assert http.get("/v1/sessions/s0/context").json() == served.hive.context_usage("s0").to_dict()

    assert http.post("/v1/sessions/s0/compact").json() == {"compacted": True}
    assert http.post("/v1/sessions/s0/compact", params={"auto": "true"}).json() == {"compacted": False}
    assert http.post("/v1/sessions/s0/clear").status_code == 204
    assert served.hive.history("s0") == []

    assert http.delete("/v1/sessions/team%2Falice").status_code == 204
    assert sorted(served.hive.list_sessions()) == ["s0", "s1", "s2"]
    stats = http.get("/v1/stats").json()
    assert stats["sessions"] == 3 and stats["turns_in_flight"] == 0
    assert "write_file" in {t["name"] for t in http.get("/v1/tools").json()["tools"]}
    assert http.post("/v1/flush").status_code == 204
    assert http.get("/v1/store/health").json()["stores"][0]["status"] == "ok"
    assert http.post("/v1/load-all").json()["loaded"] >= 0


def test_control_policy_and_configure_routes(served: Served) -> None:
    http = served.http
    http.post("/v1/sessions", json={"id": "bob"})
    assert http.post("/v1/sessions/bob/pause").json() == {"changed": True, "state": "paused"}
    assert http.post("/v1/sessions/bob/pause").json()["changed"] is False
    paused = problem(http.post("/v1/sessions/bob/turns", json={"prompt": "hi"}), 409, "SessionPaused")
    assert paused["session_id"] == "bob"
    assert http.post("/v1/sessions/bob/resume").json() == {"changed": True, "state": "idle"}
    assert http.post("/v1/sessions/bob/cancel").json() == {"changed": False}

    policy = {"enabled": True, "require_confirmation": "all", "timeout_s": 5.0, "on_timeout": "approve"}
    assert http.put("/v1/sessions/bob/policy", json=policy).json() == policy
    assert http.get("/v1/sessions/bob/policy").json() == policy
    assert served.hive.get_confirmation_policy("bob").require_confirmation == "all"

    model = {"provider": "openai", "model": "gpt-4o-mini", "base_url": "http://127.0.0.1:9/v1"}
    assert (
        http.put("/v1/sessions/bob/configure", json={"model_config": model, "thinking": True}).status_code
        == 204
    )
    llm = http.get("/v1/sessions/bob/llm").json()
    assert llm["model"] == "gpt-4o-mini" and "api_key" not in llm
    refused = problem(
        http.put("/v1/sessions/bob/configure", json={"model_config": {**model, "api_key": "sk-secret-1"}}),
        422,
        "InvalidConfig",
    )
    assert "sk-secret-1" not in json.dumps(refused)


def test_turn_as_server_sent_events_with_a_confirmation_in_the_middle(served: Served) -> None:
    served.http.post("/v1/sessions", json={"id": "carol"})
    events = served.sse("/v1/sessions/carol/turns", {"prompt": "write the plan"})
    kinds = [kind for kind, _ in events]
    # The turn is a run: its first frame names it, and every event carries that run id.
    assert kinds[:2] == ["run", "TurnStart"] and kinds[-2:] == ["TurnEnd", "result"]
    assert {data["run_id"] for kind, data in events if kind != "result"} == {events[0][1]["run_id"]}
    asked = kinds.index("ConfirmationRequired")
    assert kinds.index("ConfirmationResolved") > asked and kinds.index("ToolEnd") > asked
    resolved = dict(events)["ConfirmationResolved"]
    assert resolved["outcome"] == "approved" and resolved["reason"] == "looks fine"
    result = events[-1][1]
    assert result["text"].startswith("done: ") and result["rounds"] == 2
    assert (served.workspace / "out.txt").read_text() == "write the plan"
    assert [m["role"] for m in result["messages"]] == ["user", "assistant", "tool", "assistant"]


def test_live_event_subscription(served: Served) -> None:
    http = served.http
    http.post("/v1/sessions", json={"id": "dave"})
    seen: list[str] = []
    subscribed = threading.Event()

    def listen() -> None:
        with (
            httpx.Client(base_url=served.server.url, headers=AUTH, timeout=30) as client,
            client.stream("GET", "/v1/sessions/dave/events") as response,
        ):
            assert response.headers["content-type"].startswith("text/event-stream")
            for line in response.iter_lines():
                if line.startswith("event: "):
                    seen.append(line[7:])
                    if line == "event: subscribed":
                        subscribed.set()
                    if line == "event: TurnEnd":
                        return

    listener = threading.Thread(target=listen)
    listener.start()
    assert subscribed.wait(10)
    http.post("/v1/sessions/dave/turns", json={"prompt": "hello"})
    listener.join(10)
    assert not listener.is_alive()
    assert seen[0] == "subscribed" and "TurnStart" in seen and seen[-1] == "TurnEnd"


def test_every_error_status(served: Served) -> None:
    http = served.http
    http.post("/v1/sessions", json={"id": "erin"})
    problem(http.get("/v1/sessions/nobody"), 404, "SessionNotFound")
    assert (
        problem(http.post("/v1/sessions", json={"id": "erin"}), 409, "SessionExists")["session_id"] == "erin"
    )
    problem(http.post("/v1/sessions", json={"id": " padded "}), 400, "InvalidSessionId")
    problem(http.post("/v1/sessions", content=b"{not json"), 400, "InvalidBody")
    problem(http.post("/v1/sessions", json=["a list"]), 400, "InvalidBody")
    problem(http.get("/v1/sessions", params={"limit": "lots"}), 400, "InvalidBody")
    bad = problem(
        http.post("/v1/sessions", json={"id": "x", "config": {"max_tool_rounds": 0}}), 422, "InvalidConfig"
    )
    assert "max_tool_rounds" in bad["detail"]
    problem(
        http.post("/v1/sessions", json={"id": "x", "config": {"sytem_prompt": "typo"}}), 422, "InvalidConfig"
    )
    outside = {"id": "x", "config": {"workspace": "../.."}}
    assert "outside" in problem(http.post("/v1/sessions", json=outside), 422, "InvalidConfig")["detail"]
    assert (
        http.post("/v1/sessions", json={"id": "inside", "config": {"workspace": "team"}}).status_code == 201
    )
    problem(http.put("/v1/sessions/erin/policy", json={"timeout_s": -1}), 422, "InvalidConfig")
    problem(http.post("/v1/sessions/erin/turns", json={"prompt": 42}), 422, "InvalidConfig")
    problem(
        http.post("/v1/sessions/erin/confirmations/call_9", json={"approved": True}),
        404,
        "ConfirmationNotFound",
    )
    problem(
        http.post("/v1/sessions/erin/confirmations/call_9", json={"approved": "yes"}), 422, "InvalidConfig"
    )
    problem(http.post("/v1/sessions", content=b'{"id": "' + b"x" * 5000 + b'"}'), 413, "PayloadTooLarge")
    problem(http.get("/v1/nothing/here"), 404, "NotFound")
    problem(http.get("/elsewhere"), 404, "NotFound")
    assert problem(http.put("/v1/sessions"), 405, "MethodNotAllowed") and True
    assert http.put("/v1/sessions").headers["allow"] == "GET, POST"


def test_a_call_without_an_answer_in_time_is_504(tmp_path: Path) -> None:
    with (
        Hive.start(store="memory", llm=ScriptedLlm(script), workspace=tmp_path, call_timeout=0.5) as hive,
        ServerThread(serve_app(hive, token=TOKEN)) as server,
        httpx.Client(base_url=server.url, headers=AUTH) as http,
    ):
        http.post("/v1/sessions", json={"id": "erin"})
        # clear waits behind a turn that waits for a human, longer than the call timeout.
        stream = hive.generate_streaming("erin", "write slowly")
        for event in stream:
            if isinstance(event, ConfirmationRequired):
                timed_out = problem(http.post("/v1/sessions/erin/clear"), 504, "CallTimeout")
                assert "no answer" in timed_out["detail"]
                hive.confirm_tool("erin", event.tool_id, False, "not now")
        stream.result()


def test_llm_not_configured_and_draining(tmp_path: Path) -> None:
    with (
        Hive.start(store="memory", workspace=tmp_path) as hive,
        ServerThread(serve_app(hive, token=TOKEN)) as server,
        httpx.Client(base_url=server.url, headers=AUTH) as http,
    ):
        http.post("/v1/sessions", json={"id": "frank"})
        problem(http.post("/v1/sessions/frank/turns", json={"prompt": "hi"}), 422, "LlmNotConfigured")
        assert http.get("/readyz").json()["status"] == "ready"
        app = server.server.config.app
        assert isinstance(app, ServeApp)
        server.call(app.drain(1.0))
        problem(http.get("/readyz"), 503, "Draining")
        refused = http.post("/v1/sessions/frank/turns", json={"prompt": "hi"})
        problem(refused, 503, "Draining")
        assert refused.headers["retry-after"] == "1"
        assert http.get("/healthz").json() == {"status": "ok"}


def test_auth_is_required_on_every_v1_route(served: Served) -> None:
    anonymous = served.anonymous
    document = openapi_document()
    v1_paths = [p for p in document["paths"] if p.startswith("/v1/")]
    assert len(v1_paths) >= 20
    for path, operations in document["paths"].items():
        concrete = path.replace("{session_id}", "erin").replace("{tool_id}", "call_1")
        for method in operations:
            if path.startswith("/v1/"):
                refused = anonymous.request(method.upper(), concrete, json={})
                problem(refused, 401, "Unauthorized")
                assert refused.headers["www-authenticate"].startswith("Bearer")
    wrong = {"Authorization": "Bearer " + TOKEN[:-1] + "X"}
    problem(anonymous.get("/v1/sessions", headers=wrong), 401, "Unauthorized")
    problem(anonymous.get("/v1/sessions", headers={"Authorization": TOKEN}), 401, "Unauthorized")
    # Health, metrics, the schema and the console page need no token; the console holds no data.
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/", "/console.js", "/console.css"):
        assert anonymous.get(path).status_code == 200, path
    page = anonymous.get("/")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert '<script src="/console.js"' in page.text and "http" not in page.text.split("<body>")[1]
    # No CORS unless configured: a cross-origin preflight gets no Access-Control header.
    preflight = anonymous.options(
        "/v1/sessions", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_cors_only_for_configured_origins(tmp_path: Path) -> None:
    with Hive.start(store="memory", workspace=tmp_path) as hive:
        app = serve_app(hive, token=TOKEN, cors_origins=["https://console.example"])
        with ServerThread(app) as server:
            allowed = httpx.get(
                server.url + "/v1/stats", headers={**AUTH, "Origin": "https://console.example"}
            )
            assert allowed.headers["access-control-allow-origin"] == "https://console.example"
            other = httpx.get(server.url + "/v1/stats", headers={**AUTH, "Origin": "https://evil.example"})
            assert "access-control-allow-origin" not in other.headers


def test_the_model_api_key_never_reaches_a_response(tmp_path: Path) -> None:
    secret = "sk-test-never-shown-7f3a"
    llm = LlmConfig("openai", "gpt-4o-mini", api_key=secret, base_url="http://127.0.0.1:9/v1", max_retries=0)
    with (
        Hive.start(store="memory", llm=llm, workspace=tmp_path) as hive,
        ServerThread(serve_app(hive, token=TOKEN)) as server,
        httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as http,
    ):
        http.post("/v1/sessions", json={"id": "gina"})
        bodies = [
            http.get(path).text
            for path in (
                "/v1/sessions/gina",
                "/v1/sessions/gina/llm",
                "/v1/sessions?details=true",
                "/metrics",
            )
        ]
        failed = http.post("/v1/sessions/gina/turns", json={"prompt": "hi"})
        assert failed.status_code in (500, 502)
        bodies.append(failed.text)
        assert "gpt-4o-mini" in bodies[1]
        assert all(secret not in body for body in bodies)


def test_serve_app_refuses_to_run_without_a_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SESSIONHIVE_TOKEN", raising=False)
    with Hive.start(store="memory", workspace=tmp_path) as hive:
        with pytest.raises(InvalidConfig, match="bearer token"):
            serve_app(hive)
        with pytest.raises(InvalidConfig, match="16 characters"):
            serve_app(hive, token="short")
        monkeypatch.setenv("SESSIONHIVE_TOKEN", TOKEN)
        assert serve_app(hive).hive.sync is hive


def test_a_full_session_queue_is_429_overloaded(tmp_path: Path) -> None:
    with (
        Hive.start(
            store="memory", llm=ScriptedLlm(script), workspace=tmp_path, mailbox_size=1, call_timeout=0.5
        ) as hive,
        ServerThread(serve_app(hive, token=TOKEN)) as server,
        httpx.Client(base_url=server.url, headers=AUTH) as http,
    ):
        http.post("/v1/sessions", json={"id": "olga"})
        stream = hive.generate_streaming("olga", "write and wait")
        for event in stream:
            if isinstance(event, ConfirmationRequired):
                # Jobs queue behind the turn waiting for a human, until the queue is full.
                statuses = [http.post("/v1/sessions/olga/clear").status_code for _ in range(3)]
                assert 429 in statuses and set(statuses) <= {429, 504}
                refused = problem(http.post("/v1/sessions/olga/clear"), 429, "Overloaded")
                assert refused["limit"] == 1 and refused["session_id"] == "olga"
                assert http.post("/v1/sessions/olga/clear").headers["retry-after"] == "1"
                hive.confirm_tool("olga", event.tool_id, False)
        stream.result()


def test_overloaded_store_and_timeout_errors_map_to_their_statuses() -> None:
    # The runtime raises these under load or failure; their HTTP form is what clients rely on.
    status, body, headers = problem_for(Overloaded("busy", 1000))
    assert (status, body["error"], body["limit"], headers["Retry-After"]) == (429, "Overloaded", 1000, "1")
    assert problem_for(StoreError("disk full"))[0] == 503
    assert problem_for(CallTimeout("slow"))[0] == 504
    assert problem_for(SessionPaused("p"))[1]["session_id"] == "p"
    assert problem_for(RuntimeError("bug"))[1]["detail"] == "internal error; see the server log"


def test_metrics_and_openapi(served: Served) -> None:
    http = served.http
    http.post("/v1/sessions", json={"id": "hank"})
    http.post("/v1/sessions/hank/turns", json={"prompt": "hi"})
    metrics = served.anonymous.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'sessionhive_turns_total{outcome="completed"} 1.0' in metrics.text
    assert (
        'sessionhive_http_requests_total{method="POST",route="/v1/sessions/{session_id}/turns",status="200"}'
        in (metrics.text)
    )
    assert "hank" not in metrics.text  # no session id in any label
    schema = served.anonymous.get("/openapi.json").json()
    assert schema["openapi"].startswith("3.1")
    assert "post" in schema["paths"]["/v1/sessions/{session_id}/confirmations/{tool_id}"]


def test_readyz_is_503_while_the_store_is_down(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    with (
        Hive.start(store=f"file:{store_dir}", workspace=tmp_path) as hive,
        ServerThread(serve_app(hive, token=TOKEN)) as server,
        httpx.Client(base_url=server.url, headers=AUTH) as http,
    ):
        assert http.get("/readyz").status_code == 200
        shutil.rmtree(store_dir)  # the store's directory vanishes under the running service
        down = problem(http.get("/readyz"), 503, "StoreUnavailable")
        assert "does not exist" in down["detail"]
        assert http.get("/v1/store/health").json()["stores"][0]["status"].startswith("error")
        assert http.get("/healthz").status_code == 200  # the process itself is fine
        store_dir.mkdir()
        assert http.get("/readyz").status_code == 200


def test_a_route_cannot_be_declared_with_a_scope_no_token_can_hold() -> None:
    from sessionhive.serve._router import Router

    router = Router()
    with pytest.raises(ValueError, match="unknown scope 'wrte'"):
        router.post("sessions/{session_id}/pause", scope="wrte")
    assert router.routes == []


def test_every_session_route_answers_an_id_containing_a_slash(served: Served) -> None:
    # Ids travel as one %2F-encoded segment: a route found by the raw-path matcher for
    # "team/a" must not be mistaken for a longer path, whatever the route.
    from sessionhive.serve.routes import ROUTES

    assert served.http.post("/v1/sessions", json={"id": "team/a"}).status_code == 201
    checked = []
    for route in ROUTES:
        if route.names_session and route.method == "GET" and not route.sse:
            assert route.url("team/a").startswith("/v1/sessions/team%2Fa")
            response = served.http.get(route.url("team/a"))
            assert response.status_code == 200, (route.name, response.text)
            checked.append(route.name)
    assert len(checked) >= 8  # show, children, history, usage, context, llm, policy, confirmations
