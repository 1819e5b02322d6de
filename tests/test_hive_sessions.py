"""Session lifecycle through the Hive facade: ids, children, inheritance, destroy, bad input."""

from __future__ import annotations

import pytest

from sessionhive import (
    ConfirmationPolicy,
    Hive,
    InvalidConfig,
    InvalidSessionId,
    LlmConfig,
    LlmNotConfigured,
    Reply,
    ScriptedLlm,
    SessionConfig,
    SessionExists,
    SessionNotFound,
)


def test_create_list_count_and_duplicate(hive: Hive) -> None:
    assert hive.create_session("alpha") == "alpha"
    hive.create_session("beta")
    assert hive.list_sessions() == ["alpha", "beta"]
    assert hive.session_count() == 2
    with pytest.raises(SessionExists, match="alpha"):
        hive.create_session("alpha")


@pytest.mark.parametrize("bad", ["", " padded", "a\x00b", "line\nbreak", "x" * 257, 42, None])
def test_bad_ids_are_refused_clearly(hive: Hive, bad: object) -> None:
    with pytest.raises(InvalidSessionId):
        hive.create_session(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidSessionId):
        hive.history(bad)  # type: ignore[arg-type]


def test_unknown_ids_raise_session_not_found(hive: Hive) -> None:
    for call in (
        lambda: hive.history("ghost"),
        lambda: hive.generate("ghost", "hi"),
        lambda: hive.pause_session("ghost"),
        lambda: hive.destroy_session("ghost"),
        lambda: hive.create_child_session("ghost", "kid"),
        lambda: hive.confirm_tool("ghost", "call_1", True),
    ):
        with pytest.raises(SessionNotFound, match="ghost"):
            call()
    assert hive.list_sessions() == []  # the failed child was not created


def test_invalid_config_values_raise_at_construction() -> None:
    with pytest.raises(InvalidConfig):
        SessionConfig(max_tool_rounds=0)
    with pytest.raises(InvalidConfig):
        SessionConfig(auto_compact_threshold=1.5)
    with pytest.raises(InvalidConfig):
        SessionConfig(storage="disk")  # type: ignore[arg-type]
    with pytest.raises(InvalidConfig):
        ConfirmationPolicy(timeout_s=-1)
    with pytest.raises(InvalidConfig):
        ConfirmationPolicy(on_timeout="maybe")  # type: ignore[arg-type]
    with pytest.raises(InvalidConfig):
        LlmConfig("nope", "model")


def test_children_inherit_policy_and_llm_and_destroy_cascades(hive: Hive) -> None:
    policy = ConfirmationPolicy(require_confirmation="all", timeout_s=5.0, on_timeout="approve")
    hive.create_session("parent", SessionConfig(confirmation_policy=policy))
    hive.configure("parent", model_config=LlmConfig("scripted", "demo", api_key="sk-secret"))
    hive.create_child_session("parent", "child")
    hive.create_child_session("child", "grandchild")
    hive.create_child_session("parent", "own-policy", SessionConfig(confirmation_policy=ConfirmationPolicy()))
    assert hive.get_confirmation_policy("child") == policy
    assert hive.get_confirmation_policy("grandchild") == policy
    assert hive.get_confirmation_policy("own-policy") == ConfirmationPolicy()
    assert hive.get_llm_for_session("child") == LlmConfig("scripted", "demo")
    assert hive.get_llm_for_session("child").api_key is None  # type: ignore[union-attr]
    assert hive.is_child_session("child") and not hive.is_child_session("parent")
    assert hive.get_child_sessions("parent") == ["child", "own-policy"]
    hive.destroy_session("parent")
    assert hive.list_sessions() == []
    with pytest.raises(SessionNotFound):
        hive.history("grandchild")
    hive.create_session("child")  # the id is free again
    assert hive.history("child") == []


def test_configure_keeps_the_key_out_of_everything_returned(hive: Hive) -> None:
    hive.create_session("s")
    secret = "sk-this-must-never-leak"
    config = LlmConfig("scripted", "demo", api_key=secret)
    assert secret not in repr(config)
    hive.configure("s", thinking=True, budget=2048, model_config=config)
    returned = hive.get_llm_for_session("s")
    assert returned is not None and returned.api_key is None and returned.model == "demo"
    with pytest.raises(InvalidConfig):
        hive.configure("s", budget=-5)


def test_generate_without_any_llm_is_refused(workspace: object) -> None:
    with Hive.start(store="memory", workspace=str(workspace)) as hive:
        hive.create_session("s", SessionConfig(confirmation_policy=ConfirmationPolicy(enabled=False)))
        with pytest.raises(LlmNotConfigured, match="configure"):
            hive.generate("s", "hello")
        assert hive.history("s") == []
        assert hive.get_llm_for_session("s") is None
        hive.configure("s", model_config=LlmConfig("scripted", "demo"))
        assert hive.generate("s", "hi").text.startswith("Echo: hi")


def test_list_tools_names_the_builtins(hive: Hive) -> None:
    names = {tool.name for tool in hive.list_tools()}
    assert {"read_file", "write_file", "edit_file", "list_dir", "grep", "bash"} <= names


def test_hive_refuses_calls_after_stop(workspace: object) -> None:
    from sessionhive import HiveStopped

    hive = Hive.start(store="memory", llm=ScriptedLlm([Reply("x")]), workspace=str(workspace))
    hive.create_session("s")
    hive.stop()
    hive.stop()  # twice is fine
    with pytest.raises(HiveStopped):
        hive.history("s")


def test_an_error_keeps_its_fields_and_message_across_processes(hive: Hive) -> None:
    """A cluster shard raises in another process: the error must unpickle whole, message included."""
    import pickle

    from sessionhive import Overloaded

    with pytest.raises(SessionNotFound) as caught:
        hive.history("nobody")
    copy = pickle.loads(pickle.dumps(caught.value))
    assert (type(copy), copy.session_id, str(copy)) == (SessionNotFound, "nobody", str(caught.value))
    assert "session 'nobody' does not exist" in str(copy)
    assert repr(Overloaded("s", 8)) == "Overloaded('s', 8)"
    assert str(pickle.loads(pickle.dumps(Overloaded("s", 8)))).startswith("session 's' has 8 calls waiting")


def test_start_takes_the_declared_options_by_name_and_refuses_others(workspace: object) -> None:
    """Both facades' start() take HiveOptions' arguments: help() shows them, a misspelt one fails."""
    import inspect

    from sessionhive import AsyncHive

    parameters = inspect.signature(Hive.start).parameters
    assert list(parameters)[:4] == ["store", "llm", "workspace", "metrics"]
    assert parameters["mailbox_size"].kind is inspect.Parameter.KEYWORD_ONLY
    assert inspect.signature(AsyncHive.start).parameters == parameters
    with pytest.raises(TypeError, match="mailbox_sise"):
        Hive.start("memory", workspace=str(workspace), mailbox_sise=8)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Hive.start("memory", None, str(workspace), None, "threads")  # type: ignore[call-arg]  # keyword only


def test_cancel_refuses_a_reason_that_is_not_text(hive: Hive) -> None:
    hive.create_session("s")
    with pytest.raises(InvalidConfig, match="reason must be a string or None, got int"):
        hive.cancel_operation("s", reason=3)  # type: ignore[arg-type]
    assert hive.cancel_operation("s", reason="user left") is False  # nothing was running
