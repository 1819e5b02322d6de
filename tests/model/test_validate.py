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


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        (("", True, None, None), "tool_id must be the non-empty id"),
        (("t1", "no", None, None), "approved must be True or False, got 'no'"),
        (("t1", 1, None, None), "approved must be True or False, got 1"),
        (("t1", False, 3, None), "reason must be a string or None, got int"),
        (("t1", False, None, b"ops"), "decided_by must be a string or None, got bytes"),
    ],
)
def test_confirm_arguments_that_could_be_misread_are_refused(arguments: tuple[Any, ...], words: str) -> None:
    """``confirm_tool(sid, tool_id, "no")`` would approve if truth-tested: every facade refuses it here."""
    from sessionhive.model.validate import check_confirm_arguments

    with pytest.raises(InvalidConfig, match=words):
        check_confirm_arguments(*arguments)
