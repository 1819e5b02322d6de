"""The ``task`` tool: the model hands a sub-task to a new child session, gets its answer (issue 25, item 4).

Every test runs a real Hive with a scripted model that plays both sides: a
prompt ``delegate: <sub-prompt>`` makes the model call ``task`` with the
sub-prompt; ``write ...`` asks to write a file (which waits for a human by
default); ``loop`` lists the workspace forever; anything else is answered
at once. What the user notices: the parent's answer, the child in the tree,
the file written or not, the confirmation's session, the budget's stop.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sessionhive import (
    Budget,
    ConfirmationPolicy,
    ConfirmationRequired,
    ConfirmationResolved,
    Hive,
    InvalidConfig,
    Message,
    Reply,
    ScriptedLlm,
    SessionConfig,
    ToolCall,
    ToolEnd,
    TurnCancelled,
    TurnEnd,
    TurnError,
)
from sessionhive.agent.loop import ENDED_WHILE_RUNNING
from sessionhive.client import RemoteHive
from sessionhive.serve import ServerThread, TokenTable, new_token, serve_app

TASKS = SessionConfig(task_tool=True)


def script(messages: list[Message]) -> Reply:
    prompt = next(m.text for m in reversed(messages) if m.role == "user")
    last = messages[-1]
    if prompt.startswith("delegate: "):
        if last.role == "tool":
            return Reply(f"parent got: {last.text}")
        sub_prompts = prompt.removeprefix("delegate: ").split(" | ")
        calls = [
            ToolCall("task", {"prompt": p, "description": f"step {i}"}) for i, p in enumerate(sub_prompts)
        ]
        return Reply("delegating", calls)
    if prompt.startswith("write"):
        if last.role == "tool":
            return Reply(f"wrote: {last.text[:30]}")
        return Reply("writing", [ToolCall("write_file", {"path": "out.txt", "content": prompt})])
    if prompt == "loop":
        return Reply("looking", [ToolCall("list_dir", {"path": "."})])
    return Reply(f"answer to {prompt!r}")


@pytest.fixture
def hive(workspace: Path, actor_backend: str) -> Iterator[Hive]:
    """On each actor backend: the task's waits are futures, whichever thread completes them."""
    with Hive.start(
        store="memory", llm=ScriptedLlm(script), workspace=workspace, actor_backend=actor_backend
    ) as started:
        yield started


def test_a_task_call_runs_in_a_new_child_and_its_answer_reaches_the_parent(hive: Hive) -> None:
    hive.create_session("boss", TASKS)
    stream = hive.generate_streaming("boss", "delegate: what is 6*7")
    ends = [event for event in stream if isinstance(event, ToolEnd)]
    result = stream.result(timeout=30)

    (child,) = hive.get_child_sessions("boss")
    assert hive.is_child_session(child)
    assert [m.text for m in hive.history(child)] == ["what is 6*7", "answer to 'what is 6*7'"]
    assert result.text.startswith("parent got: answer to 'what is 6*7'")
    assert f"child session {child}" in result.text  # the model learns where the work was done
    assert [(e.tool_name, e.is_error) for e in ends] == [("task", False)]


def test_the_task_tool_is_offered_only_where_it_is_enabled(hive: Hive) -> None:
    hive.create_session("plain")
    result = hive.generate("plain", "delegate: anything", timeout=30)
    assert "unknown tool 'task'" in result.text
    assert hive.get_child_sessions("plain") == []


def test_a_confirmation_inside_the_child_is_answered_by_the_parents_approver(
    hive: Hive, workspace: Path
) -> None:
    hive.create_session("boss", TASKS)
    asked: list[ConfirmationRequired] = []

    def approve(event: ConfirmationRequired) -> bool:
        asked.append(event)
        return True

    stream = hive.generate_streaming("boss", "delegate: write the report", on_confirmation=approve)
    resolved = [event for event in stream if isinstance(event, ConfirmationResolved)]
    result = stream.result(timeout=30)

    (child,) = hive.get_child_sessions("boss")
    assert [(e.session_id, e.parent_id, e.tool_name) for e in asked] == [(child, "boss", "write_file")]
    assert [(e.session_id, e.outcome) for e in resolved] == [(child, "approved")]
    assert (workspace / "out.txt").read_text() == "write the report"
    assert "parent got: wrote:" in result.text


def test_a_grandchilds_confirmation_climbs_the_tree_to_the_roots_approver(
    hive: Hive, workspace: Path
) -> None:
    hive.create_session("boss", TASKS)  # task_max_depth=2 by default: a task may start one more
    asked: list[ConfirmationRequired] = []

    def approve(event: ConfirmationRequired) -> bool:
        asked.append(event)
        return True

    result = hive.generate("boss", "delegate: delegate: write deep", on_confirmation=approve, timeout=30)

    (child,) = hive.get_child_sessions("boss")
    (grandchild,) = hive.get_child_sessions(child)
    assert [(e.session_id, e.parent_id) for e in asked] == [(grandchild, child)]
    assert (workspace / "out.txt").read_text() == "write deep"
    assert result.text.startswith("parent got: parent got: wrote:")


