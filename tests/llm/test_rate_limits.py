"""One limiter per provider account, against llmock enforcing a real quota in its own process."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sessionhive import ConfirmationPolicy, Hive, LlmConfig, RateLimit, SessionConfig
from sessionhive.llm.limits import AccountLimiter
from tests.llm.llmock_server import llmock_process

NO_CONFIRM = SessionConfig(confirmation_policy=ConfirmationPolicy(enabled=False))
SESSIONS = 130
MAX_TOKENS = 64
# Both quotas bind on the 260 calls: 240 requests at once, then 4 a second; the tokens (about
# 980 a call as llmock counts them, prompt estimate + max_tokens) run out about as soon. The
# quotas are small so that the burst is sent before much refills, on a slow machine too: the
# calls past it are paced (sent without pacing, about 20 of them would get a 429).
RPM = 240
TPM = 240_000


def run_two_turns_each(hive: Hive, sessions: int) -> int:
    """Two turns in every session, all sessions at once; returns the number of turns that failed."""
    failed = 0
    for i in range(sessions):
        hive.create_session(f"s{i}", NO_CONFIRM)
    for turn in range(2):
        handles = [hive.generate_streaming(f"s{i}", f"question {turn} of {i}") for i in range(sessions)]
        for handle in handles:
            try:
                failed += handle.result(300).stop_reason != "stop"
            except Exception:
                failed += 1
    return failed


def llmock_tokens(record: dict[str, Any]) -> float:
    """What llmock charges a request against its TPM: its body's size / 4 plus max_tokens."""
    body = record["body"]
    return len(json.dumps(body)) // 4 + int(body.get("max_tokens") or 0)


def assert_within_quota(
    requests: list[dict[str, Any]], per_minute: int, charge: Callable[[dict[str, Any]], float] = lambda r: 1
) -> None:
    """Replays the provider's bucket over every request sent (429s included): it never goes below empty.

    A continuously refilling bucket of ``per_minute`` is how providers (and llmock) enforce a
    quota: staying above empty is never sending more than the quota allows over any window.
    """
    level, last = float(per_minute), None
    for record in requests:
        now = float(record["started_at"])
        if last is not None:
            level = min(per_minute, level + (now - last) * per_minute / 60)
        last = now
        level -= charge(record)
        assert level >= -0.01 * per_minute, f"sent over the quota at t={now}"


@pytest.mark.slow
@pytest.mark.parametrize("stated", [True, False], ids=["stated", "learned-from-headers"])
def test_many_sessions_share_a_quota_without_failures(tmp_path: Path, stated: bool) -> None:
    quota = ["--rpm", str(RPM), "--tpm", str(TPM), "--tool-mode", "off"]
    with llmock_process(tmp_path, quota) as mock:
        limit = RateLimit(requests_per_minute=RPM, tokens_per_minute=TPM) if stated else None
        config = LlmConfig(
            "openai", "gpt-4o-mini", api_key=f"sk-quota-{stated}", base_url=mock.openai_url,
            max_tokens=MAX_TOKENS, rate_limit=limit, max_retries=8,
        )  # fmt: skip
        workspace = tmp_path / "ws"
        workspace.mkdir()
        with Hive.start(store="memory", llm=config, workspace=workspace) as hive:
            if not stated:  # the warm-up: one answer's headers teach the limits
                hive.create_session("warm", NO_CONFIRM)
                assert hive.generate("warm", "hello").stop_reason == "stop"
            failed = run_two_turns_each(hive, SESSIONS)
        requests = mock.requests()
    assert failed == 0
    assert len(requests) >= 2 * SESSIONS
    rate_limited = sum(record["status"] == 429 for record in requests)
    assert rate_limited <= 0.01 * len(requests)
    assert_within_quota(requests, RPM)
    assert_within_quota(requests, TPM, llmock_tokens)


def test_waiting_calls_are_served_in_order_and_a_cancelled_one_leaves_the_queue() -> None:
    async def scenario() -> list[str]:
        limiter = AccountLimiter("openai", "http://127.0.0.1:1/v1", RateLimit(max_concurrent=1))
        served: list[str] = []
        first = await limiter.acquire(10)

        async def call(name: str) -> None:
            with await limiter.acquire(10):
                served.append(name)

        tasks = {name: asyncio.create_task(call(name)) for name in ("a", "b", "c")}
        while limiter.queue_length < 3:
            await asyncio.sleep(0)
        tasks["b"].cancel()
        while limiter.queue_length > 2:
            await asyncio.sleep(0)
        first.release()
        await asyncio.gather(tasks["a"], tasks["c"])
        assert limiter.queue_length == 0 and limiter.in_flight == 0
        return served

    assert asyncio.run(scenario()) == ["a", "c"]


def test_limits_are_learned_from_openai_and_anthropic_headers() -> None:
    openai = AccountLimiter("openai", "http://127.0.0.1:1/v1")
    openai.observe({"x-ratelimit-limit-requests": "500", "x-ratelimit-limit-tokens": "30000"}, 200)
    assert (openai.limit("requests"), openai.limit("tokens")) == (500, 30000)
    anthropic = AccountLimiter("anthropic", "http://127.0.0.1:1/anthropic", RateLimit(requests_per_minute=9))
    anthropic.observe({"anthropic-ratelimit-requests-limit": "50", "retry-after": "1"}, 429)
    assert anthropic.limit("requests") == 50 and anthropic.rate_limited == 1
