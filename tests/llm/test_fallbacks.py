"""Fallback models: a primary that always answers 529 (llmock fault injection), and a fallback that works."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import generate_latest

from sessionhive import ConfirmationPolicy, Hive, LlmConfig, Price, SessionConfig, set_prices
from tests.llm.llmock_server import llmock_process

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
        set_prices({"primary-model": Price(100.0, 100.0), "fallback-model": Price(1.0, 2.0)})
        try:
            with Hive.start(store="memory", llm=config, workspace=workspace) as hive:
                for i in range(5):
                    hive.create_session(f"s{i}", NO_CONFIRM)
                    assert hive.generate(f"s{i}", "hello").stop_reason == "stop"
                    history = hive.history(f"s{i}")
                    assert [m.role for m in history] == ["user", "assistant"]
                    assert history[-1].model == "fallback-model"  # the history names who answered
                usage = hive.usage("s0")
                exposition = generate_latest(hive.core.metrics.registry).decode()
        finally:
            set_prices(None)
        models = [(r["model"], r["status"]) for r in mock.requests()]
    # The primary is asked once a turn (no retries: it is overloaded), then the fallback answers.
    assert models.count(("primary-model", 529)) == 5
    assert models.count(("fallback-model", 200)) == 5
    assert 'fallback_model="fallback-model",model="primary-model"' in exposition
    # The cost is priced and counted as the model that answered.
    assert 'sessionhive_llm_cost_usd_total{model="fallback-model"}' in exposition
    assert 'sessionhive_llm_cost_usd_total{model="primary-model"}' not in exposition
    assert usage.cost_usd == pytest.approx((usage.prompt_tokens * 1.0 + usage.completion_tokens * 2.0) / 1e6)
