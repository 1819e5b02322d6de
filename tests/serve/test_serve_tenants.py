"""Tenants, scopes, quotas and the audit log of `sessionhive serve`, over real HTTP on 127.0.0.1.

Tenant ``acme`` holds alice (read, write), dana (confirm) and carol (read
only); tenant ``globex`` holds bob (read, write, confirm); root is an admin of
tenant ``ops``. Each test attacks as the token that must fail and checks the
answer a user would see: 404 for another tenant's session, 403 naming the
missing scope, 429 at a quota, and the audit log naming who approved what.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from sessionhive import (
    ConfirmationRequired,
    Forbidden,
    Hive,
    InvalidConfig,
    Message,
    QuotaExceeded,
    Reply,
    ScriptedLlm,
    SessionNotFound,
    ToolCall,
)
from sessionhive.client import AsyncRemoteHive, RemoteHive, Unauthorized
from sessionhive.persistence import AuditLog, AuditRecord, open_store
from sessionhive.serve import ServerThread, TokenTable, new_token, serve_app
from sessionhive.serve.routes import ROUTES
from tests.persistence.conftest_persistence import StoreFactory

pytest_plugins = ("tests.persistence.conftest_persistence",)

SERVE = "import sys; from sessionhive.cli import main; sys.exit(main())"
PEOPLE = {
    "alice": ("acme", ["read", "write"]),
    "dana": ("acme", ["read", "confirm"]),
    "carol": ("acme", ["read"]),
    "bob": ("globex", ["read", "write", "confirm"]),
    "root": ("ops", ["admin"]),
}
QUOTAS = "[tenant.acme]\nmax_sessions = 3\nmax_concurrent_turns = 1\n"


def script(messages: list[Message]) -> Reply:
    """'write ...' asks to write a file (confirmed by default); anything else answers at once."""
    last = messages[-1]
    if last.role == "tool":
        return Reply(f"done: {last.text[:30]}")
    if last.text.startswith("write"):
        return Reply("writing", [ToolCall("write_file", {"path": "out.txt", "content": last.text})])
    return Reply(f"echo {last.text}")


def make_tokens_file(path: Path) -> dict[str, str]:
    """Write a token file for :data:`PEOPLE`; returns each person's token."""
    tokens: dict[str, str] = {}
    tables: list[str] = []
    for name, (tenant, scopes) in PEOPLE.items():
        tokens[name], table = new_token(name, tenant, scopes)
        tables.append(table)
    path.write_text("\n".join(tables) + "\n" + QUOTAS, encoding="utf-8")
    return tokens


@dataclass
class Service:
    url: str
    tokens: dict[str, str]
    hive: Hive
    clients: list[httpx.Client] = field(default_factory=list)

    def as_(self, name: str) -> httpx.Client:
        client = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.tokens[name]}"}, timeout=30
        )
        self.clients.append(client)  # closed with the service: a leaked socket fails the test run
        return client

    def close(self) -> None:
        for client in self.clients:
            client.close()

    def remote(self, name: str) -> RemoteHive:
        return RemoteHive(self.url, token=self.tokens[name], call_timeout=30)


def start_app(tmp_path: Path, tokens_file: Path) -> tuple[Hive, Any]:
    workspace = tmp_path / "ws"
    workspace.mkdir(exist_ok=True)
    store = open_store(f"sqlite:///{tmp_path / 'tenants.db'}")
    hive = Hive.start(store=store, llm=ScriptedLlm(script), workspace=workspace)
    app = serve_app(hive, tokens=TokenTable.load(tokens_file), audit=AuditLog.for_store(store))
    return hive, app


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    tokens = make_tokens_file(tmp_path / "tokens.toml")
    hive, app = start_app(tmp_path, tmp_path / "tokens.toml")
    try:
        with ServerThread(app) as server:
            service = Service(server.url, tokens, hive)
            yield service
            service.close()
    finally:
        hive.stop()


