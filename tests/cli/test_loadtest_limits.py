"""`sessionhive loadtest --rpm/--tpm` against llmock enforcing that quota in its own process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sessionhive.cli import main
from sessionhive.llm.prices import DEFAULT_PRICES
from tests.llm.llmock_server import llmock_process

RPM = 60
TPM = 1_000_000  # each call counts its max_tokens (4096) too: room for 244 calls at once
SESSIONS = 65  # past the burst of 60: the last five wait for the refill, one a second


def test_loadtest_keeps_to_rpm_and_reports_waiting_429s_fallbacks_and_cost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-loadtest-limits")
    out = tmp_path / "report.json"
    with llmock_process(tmp_path, ["--rpm", str(RPM), "--tpm", str(TPM), "--tool-mode", "off"]) as mock:
        code = main(
            [
                "loadtest", "--provider", "openai", "--model", "gpt-4o-mini", "--base-url", mock.openai_url,
                "--rpm", str(RPM), "--tpm", str(TPM), "--sessions", str(SESSIONS), "--turns", "1",
                "--tools-per-turn", "0", "--store", "memory", "--json", str(out), "-q",
            ]
        )  # fmt: skip
        requests = mock.requests()
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert code == 0, printed
    assert report["turns_failed"] == 0 and report["turns_completed"] == SESSIONS
    assert f"RateLimit(requests_per_minute={RPM}, tokens_per_minute={TPM}" in report["options"]["llm"]
    after, before = report["hive_figures"]["after"], report["hive_figures"]["before"]
    # The calls past the burst waited for capacity instead of being sent into 429s.
    assert after["capacity_waits"] - before["capacity_waits"] >= SESSIONS
    assert after["capacity_wait_seconds"] - before["capacity_wait_seconds"] > 3
    answered_429 = sum(r["status"] == 429 for r in requests)
    # The report counts the 429s llmock sent (at this small scale a call or two may meet one
    # at the edge of a refill; tests/llm/test_rate_limits.py holds the 1% bound at 260 calls).
    assert after["rate_limited"] - before["rate_limited"] == answered_429 <= 2
    assert after["fallbacks"] == 0
    price = DEFAULT_PRICES.price("gpt-4o-mini")
    assert price is not None and after["cost_usd"] - before["cost_usd"] > 0
    for label in ("waiting for capacity", "429s received", "fallbacks", "cost (price table)"):
        assert label in printed


def test_rpm_needs_a_provider_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["loadtest", "--rpm", "100", "-q"]) == 2
    assert "provider" in capsys.readouterr().err