def test_cancelling_the_parents_turn_cancels_the_childs(hive: Hive, workspace: Path) -> None:
    hive.create_session("boss", TASKS)
    stream = hive.generate_streaming("boss", "delegate: write something")
    for event in stream:
        if isinstance(event, ConfirmationRequired):
            child = event.session_id  # the child waits for a human: its turn is running
            break
    assert hive.cancel_operation("boss")
    with pytest.raises(TurnCancelled):
        stream.result(timeout=30)

    with hive.subscribe(child, after=0) as events:  # replayed from the child's first event
        ended = next(e for e in events if isinstance(e, TurnEnd | TurnError | TurnCancelled))
    assert (
        isinstance(ended, TurnCancelled) and "the turn that started this task was cancelled" in ended.reason
    )
    child_history = hive.history(child)
    write_result = next(m for m in child_history if m.role == "tool")
    assert write_result.is_error and "cancelled" in write_result.text
    assert not (workspace / "out.txt").exists()
    assert hive.pending_confirmations(child) == []
    task_result = next(m for m in hive.history("boss") if m.role == "tool")
    assert task_result.text == ENDED_WHILE_RUNNING  # the child may have had effects: the model is told


def test_the_depth_limit_refuses_a_task_of_a_task(hive: Hive) -> None:
    hive.create_session("boss", SessionConfig(task_tool=True, task_max_depth=1))
    result = hive.generate("boss", "delegate: delegate: go deeper", timeout=30)

    (child,) = hive.get_child_sessions("boss")
    assert hive.get_child_sessions(child) == []  # no grandchild was created
    refusal = next(m for m in hive.history(child) if m.role == "tool")
    assert refusal.is_error and "task_max_depth=1" in refusal.text
    assert "parent got:" in result.text


def test_the_per_turn_limit_refuses_tasks_past_it(hive: Hive) -> None:
    hive.create_session("boss", SessionConfig(task_tool=True, task_max_per_turn=2))
    hive.generate("boss", "delegate: one | two | three", timeout=30)

    assert len(hive.get_child_sessions("boss")) == 2
    results = [m for m in hive.history("boss") if m.role == "tool"]
    assert [m.is_error for m in results] == [False, False, True]
    assert "task_max_per_turn=2" in results[2].text


def test_the_childs_spending_counts_toward_the_roots_budget(hive: Hive) -> None:
    never_ask = ConfirmationPolicy(enabled=False)
    hive.create_session(
        "boss", SessionConfig(task_tool=True, confirmation_policy=never_ask, budget=Budget(max_model_calls=4))
    )
    result = hive.generate("boss", "delegate: loop", timeout=30)

    (child,) = hive.get_child_sessions("boss")
    child_answers = [m for m in hive.history(child) if m.role == "assistant"]
    assert len(child_answers) == 3  # the root's first call, then the child's three: the budget's four
    task_result = next(m for m in hive.history("boss") if m.role == "tool")
    assert task_result.is_error and "budget" in task_result.text
    assert result.stop_reason == "budget"  # nothing left for the parent's next call either


def test_the_children_take_the_child_config_with_the_parents_workspace_and_policy(
    hive: Hive, workspace: Path
) -> None:
    (workspace / "team").mkdir()
    hive.create_session(
        "boss",
        SessionConfig(
            workspace="team",
            confirmation_policy=ConfirmationPolicy(enabled=False),
            task_tool=True,
            task_child_config=SessionConfig(max_tool_rounds=3),
        ),
    )
    hive.generate("boss", "delegate: write here | loop", timeout=30)

    # The parent's workspace and its policy (no confirmation): the file is written, unasked.
    assert (workspace / "team" / "out.txt").read_text() == "write here"
    wrote, looped = [m for m in hive.history("boss") if m.role == "tool"]
    assert not wrote.is_error
    assert looped.is_error and "max_tool_rounds=3" in looped.text  # the child config's limit


def test_the_task_settings_are_validated_and_round_trip() -> None:
    bad_settings: list[dict[str, Any]] = [
        {"task_tool": 1},
        {"task_max_depth": 0},
        {"task_max_per_turn": 0},
        {"task_child_config": {}},
    ]
    for bad in bad_settings:
        with pytest.raises(InvalidConfig):
            SessionConfig(**bad)
    config = SessionConfig(
        task_tool=True,
        task_max_depth=3,
        task_max_per_turn=4,
        task_child_config=SessionConfig(max_tool_rounds=5),
    )
    assert SessionConfig.from_dict(config.to_dict()) == config
    assert SessionConfig().task_tool is False