def problem(response: httpx.Response, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["error"] == error
    return body


class Turn(threading.Thread):
    """A streamed turn in the background; ``asked`` is set with the first ConfirmationRequired."""

    def __init__(self, client: httpx.Client, session_id: str, prompt: str) -> None:
        super().__init__(daemon=True)
        self.client, self.session_id, self.prompt = client, session_id, prompt
        self.asked = threading.Event()
        self.tool_id = ""
        self.events: list[tuple[str, dict[str, Any]]] = []

    def run(self) -> None:
        path = f"/v1/sessions/{self.session_id}/turns"
        with self.client.stream(
            "POST", path, json={"prompt": self.prompt}, headers={"Accept": "text/event-stream"}
        ) as response:
            kind = ""
            for line in response.iter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                    self.events.append((kind, data))
                    if kind == "ConfirmationRequired":
                        self.tool_id = data["tool_id"]
                        self.asked.set()


def test_another_tenant_cannot_see_list_stream_approve_or_delete_a_session(service: Service) -> None:
    alice, bob, dana, root = (service.as_(n) for n in ("alice", "bob", "dana", "root"))
    assert alice.post("/v1/sessions", json={"id": "acme-plan"}).status_code == 201
    assert bob.post("/v1/sessions", json={"id": "globex-plan"}).status_code == 201
    turn = Turn(alice, "acme-plan", "write the acme plan")
    turn.start()
    assert turn.asked.wait(10)

    # Every route that names the session answers bob exactly as for a session that does not exist.
    attacks = [
        bob.get("/v1/sessions/acme-plan"),
        bob.get("/v1/sessions/acme-plan/history"),
        bob.get("/v1/sessions/acme-plan/events"),
        bob.get("/v1/sessions/acme-plan/confirmations"),
        bob.post(f"/v1/sessions/acme-plan/confirmations/{turn.tool_id}", json={"approved": True}),
        bob.post("/v1/sessions/acme-plan/turns", json={"prompt": "hi"}),
        bob.post("/v1/sessions/acme-plan/cancel"),
        bob.put("/v1/sessions/acme-plan/configure", json={"thinking": True}),
        bob.post("/v1/sessions/acme-plan/children", json={"id": "acme-plan/mine-now"}),
        bob.delete("/v1/sessions/acme-plan"),
    ]
    missing = bob.get("/v1/sessions/never-was")
    for answer in attacks:
        body = problem(answer, 404, "SessionNotFound")
        assert body["session_id"] == "acme-plan"
        assert body["detail"] == problem(missing, 404, "SessionNotFound")["detail"].replace(
            "never-was", "acme-plan"
        )
    # get_or_create of bob's own id answers; of alice's id it does not hand it over.
    taken = bob.post("/v1/sessions", json={"id": "acme-plan", "exist_ok": True})
    problem(taken, 409, "SessionExists")
    assert bob.post("/v1/sessions", json={"id": "globex-plan", "exist_ok": True}).json() == {
        "id": "globex-plan"
    }

    assert bob.get("/v1/sessions").json()["ids"] == ["globex-plan"]
    assert alice.get("/v1/sessions").json()["ids"] == ["acme-plan"]
    assert root.get("/v1/sessions").json()["ids"] == ["acme-plan", "globex-plan"]
    assert bob.get("/v1/stats").json()["sessions"] == 1 and root.get("/v1/stats").json()["sessions"] == 2
    assert bob.get("/v1/audit", params={"session_id": "acme-plan"}).json()["records"] == []

    # Nothing bob did reached the session: it still waits, and alice's tenant decides.
    assert service.hive.pending_confirmations("acme-plan") == [turn.tool_id]
    approved = dana.post(
        f"/v1/sessions/acme-plan/confirmations/{turn.tool_id}", json={"approved": True, "reason": "ok"}
    )
    assert approved.json() == {"confirmed": True}
    turn.join(10)
    assert turn.events[-1][0] == "result" and "acme-plan" in service.hive.list_sessions()


def test_a_read_token_cannot_start_a_turn_approve_or_delete(service: Service) -> None:
    alice, carol, dana = service.as_("alice"), service.as_("carol"), service.as_("dana")
    alice.post("/v1/sessions", json={"id": "notes"})
    turn = Turn(alice, "notes", "write the notes")
    turn.start()
    assert turn.asked.wait(10)

    for answer, scope in (
        (carol.post("/v1/sessions/notes/turns", json={"prompt": "hi"}), "write"),
        (carol.post(f"/v1/sessions/notes/confirmations/{turn.tool_id}", json={"approved": True}), "confirm"),
        (carol.delete("/v1/sessions/notes"), "write"),
        (carol.post("/v1/sessions", json={"id": "carols"}), "write"),
        (alice.post(f"/v1/sessions/notes/confirmations/{turn.tool_id}", json={"approved": True}), "confirm"),
        (alice.post("/v1/flush"), "admin"),
    ):
        body = problem(answer, 403, "Forbidden")
        assert body["scope"] == scope and repr(scope) in body["detail"]
    # The scope is checked before the session: a 403 tells nothing about another tenant's ids.
    problem(carol.delete("/v1/sessions/globex-anything"), 403, "Forbidden")

    # Reading is what carol may do; the turn still waits for someone allowed to decide.
    assert carol.get("/v1/sessions/notes/confirmations").json()["pending"][0]["tool_id"] == turn.tool_id
    assert carol.get("/v1/whoami").json() == {
        "name": "carol",
        "tenant": "acme",
        "scopes": ["read"],
        "quota": {"max_sessions": 3, "max_concurrent_turns": 1},
    }
    dana.post(f"/v1/sessions/notes/confirmations/{turn.tool_id}", json={"approved": False, "reason": "no"})
    turn.join(10)
    resolved = dict(turn.events)["ConfirmationResolved"]
    assert (resolved["outcome"], resolved["reason"], resolved["decided_by"]) == ("rejected", "no", "dana")


def test_the_audit_log_records_who_approved_what(service: Service) -> None:
    alice, dana, root, bob = (service.as_(n) for n in ("alice", "dana", "root", "bob"))
    alice.post("/v1/sessions", json={"id": "deploy"})
    turn = Turn(alice, "deploy", "write the deploy script")
    turn.start()
    assert turn.asked.wait(10)
    dana.post(
        f"/v1/sessions/deploy/confirmations/{turn.tool_id}", json={"approved": True, "reason": "reviewed"}
    )
    turn.join(10)
    alice.put("/v1/sessions/deploy/configure", json={"thinking": True, "budget": 100})
    alice.post("/v1/sessions/deploy/pause")
    alice.post("/v1/sessions/deploy/resume")
    root.post("/v1/sessions/deploy/cancel")
    alice.delete("/v1/sessions/deploy")

    records = dana.get("/v1/audit", params={"session_id": "deploy"}).json()["records"]
    trail = [(r["action"], r["token_name"], r["tenant"]) for r in records]
    assert trail == [
        ("create", "alice", "acme"),
        ("turn", "alice", "acme"),
        ("confirm", "dana", "acme"),
        ("configure", "alice", "acme"),
        ("pause", "alice", "acme"),
        ("resume", "alice", "acme"),
        ("cancel", "root", "ops"),  # the operator's action shows in the tenant's own log
        ("delete", "alice", "acme"),
    ]
    resolved = dict(turn.events)["ConfirmationResolved"]
    assert resolved["decided_by"] == "dana" and resolved["reason"] == "reviewed"
    confirm = records[2]
    assert confirm["session_id"] == "deploy" and confirm["time"].endswith("+00:00")
    assert confirm["detail"] == {
        "tool_id": turn.tool_id,
        "approved": True,
        "reason": "reviewed",
        "confirmed": True,
    }
    assert records[3]["detail"] == {"thinking": True, "budget": 100, "model_config": None}
    page = dana.get("/v1/audit", params={"session_id": "deploy", "limit": 2, "offset": 2}).json()
    assert page["total"] == 8 and [r["action"] for r in page["records"]] == ["confirm", "configure"]
    # Another tenant reads none of it; the admin reads it all.
    assert bob.get("/v1/audit").json() == {"total": 0, "offset": 0, "limit": 100, "records": []}
    assert root.get("/v1/audit").json()["total"] == 8
    problem(root.get("/v1/audit", params={"session_id": "bad\x00id"}), 400, "InvalidSessionId")
    # No token, digest or key is ever written.
    dump = json.dumps(root.get("/v1/audit").json())
    assert all(token not in dump for token in service.tokens.values())


def test_tenant_quotas_are_429_and_free_up(service: Service) -> None:
    alice, dana, bob = service.as_("alice"), service.as_("dana"), service.as_("bob")
    for n in range(3):
        assert alice.post("/v1/sessions", json={"id": f"a{n}"}).status_code == 201
    over = problem(alice.post("/v1/sessions", json={"id": "a3"}), 429, "QuotaExceeded")
    assert over["tenant"] == "acme" and over["quota"] == "max_sessions" and over["limit"] == 3
    assert "a3" not in service.hive.list_sessions()
    # get_or_create of a session it has still answers at quota; another tenant is not limited.
    assert alice.post("/v1/sessions", json={"id": "a0", "exist_ok": True}).json() == {"id": "a0"}
    assert bob.post("/v1/sessions", json={"id": "b0"}).status_code == 201

    turn = Turn(alice, "a0", "write slowly")
    turn.start()
    assert turn.asked.wait(10)
    busy = problem(alice.post("/v1/sessions/a1/turns", json={"prompt": "hi"}), 429, "QuotaExceeded")
    assert busy["quota"] == "max_concurrent_turns" and busy["limit"] == 1
    assert bob.post("/v1/sessions/b0/turns", json={"prompt": "hi"}).json()["text"] == "echo hi"
    dana.post(f"/v1/sessions/a0/confirmations/{turn.tool_id}", json={"approved": True})
    turn.join(10)
    assert alice.post("/v1/sessions/a1/turns", json={"prompt": "hi"}).json()["text"] == "echo hi"

    # Deleting a session frees the places of its descendants too, at every depth.
    assert alice.delete("/v1/sessions/a2").status_code == 204
    assert alice.post("/v1/sessions", json={"id": "a3"}).status_code == 201
    assert alice.delete("/v1/sessions/a1").status_code == 204
    assert alice.post("/v1/sessions/a3/children", json={"id": "a3/kid"}).status_code == 201
    problem(alice.post("/v1/sessions/a3/children", json={"id": "a3/kid/2"}), 429, "QuotaExceeded")
    assert alice.post("/v1/sessions/a3%2Fkid/children", json={"id": "a3/kid/grandkid"}).status_code == 429
    alice.delete("/v1/sessions/a0")
    assert alice.post("/v1/sessions/a3%2Fkid/children", json={"id": "a3/kid/grandkid"}).status_code == 201
    assert alice.delete("/v1/sessions/a3").status_code == 204
    for n in range(3):
        assert alice.post("/v1/sessions", json={"id": f"again{n}"}).status_code == 201


def test_each_route_refuses_a_token_without_the_scope_it_declares(service: Service) -> None:
    # The scope a route declares at its handler is the one the service enforces: carol (read only)
    # gets a 403 naming that scope from every route that needs another, before any session is looked at.
    needing_more = [route for route in ROUTES if route.scope not in ("", "read")]
    assert {route.scope for route in needing_more} == {"write", "confirm", "admin"}
    with service.as_("carol") as carol:
        for route in needing_more:
            response = carol.request(route.method, route.url(*("no/such", "tool-1")[: route.path.count("{")]))
            assert problem(response, 403, "Forbidden")["scope"] == route.scope, route.name
        for route in ROUTES:
            if route.scope in ("", "read") and not route.sse and "{" not in route.path:
                assert carol.request(route.method, route.url()).status_code == 200, route.name


def test_remote_hive_works_with_a_tenant_token_and_raises_the_new_errors(service: Service) -> None:
    with service.remote("alice") as alice, service.remote("carol") as carol, service.remote("bob") as bob:
        alice.create_session("remote-1")
        assert alice.generate("remote-1", "hello").text == "echo hello"
        assert alice.list_sessions() == ["remote-1"] and alice.session_count() == 1
        assert [m.text for m in carol.history("remote-1")][:1] == ["hello"]
        with pytest.raises(Forbidden) as refused:
            carol.generate("remote-1", "hi")
        assert refused.value.scope == "write"
        with pytest.raises(SessionNotFound):
            bob.history("remote-1")
        alice.create_session("remote-2")
        alice.create_session("remote-3")
        with pytest.raises(QuotaExceeded) as quota:
            alice.create_session("remote-4")
        assert (quota.value.tenant, quota.value.quota, quota.value.limit) == ("acme", "max_sessions", 3)

        # A token with every scope of its tenant drives turns and their confirmations as before.
        bob.create_session("globex-1")
        asked: list[ConfirmationRequired] = []

        def approve(event: ConfirmationRequired) -> tuple[bool, str]:
            asked.append(event)
            return True, "fine"

        result = bob.generate("globex-1", "write it", on_confirmation=approve)
        assert result.text.startswith("done") and [e.tool_name for e in asked] == ["write_file"]
    with (
        RemoteHive(service.url, token="not-a-token-of-this-service") as stranger,
        pytest.raises(Unauthorized),
    ):
        stranger.list_sessions()


def test_async_remote_hive_works_with_tenant_tokens(service: Service) -> None:
    async def scenario() -> None:
        async with (
            AsyncRemoteHive(service.url, token=service.tokens["bob"]) as bob,
            AsyncRemoteHive(service.url, token=service.tokens["carol"]) as carol,
        ):
            await bob.create_session("async-1")
            assert (await bob.generate("async-1", "hi")).text == "echo hi"
            assert await bob.list_sessions() == ["async-1"] and await carol.list_sessions() == []
            with pytest.raises(SessionNotFound):
                await carol.history("async-1")
            with pytest.raises(Forbidden):
                await carol.create_session("carols")

    asyncio.run(scenario())


def test_owners_and_audit_survive_a_restart_on_the_same_store(tmp_path: Path) -> None:
    tokens = make_tokens_file(tmp_path / "tokens.toml")
    for run in range(2):
        hive, app = start_app(tmp_path, tmp_path / "tokens.toml")
        try:
            with ServerThread(app) as server:
                service = Service(server.url, tokens, hive)
                alice, bob = service.as_("alice"), service.as_("bob")
                if run == 0:
                    alice.post("/v1/sessions", json={"id": "kept"})
                    service.close()
                    continue
                problem(bob.get("/v1/sessions/kept"), 404, "SessionNotFound")
                assert bob.get("/v1/sessions").json()["ids"] == []
                assert alice.get("/v1/sessions").json()["ids"] == ["kept"]
                assert [r["action"] for r in alice.get("/v1/audit").json()["records"]] == ["create"]
                service.close()
        finally:
            hive.stop()


def test_the_audit_log_lives_in_each_sql_store_and_in_memory_beside_the_others(stores: StoreFactory) -> None:
    log = AuditLog.for_store(stores.open())
    assert log.persistent == stores.is_sql
    log.claim(["a/1", "a/2"], "acme")
    log.claim(["b/1"], "globex")
    log.release(["a/2"])
    log.record(AuditRecord(1_700_000_000.5, "dana", "acme", "confirm", "a/1", "acme", {"approved": True}))
    log.record(AuditRecord(1_700_000_001.0, "root", "ops", "delete", "b/1", "globex"))
    if stores.is_sql:  # a new process on the same database reads what the last one wrote
        log = AuditLog.for_store(stores.open())
    assert log.owners() == {"a/1": "acme", "b/1": "globex"}
    total, records = log.records(session_tenant="acme")
    assert total == 1 and records[0].to_dict() == {
        "time": "2023-11-14T22:13:20.500000+00:00",
        "token_name": "dana",
        "tenant": "acme",
        "action": "confirm",
        "session_id": "a/1",
        "detail": {"approved": True},
    }
    assert [r.action for r in log.records(limit=1, offset=1)[1]] == ["delete"]
    log.close()


def test_the_in_memory_audit_log_keeps_its_newest_records_and_takes_writers_in_turn() -> None:
    log = AuditLog.in_memory(max_records=50)
    assert not log.persistent

    failures: list[BaseException] = []

    def write(writer: int) -> None:
        try:
            for n in range(40):
                log.record(AuditRecord(float(n), f"w{writer}", "t", "turn", f"s{writer}", "t", {"n": n}))
        except BaseException as exc:  # handed to the test thread below
            failures.append(exc)

    writers = [threading.Thread(target=write, args=(w,)) for w in range(8)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    log.record(AuditRecord(99.0, "last", "t", "turn", "s", "t"))
    total, records = log.records(limit=1000)
    # 321 writes, 320 of them from 8 threads on one shared connection, none failed; the log
    # trims to its newest 50 every 50 writes, so it holds between 50 and 100, the last one too.
    assert failures == []
    assert 50 <= total <= 100 and len(records) == total and records[-1].token_name == "last"
    log.close()


def test_single_token_mode_keeps_every_scope(tmp_path: Path) -> None:
    token = "single-token-0123456789abcdef"
    with Hive.start(store="memory", llm=ScriptedLlm(script), workspace=tmp_path) as hive:
        with (
            ServerThread(serve_app(hive, token=token)) as server,
            httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}) as http,
        ):
            me = http.get("/v1/whoami").json()
            assert me["tenant"] == "default" and me["scopes"] == ["admin", "confirm", "read", "write"]
            assert http.post("/v1/flush").status_code == 204
            hive.create_session("made-by-the-library")  # unowned: the default tenant's
            assert http.get("/v1/sessions").json()["ids"] == ["made-by-the-library"]
        with pytest.raises(InvalidConfig, match="either token="):
            serve_app(hive, token=token, tokens=TokenTable.single(token))


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("", "no [[token]] table"),
        ("[[token]]\nname='a'\ntenant='t'\nscopes=['read']\nsha256='secret'\n", "64-hex-digit"),
        ("[[token]]\nname='a'\ntenant='t'\nscopes=['root']\nsha256='" + "0" * 64 + "'\n", "unknown scope"),
        ("[[token]]\nname='a'\ntenant='t'\nscopes=['read']\n", "missing ['sha256']"),
        (
            "[[token]]\nname='a'\ntenant='t'\nscopes=['read']\nsha256='" + "0" * 64 + "'\n"
            "[[token]]\nname='a'\ntenant='u'\nscopes=['read']\nsha256='" + "1" * 64 + "'\n",
            "same name",
        ),
        (
            "[[token]]\nname='a'\ntenant='t'\nscopes=['read']\nsha256='" + "0" * 64 + "'\n"
            "[tenant.t]\nmax_turns = 3\n",
            "unknown key(s) ['max_turns']",
        ),
        ("[[token]\n", "not valid TOML"),
    ],
)
def test_a_bad_token_file_is_refused_with_what_to_fix(text: str, complaint: str) -> None:
    with pytest.raises(InvalidConfig) as refused:
        TokenTable.parse(text, source="tokens.toml")
    assert complaint in str(refused.value) and "tokens.toml" in str(refused.value)


