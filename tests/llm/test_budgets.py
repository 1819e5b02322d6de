"""Budgets in tokens, dollars and model calls, and the price table they are counted with."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import generate_latest

from sessionhive import (
    Budget,
    ConfirmationPolicy,
    Hive,
    InvalidConfig,
    LlmConfig,
    Message,
    Price,
    Reply,
    ScriptedLlm,
    SessionConfig,
    ToolCall,
    Usage,
    set_prices,
)
from sessionhive.llm.prices import DEFAULT_PRICES, PRICES_ENV, current_prices
from sessionhive.serve import ServerThread, TokenTable, new_token, serve_app
from tests.llm.llmock_server import llmock_process

NO_CONFIRM = ConfirmationPolicy(enabled=False)
# A price far above any real one, so that a few dozen scripted tokens cost whole cents.
LOOP_PRICE = Price(input=1000.0, output=4000.0)


@pytest.fixture
def priced_scripted() -> Iterator[None]:
    set_prices({"looper": LOOP_PRICE})
    yield
    set_prices(None)


def looping_model() -> ScriptedLlm:
    """A model that never stops asking for a tool: the session loops until something stops it."""
    return ScriptedLlm([Reply("let me look again", [ToolCall("list_dir", {"path": "."})])], model="looper")


def assert_valid_history(messages: list[Message]) -> None:
    """Every tool call of every answer has exactly one result."""
    calls = [call.id for m in messages if m.role == "assistant" for call in m.tool_calls]
    results = [m.tool_call_id for m in messages if m.role == "tool"]
    assert sorted(calls) == sorted(r for r in results if r is not None)
    assert len(set(calls)) == len(calls)


def metric(hive: Hive, line_start: str) -> float:
    exposition = generate_latest(hive.core.metrics.registry).decode()
    for line in exposition.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{line_start} not in the metrics")


def test_a_looping_session_stops_on_its_dollar_budget_priced_by_the_table(
    tmp_path: Path, priced_scripted: None
) -> None:
    budget = Budget(max_usd=0.5)
    with Hive.start(store="memory", llm=looping_model(), workspace=tmp_path) as hive:
        hive.create_session("loop", SessionConfig(confirmation_policy=NO_CONFIRM, budget=budget))
        result = hive.generate("loop", "look around")
        usage = hive.usage("loop")
        history = hive.history("loop")
        cost_metric = metric(hive, 'sessionhive_llm_cost_usd_total{model="looper"}')
        stops = metric(hive, 'sessionhive_budget_stops_total{scope="session"}')
    assert result.stop_reason == "budget"
    assert 1 < result.rounds < 50  # it ran, and the budget (not max_tool_rounds) stopped it
    assert history[-1].role == "tool"  # the last call was answered; no model call came after
    assert_valid_history(history)
    by_hand = (usage.prompt_tokens * LOOP_PRICE.input + usage.completion_tokens * LOOP_PRICE.output) / 1e6
    assert usage.cost_usd == pytest.approx(by_hand, rel=0.01)
    assert usage.model_calls == result.rounds
    assert usage.cost_usd <= 0.5  # the prompt of the refused call would not have fitted
    assert cost_metric == pytest.approx(usage.cost_usd, rel=0.01)
    assert stops == 1


def test_children_spend_from_their_roots_budget(tmp_path: Path) -> None:
    with Hive.start(store="memory", llm=looping_model(), workspace=tmp_path) as hive:
        hive.create_session(
            "root", SessionConfig(confirmation_policy=NO_CONFIRM, budget=Budget(max_model_calls=5))
        )
        hive.create_child_session("root", "child", SessionConfig(confirmation_policy=NO_CONFIRM))
        child = hive.generate("child", "go")
        root = hive.generate("root", "and you?")
        root_history = hive.history("root")
    assert (child.stop_reason, child.rounds) == ("budget", 5)
    # Nothing left for the root: its turn stops before its first call, its prompt kept.
    assert (root.stop_reason, root.rounds) == ("budget", 0)
    assert [m.role for m in root_history] == ["user"]


def test_the_hive_budget_is_shared_and_concurrent_turns_cannot_overspend_it(tmp_path: Path) -> None:
    with Hive.start(
        store="memory", llm=looping_model(), workspace=tmp_path, budget=Budget(max_model_calls=12)
    ) as hive:
        for i in range(8):
            hive.create_session(f"s{i}", SessionConfig(confirmation_policy=NO_CONFIRM))
        handles = [hive.generate_streaming(f"s{i}", "go") for i in range(8)]
        results = [handle.result(60) for handle in handles]
        calls = sum(hive.usage(f"s{i}").model_calls for i in range(8))
        stops = metric(hive, 'sessionhive_budget_stops_total{scope="hive"}')
    assert calls == 12  # each call reserved its place before it was sent
    assert all(r.stop_reason == "budget" for r in results)
    assert stops == 8


def test_a_token_budget_counts_prompt_and_completion(tmp_path: Path) -> None:
    answers = ScriptedLlm([Reply("one two three four five")])
    with Hive.start(store="memory", llm=answers, workspace=tmp_path) as hive:
        hive.create_session("s", SessionConfig(budget=Budget(max_tokens=40)))
        first = [hive.generate("s", f"question {i}") for i in range(10)]
        spent = hive.usage("s").total_tokens
    reasons = [r.stop_reason for r in first]
    assert "budget" in reasons and reasons[0] == "stop"
    assert reasons[reasons.index("budget") :] == ["budget"] * (10 - reasons.index("budget"))
    assert spent <= 40


def test_usage_reports_the_cost_of_an_openai_call_from_the_price_table(tmp_path: Path) -> None:
    with llmock_process(tmp_path, ["--tool-mode", "off"]) as mock:
        config = LlmConfig("openai", "gpt-4o-mini-2024-07-18", api_key="sk-cost", base_url=mock.openai_url)
        with Hive.start(store="memory", llm=config, workspace=tmp_path) as hive:
            hive.create_session("s")
            hive.generate("s", "what does this cost?")
            usage = hive.usage("s")
    price = DEFAULT_PRICES.price("gpt-4o-mini")
    assert price is not None and usage.prompt_tokens > 0
    assert usage.cost_usd == pytest.approx(price.cost(usage), rel=1e-9)
    assert usage.model_calls == 1


def test_price_table_finds_dated_models_prices_cached_tokens_and_reads_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = DEFAULT_PRICES
    assert table.price("gpt-4o-mini-2024-07-18") == table.price("gpt-4o-mini") != table.price("gpt-4o")
    assert table.price("claude-sonnet-4-20250514") == table.price("claude-sonnet-4")
    assert table.price("no-such-model") is None
    sonnet = table.price("claude-sonnet-4")
    assert sonnet is not None
    cached = Usage(prompt_tokens=1_000_000, completion_tokens=0, cached_tokens=1_000_000)
    assert sonnet.cost(cached) == pytest.approx(0.30)
    assert sonnet.cost(Usage(1_000_000, 1_000_000)) == pytest.approx(18.0)

    prices = tmp_path / "prices.json"
    prices.write_text(
        json.dumps({"gpt-4o": {"input": 1.0, "output": 2.0}, "house-model": {"input": 3, "output": 4}})
    )
    monkeypatch.setenv(PRICES_ENV, str(prices))
    overridden = current_prices()
    assert overridden.cost("gpt-4o", Usage(1_000_000, 1_000_000)) == pytest.approx(3.0)
    assert overridden.cost("house-model", Usage(0, 1_000_000)) == pytest.approx(4.0)
    assert overridden.price("gpt-4o-mini") == table.price("gpt-4o-mini")  # the rest is kept
    set_prices({"house-model": Price(10, 20)})
    try:
        assert current_prices().cost("house-model", Usage(0, 1_000_000)) == pytest.approx(20.0)
    finally:
        set_prices(None)


def test_budgets_are_validated_and_stored_with_the_config() -> None:
    for bad in ({"max_tokens": 0}, {"max_usd": -1.0}, {"max_usd": float("nan")}, {"max_model_calls": True}):
        with pytest.raises(InvalidConfig):
            Budget(**bad)
    with pytest.raises(InvalidConfig):
        SessionConfig(budget={"max_usd": 1})  # type: ignore[arg-type]
    with pytest.raises(InvalidConfig):
        Hive.start(store="memory", budget=5)  # type: ignore[arg-type]
    config = SessionConfig(budget=Budget(max_tokens=1000, max_usd=2.5))
    assert SessionConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert Usage.from_dict(Usage(1, 2, 0.5, 3, 1).to_dict()) == Usage(1, 2, 0.5, 3, 1)


def test_served_with_tenant_tokens_each_tenant_has_the_hive_budget(tmp_path: Path) -> None:
    tokens: dict[str, str] = {}
    tables: list[str] = []
    for name, tenant in (("alice", "acme"), ("bob", "globex")):
        tokens[name], table = new_token(name, tenant, ["read", "write"])
        tables.append(table)
    (tmp_path / "tokens.toml").write_text("\n".join(tables) + "\n", encoding="utf-8")
    hive = Hive.start(
        store="memory", llm=looping_model(), workspace=tmp_path, budget=Budget(max_model_calls=3)
    )
    try:
        app = serve_app(hive, tokens=TokenTable.load(tmp_path / "tokens.toml"))
        with ServerThread(app) as server:
            for name in ("alice", "bob"):
                headers = {"Authorization": f"Bearer {tokens[name]}"}
                with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
                    created = client.post(
                        "/v1/sessions",
                        json={"id": f"{name}-s", "config": {"confirmation_policy": {"enabled": False}}},
                    )
                    assert created.status_code == 201, created.text
                    turn = client.post(f"/v1/sessions/{name}-s/turns", json={"prompt": "go"})
                    assert turn.status_code == 200, turn.text
                    assert turn.json()["stop_reason"] == "budget"
        # Each tenant spent its own three calls: bob's were not refused because alice spent hers.
        assert [hive.usage(f"{n}-s").model_calls for n in ("alice", "bob")] == [3, 3]
    finally:
        hive.stop()