def test_the_parents_mailbox_answers_while_its_task_runs(hive: Hive) -> None:
    hive.create_session("boss", TASKS)
    seen_while_waiting: list[list[Message]] = []

    def answer_later(_event: ConfirmationRequired) -> bool:
        # The child waits for this answer inside the parent's tool call; the parent still answers.
        seen_while_waiting.append(hive.history("boss", timeout=5))
        return True

    result = hive.generate("boss", "delegate: write it", on_confirmation=answer_later, timeout=30)
    assert "parent got: wrote:" in result.text
    ((prompt, task_call),) = seen_while_waiting  # the running turn's journaled steps
    assert prompt.text == "delegate: write it" and task_call.tool_calls[0].name == "task"


TOKEN = "task-tool-test-token-0123456789"


def test_over_http_a_task_is_configured_and_its_childs_confirmation_is_in_the_inbox_under_its_parent(
    hive: Hive, workspace: Path
) -> None:
    inbox: list[dict[str, Any]] = []
    with (
        ServerThread(serve_app(hive, token=TOKEN)) as server,
        RemoteHive(server.url, token=TOKEN) as remote,
        httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}) as http,
    ):

        def approve(_event: ConfirmationRequired) -> bool:
            inbox.extend(http.get("/v1/confirmations").json()["pending"])
            return True

        remote.create_session("boss", SessionConfig(task_tool=True, task_max_depth=1))
        result = remote.generate("boss", "delegate: write over http", on_confirmation=approve)
        (child,) = remote.get_child_sessions("boss")
        refused = http.post(
            "/v1/sessions", json={"id": "escape", "config": {"task_child_config": {"workspace": "/etc"}}}
        )

    assert [(p["session_id"], p["parent_id"], p["tool_name"]) for p in inbox] == [
        (child, "boss", "write_file")
    ]
    assert (workspace / "out.txt").read_text() == "write over http"  # the remote approver answered the child
    assert "parent got: wrote:" in result.text
    # The children's config passes the checks of a session's own: no workspace of its choosing here.
    assert refused.status_code == 422 and "choose its workspace" in refused.text


def test_with_tenant_tokens_a_tasks_child_belongs_to_its_parents_tenant(
    hive: Hive, workspace: Path, tmp_path: Path
) -> None:
    tokens, tables = {}, []
    for name, tenant in (("alice", "acme"), ("bob", "globex")):
        tokens[name], table = new_token(name, tenant, ["read", "write", "confirm"])
        tables.append(table)
    (tmp_path / "tokens.toml").write_text("\n".join(tables) + "\n", encoding="utf-8")
    with (
        ServerThread(serve_app(hive, tokens=TokenTable.load(tmp_path / "tokens.toml"))) as server,
        RemoteHive(server.url, token=tokens["alice"]) as alice,
        httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {tokens['bob']}"}) as bob,
    ):
        seen_by_bob: list[int] = []

        def approve(event: ConfirmationRequired) -> bool:
            seen_by_bob.append(len(bob.get("/v1/confirmations").json()["pending"]))
            seen_by_bob.append(bob.get(f"/v1/sessions/{event.session_id}").status_code)
            return True  # alice answers her task's child: it is hers

        alice.create_session("boss", TASKS)
        result = alice.generate("boss", "delegate: write for acme", on_confirmation=approve)
        (child,) = alice.get_child_sessions("boss")
        alice_sees_child = alice.history(child)

    assert "parent got: wrote:" in result.text
    assert (workspace / "out.txt").read_text() == "write for acme"
    assert alice_sees_child[0].text == "write for acme"
    assert seen_by_bob == [0, 404]  # another tenant neither lists nor reaches it


def test_a_task_runs_on_its_parents_turn_slot_and_gives_it_back(workspace: Path, actor_backend: str) -> None:
    with Hive.start(
        store="memory",
        llm=ScriptedLlm(script),
        workspace=workspace,
        actor_backend=actor_backend,
        max_concurrent_turns=1,  # the waiting parent must not hold the one slot its child needs
    ) as hive:
        hive.create_session("boss", TASKS)
        assert hive.generate("boss", "delegate: hi", timeout=30).text.startswith("parent got: answer to 'hi'")

        stream = hive.generate_streaming("boss", "delegate: write later")
        next(e for e in stream if isinstance(e, ConfirmationRequired))
        hive.cancel_operation("boss")  # cancelled while the child holds the slot
        with pytest.raises(TurnCancelled):
            stream.result(timeout=30)
        hive.create_session("next")  # one slot again, no more, no less: a turn runs
        assert hive.generate("next", "hello", timeout=30).text == "answer to 'hello'"
