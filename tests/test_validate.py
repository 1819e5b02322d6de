"""Numeric arguments are checked one way everywhere: bools, NaN, out-of-range values refused by name."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from sessionhive.llm.scripted import Reply, ScriptedLlm
from sessionhive.model.config import ConfirmationPolicy, SessionConfig
from sessionhive.model.errors import InvalidConfig
from sessionhive.tools.executor import ToolExecutor


@pytest.mark.parametrize(
    ("build", "name"),
    [
        (lambda v, _p: SessionConfig(max_tool_rounds=v), "SessionConfig.max_tool_rounds"),
        (lambda v, _p: ConfirmationPolicy(timeout_s=v), "ConfirmationPolicy.timeout_s"),
        (lambda v, p: ToolExecutor(p, max_workers=v), "max_workers"),
        (lambda v, p: ToolExecutor(p, bash_timeout_s=v), "bash_timeout_s"),
    ],
)
@pytest.mark.parametrize("bad", [True, 0, -1, math.nan, "3"])
def test_a_bad_count_or_duration_is_refused_naming_the_argument(
    build: Any, name: str, bad: Any, tmp_path: Path
) -> None:
    with pytest.raises(InvalidConfig, match=rf"^{name} must be") as caught:
        build(bad, tmp_path)
    assert repr(bad) in str(caught.value)


def test_valid_values_pass_through() -> None:
    assert SessionConfig(max_tool_rounds=3, auto_compact_threshold=1).max_tool_rounds == 3
    assert ConfirmationPolicy(timeout_s=0.5).timeout_s == 0.5
    assert ScriptedLlm([Reply("hi")], latency=0).latency == 0.0
    with pytest.raises(InvalidConfig, match="auto_compact_threshold must be a finite number > 0 and <= 1"):
        SessionConfig(auto_compact_threshold=1.5)
