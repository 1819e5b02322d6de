"""The console at scale: the approvals inbox, session search and history paging, over HTTP and in Chromium.

Sessions are written straight into a real SQLite store (thousands in seconds), then a real
Hive and a real HTTP service serve them; turns wait on real confirmations.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from sessionhive import (
    ConfirmationPolicy,
    ContextUsage,
    Hive,
    Message,
    Reply,
    ScriptedLlm,
    SessionConfig,
    ToolCall,
    Usage,
)
from sessionhive.client import AsyncRemoteHive, RemoteHive
from sessionhive.persistence import open_store
from sessionhive.persistence.snapshot import SessionSnapshot
from sessionhive.serve import ServerThread, TokenTable, new_token, serve_app

TOKEN = "console-scale-token-0123456789"


def script(messages: list[Message]) -> Reply:
    """'write ...' asks to write a file (confirmed by default); anything else answers at once."""
    last = messages[-1]
    if last.role == "tool":
        return Reply(f"done: {last.text[:30]}")
    if last.text.startswith("write"):
        return Reply("writing", [ToolCall("write_file", {"path": "out.txt", "content": last.text})])
    return Reply(f"echo {last.text}")


def store_sessions(db: Path, ids: list[str], messages: int = 0) -> None:
    """Write ``ids`` into the SQLite store at ``db`` directly: the bulk path a migration would take."""
    history = tuple(
        Message.user(f"prompt {i}") if i % 2 == 0 else Message.assistant(f"answer {i}")
        for i in range(messages)
    )
    snapshots = [
        SessionSnapshot(
            session_id=sid,
            version=1,
            parent_id=None,
            state="active",
            config=SessionConfig(),
            confirmation_policy=ConfirmationPolicy(),
            llm_config=None,
            thinking=False,
            budget=None,
            usage=Usage(),
            context_usage=ContextUsage(0, SessionConfig().max_context_length),
            messages=history,
            history_epoch=0,
            created_at=1_700_000_000.0,
            updated_at=1_700_000_000.0,
        )
        for sid in ids
    ]
    store = open_store(f"sqlite:///{db}")
    try:
        for start in range(0, len(snapshots), 2000):
            store.write_batch(snapshots[start : start + 2000], [])
    finally:
        store.close()


class Turn(threading.Thread):
    """A streamed turn in the background; ``asked`` is set once the service has seen its confirmation.

    The service records a confirmation before it forwards the event, so once this stream
    carries ``ConfirmationRequired`` the inbox and the list know of it.
    """

    def __init__(self, url: str, token: str, session_id: str, prompt: str) -> None:
        super().__init__(daemon=True)
        self.url, self.token, self.session_id, self.prompt = url, token, session_id, prompt
        self.asked = threading.Event()
        self.ended = ""

    def run(self) -> None:
        with (
            httpx.Client(
                base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=60
            ) as client,
            client.stream(
                "POST",
                f"/v1/sessions/{self.session_id}/turns",
                json={"prompt": self.prompt},
                headers={"Accept": "text/event-stream"},
            ) as response,
        ):
            kind = ""
            for line in response.iter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    if kind == "ConfirmationRequired":
                        self.asked.set()
                    elif kind == "result":
                        self.ended = json.loads(line[6:])["text"]

    def wait_asked(self) -> None:
        self.start()
        assert self.asked.wait(30), f"the turn of {self.session_id} never asked for a confirmation"


@dataclass
class Service:
    url: str
    db: Path
    hive: Hive


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    db = tmp_path / "console.db"
    store_sessions(db, [f"s{i:03d}" for i in range(300)])
    store_sessions(db, ["long"], messages=250)
    workspace = tmp_path / "ws"
    workspace.mkdir()
    with (
        Hive.start(store=f"sqlite:///{db}", llm=ScriptedLlm(script), workspace=workspace) as hive,
        ServerThread(serve_app(hive, token=TOKEN)) as server,
    ):
        yield Service(server.url, db, hive)


def test_the_session_list_finds_by_prefix_filters_by_state_and_shows_waiting_sessions_first(
    service: Service,
) -> None:
    with RemoteHive(service.url, token=TOKEN) as remote:
        turn = Turn(service.url, TOKEN, "s150", "write the report")
        turn.wait_asked()

        first = remote.find_sessions(limit=5)
        assert first.total == 301 and first.ids[0] == "s150"  # the one waiting for a decision
        assert first.ids[1:] == ["long", "s000", "s001", "s002"]
        assert remote.find_sessions("s29").ids == [f"s29{i}" for i in range(10)]
        assert remote.find_sessions("nobody").total == 0
        assert remote.find_sessions(state="waiting").ids == ["s150"]
        idle = remote.find_sessions(state="idle", offset=290, limit=50)
        assert idle.total == 300 and "s150" not in idle.ids and len(idle.ids) == 10
        # list_sessions() pages through everything, as before.
        assert len(remote.list_sessions()) == 301

        with httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            refused = http.get("/v1/sessions", params={"state": "asleep"})
            assert refused.status_code == 400 and "state must be one of" in refused.json()["detail"]

        remote.confirm_tool("s150", remote.pending_confirmations("s150")[0], False, "not now")
        turn.join(30)
        assert remote.find_sessions(state="waiting").total == 0


def test_history_opens_at_the_newest_messages_and_pages_back(service: Service) -> None:
    with RemoteHive(service.url, token=TOKEN) as remote:
        newest = remote.history_page("long")
        assert (newest.total, newest.offset, len(newest.messages)) == (250, 150, 100)
        assert newest.messages[-1].text == "answer 249"
        older = remote.history_page("long", before=newest.offset)
        assert older.offset == 50 and older.messages[0].text == "prompt 50"
        oldest = remote.history_page("long", before=older.offset)
        assert oldest.offset == 0 and [m.text for m in oldest.messages[:2]] == ["prompt 0", "answer 1"]
        assert len(oldest.messages) == 50
        # history() still returns all of it, in order (it pages forward with offset=).
        paged = oldest.messages + older.messages + newest.messages
        assert [m.text for m in remote.history("long")] == [m.text for m in paged]
        with httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            forward = http.get("/v1/sessions/long/history", params={"offset": 10, "limit": 2}).json()
            assert [m["text"] for m in forward["messages"]] == ["prompt 10", "answer 11"]
            window = http.get("/v1/sessions/long/history", params={"offset": 8, "before": 10}).json()
            assert [m["text"] for m in window["messages"]] == ["prompt 8", "answer 9"]
            refused = http.get("/v1/sessions/long/history", params={"before": -1})
            assert refused.status_code == 400 and "before must be in" in refused.json()["detail"]


PEOPLE = {"alice": ("acme", ["read", "write", "confirm"]), "bob": ("globex", ["read", "write", "confirm"])}


def test_the_inbox_lists_every_waiting_call_oldest_first_with_what_led_to_it_and_only_to_its_tenant(
    tmp_path: Path,
) -> None:
    tokens: dict[str, str] = {}
    tables = []
    for name, (tenant, scopes) in PEOPLE.items():
        tokens[name], table = new_token(name, tenant, scopes)
        tables.append(table)
    (tmp_path / "tokens.toml").write_text("\n".join(tables) + "\n", encoding="utf-8")
    workspace = tmp_path / "ws"
    workspace.mkdir()
    with (
        Hive.start(
            store=f"sqlite:///{tmp_path / 'inbox.db'}", llm=ScriptedLlm(script), workspace=workspace
        ) as hive,
        ServerThread(serve_app(hive, tokens=TokenTable.load(tmp_path / "tokens.toml"))) as server,
        RemoteHive(server.url, token=tokens["alice"]) as alice,
        RemoteHive(server.url, token=tokens["bob"]) as bob,
    ):
        for sid in ("a1", "a2"):
            alice.create_session(sid)
        bob.create_session("b1")
        alice.generate("a1", "hello")
        turns = [
            Turn(server.url, tokens["alice"], "a2", "write first"),
            Turn(server.url, tokens["alice"], "a1", "write second"),
            Turn(server.url, tokens["bob"], "b1", "write for bob"),
        ]
        for turn in turns:
            turn.wait_asked()

        inbox = alice.confirmation_inbox()
        assert [(p.session_id, p.tool_name) for p in inbox] == [("a2", "write_file"), ("a1", "write_file")]
        assert inbox[0].waiting_since <= inbox[1].waiting_since <= time.time()
        second = inbox[1]
        assert second.prompt == "write second" and second.arguments == {
            "path": "out.txt",
            "content": "write second",
        }
        # What led to it: the earlier exchange, the prompt, and the call itself.
        assert [m.text for m in second.recent][:3] == ["hello", "echo hello", "write second"]
        assert [m.session_id for m in bob.confirmation_inbox()] == ["b1"]  # another tenant's stay hidden

        assert alice.confirm_tool("a2", inbox[0].tool_id, True, "fine")
        turns[0].join(30)
        assert turns[0].ended.startswith("done:")
        assert [p.session_id for p in alice.confirmation_inbox()] == ["a1"]  # answered ones leave
        alice.confirm_tool("a1", second.tool_id, False, "no")
        bob.confirm_tool("b1", bob.confirmation_inbox()[0].tool_id, False, "no")
        for turn in turns[1:]:
            turn.join(30)
        assert alice.confirmation_inbox() == [] and bob.confirmation_inbox() == []


def test_remote_store_health_hides_the_servers_paths_and_remote_clients_know_the_metrics_url(
    service: Service,
) -> None:
    with RemoteHive(service.url, token=TOKEN) as remote:
        health = remote.store_health()
        assert health == [("sqlite:console.db", "ok")]
        assert str(service.db.parent) not in json.dumps(health)
        assert str(service.db.parent) not in httpx.get(service.url + "/readyz").text
        assert remote.metrics_url == service.url + "/metrics"
        assert "sessionhive_" in httpx.get(remote.metrics_url).text
    assert AsyncRemoteHive(service.url + "/", token=TOKEN).metrics_url == service.url + "/metrics"


# ---------------------------------------------------------------------------------------- Chromium

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SESSIONS = 10_000


@pytest.mark.slow
@pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason="LOUD SKIP: Debian's chromium is missing at /usr/bin/chromium (.ci/run installs it)",
)
def test_with_ten_thousand_sessions_the_console_finds_and_approves_the_last_ones_confirmation(
    tmp_path: Path,
) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    db = tmp_path / "scale.db"
    ids = [f"agent-{i:05d}" for i in range(SESSIONS)]
    store_sessions(db, ids)
    last = ids[-1]
    workspace = tmp_path / "ws"
    workspace.mkdir()
    with (
        Hive.start(store=f"sqlite:///{db}", llm=ScriptedLlm(script), workspace=workspace) as hive,
        ServerThread(serve_app(hive, token=TOKEN)) as server,
        sync_api.sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 900})
            page.set_default_timeout(20_000)
            page.goto(server.url + "/")
            # The login screen shows the login form and nothing of the console.
            page.wait_for_selector("#login", state="visible")
            for hidden in ("#console", "#sessions", "#create", "#inbox", "#session-pane"):
                assert not page.is_visible(hidden), f"{hidden} shows on the login screen"

            page.fill("#token", TOKEN)
            started = time.perf_counter()
            page.click("#login button[type=submit]")
            page.wait_for_selector(f"body[data-listed='{SESSIONS}']")
            page.wait_for_selector("#inbox li.none")
            loaded = time.perf_counter() - started
            print(
                f"\nconsole with {SESSIONS} stored sessions: first page and inbox in {loaded * 1000:.0f} ms"
            )
            assert page.inner_text("#sessions-more") == f"1 to 50 of {SESSIONS}"
            # At 900 px the table stays inside its card.
            assert page.evaluate(
                "document.querySelector('#sessions').scrollWidth"
                " <= document.querySelector('#sessions-pane').clientWidth"
            )

            # The last session created is far beyond the first page: search finds it.
            page.fill("#search", "agent-0999")
            page.wait_for_selector(f'#sessions tr[data-session="{last}"]')
            assert page.inner_text("#sessions-more") == "1 to 10 of 10"

            turn = Turn(server.url, TOKEN, last, "write the report")
            turn.wait_asked()
            card = page.wait_for_selector(f'#inbox li.pending[data-session="{last}"]')  # appears live
            assert card is not None
            text = card.inner_text()
            assert "write_file" in text and "out.txt" in text
            assert "write the report" in text  # the prompt that led to it
            # Waiting sessions come first in the unfiltered list.
            page.fill("#search", "")
            page.wait_for_selector(f'#sessions tbody tr:first-child[data-session="{last}"]')

            card.query_selector("input.reason").fill("checked, go ahead")
            card.query_selector("button.approve").click()
            turn.join(30)
            assert turn.ended.startswith("done: created out.txt")
            assert (workspace / "out.txt").read_text() == "write the report"
            page.wait_for_selector("#inbox li.none")  # answered: it left the inbox
            page.wait_for_selector(f'#inbox li.pending[data-session="{last}"]', state="detached")

            # Its history, newest first.
            page.fill("#search", last)
            page.click(f'#sessions tr[data-session="{last}"]')
            page.wait_for_selector("#history li.msg-assistant:has-text('done: created out.txt')")
            assert "done: created out.txt" in page.inner_text("#history li:first-child")  # the newest
            assert "write the report" in page.inner_text("#history li:last-child")  # its prompt, oldest
            page.screenshot(path=str(tmp_path / "console-scale.png"), full_page=True)
        finally:
            browser.close()


def test_the_readme_documents_every_field_of_a_message() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    start = readme.index("A `Message` (what")
    paragraph = readme[start : readme.index("\n\n", start)]
    missing = [f.name for f in dataclasses.fields(Message) if f"`{f.name}`" not in paragraph]
    assert missing == [], f"README's Message paragraph does not name {missing}"