def _serve(tmp_path: Path, *args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            SERVE,
            "serve",
            "--store",
            f"sqlite:///{tmp_path / 's.db'}",
            "--port",
            "0",
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp_path,
    )


@pytest.mark.slow
def test_token_new_and_serve_tokens_as_processes(tmp_path: Path) -> None:
    made = subprocess.run(
        [sys.executable, "-c", SERVE, "token", "new", "--name", "eve", "--tenant", "lab", "--scopes", "read"],
        capture_output=True,
        text=True,
        check=True,
    )
    token = made.stderr.strip().splitlines()[-1]
    assert token.startswith("shv_") and token not in made.stdout  # the table holds no secret
    (tmp_path / "tokens.toml").write_text(made.stdout, encoding="utf-8")
    env = {**os.environ, "SESSIONHIVE_TOKEN": "an-env-token-0123456789abcdef"}

    both = _serve(tmp_path, "--tokens", "tokens.toml", "--token-file", "tokens.toml", env=env)
    out, _ = both.communicate(timeout=60)
    assert both.returncode == 2 and "--tokens replaces --token-file" in out

    process = _serve(tmp_path, "--tokens", "tokens.toml", env=env)
    try:
        assert process.stdout is not None
        url = ""
        deadline = time.monotonic() + 60
        while not url and time.monotonic() < deadline:
            found = re.search(r"listening on (http://127\.0\.0\.1:\d+)/", process.stdout.readline())
            url = found.group(1) if found else ""
        assert url
        me = httpx.get(f"{url}/v1/whoami", headers={"Authorization": f"Bearer {token}"}).json()
        assert me["name"] == "eve" and me["tenant"] == "lab" and me["scopes"] == ["read"]
        # With --tokens, the environment's SESSIONHIVE_TOKEN is not a way in.
        refused = httpx.get(
            f"{url}/v1/whoami", headers={"Authorization": f"Bearer {env['SESSIONHIVE_TOKEN']}"}
        )
        assert refused.status_code == 401
    finally:
        process.terminate()
        process.wait(30)


