"""Fallback models: a primary that always answers 529 (llmock fault injection), and a fallback that works."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import generate_latest

from sessionhive import ConfirmationPolicy, Hive, LlmConfig, SessionConfig
from tests.llmock_server import llmock_process

NO_CONFIRM = SessionConfig(confirmation_policy=ConfirmationPolicy(enabled=False))


def test_every_turn_finishes_on_the_fallback_when_the_primary_is_overloaded(tmp_path: Path) -> None:
    with llmock_process(tmp_path, ["--tool-mode", "off"]) as mock:
        mock.scenario({"type": "fail", "status": 529, "times": None, "match": {"model": "primary-model"}})
        fallback = LlmConfig("openai", "fallback-model", api_key="sk-fallback", base_url=mock.openai_url)
        config = LlmConfig(
            "openai", "primary-model", api_key="sk-fallback", base_url=mock.openai_url, fallbacks=(fallback,)
        )
        workspace = tmp_path / "ws"
        workspace.mkdir()
        with Hive.start(store="memory", llm=config, workspace=workspace) as hive:
            for i in range(5):
                hive.create_session(f"s{i}", NO_CONFIRM)
                assert hive.generate(f"s{i}", "hello").stop_reason == "stop"
                assert [m.role for m in hive.history(f"s{i}")] == ["user", "assistant"]
            exposition = generate_latest(hive.core.metrics.registry).decode()
        models = [(r["model"], r["status"]) for r in mock.requests()]
    # The primary is asked once a turn (no retries: it is overloaded), then the fallback answers.
    assert models.count(("primary-model", 529)) == 5
    assert models.count(("fallback-model", 200)) == 5
    assert 'fallback_model="fallback-model",model="primary-model"' in exposition