CHROMIUM = "/usr/bin/chromium"


@pytest.mark.slow
@pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) or shutil.which("chromium")),
    reason="LOUD SKIP: Debian's chromium is missing at /usr/bin/chromium (.ci/run installs it)",
)
def test_the_console_shows_who_you_are_and_hides_what_the_token_may_not_do(service: Service) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    alice = service.as_("alice")
    alice.post("/v1/sessions", json={"id": "shown"})
    bob_session = service.as_("bob").post("/v1/sessions", json={"id": "hidden"})
    assert bob_session.status_code == 201
    turn = Turn(alice, "shown", "write the page")
    turn.start()
    assert turn.asked.wait(10)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(20_000)
            page.goto(service.url + "/")
            page.fill("#token", service.tokens["carol"])
            page.click("#login button[type=submit]")
            page.wait_for_selector('#sessions tr[data-session="shown"]')
            assert page.inner_text("#whoami") == "carol · tenant acme · read"
            assert page.locator('#sessions tr[data-session="hidden"]').count() == 0
            assert not page.is_visible("#create") and not page.is_visible("#prompt-form")
            page.click('#sessions tr[data-session="shown"]')
            card = page.wait_for_selector("#confirmations li.confirmation")
            assert card is not None and "may not decide" in card.inner_text()
            assert page.locator("#confirmations button.approve").count() == 0
        finally:
            browser.close()
    service.as_("dana").post(f"/v1/sessions/shown/confirmations/{turn.tool_id}", json={"approved": False})
    turn.join(10)
