"""The ``sessionhive`` command as a user runs it: a real process, stdin not a terminal, no API key."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sessionhive import Hive
from sessionhive.cli import build_parser, main
from sessionhive.persistence import open_store
from tests.llm.llm_servers import AnthropicServer, OpenAiServer, ReplySpec


def sessionhive_command() -> list[str]:
    script = Path(sys.executable).with_name("sessionhive")
    return [str(script)] if script.exists() else [sys.executable, "-m", "sessionhive"]


def clean_env(home: Path) -> dict[str, str]:
    """No API keys (the scripted demo model); PYTHONPATH kept so a checkout under test is the one run."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home)}
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def run(args: list[str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        sessionhive_command() + args,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env(cwd),
    )


def test_run_hello_with_nothing_configured(tmp_path: Path) -> None:
    done = run(["run", "hello"], tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "> hello" in out
    assert "needs confirmation" in out
    # The approval is said once, by the ConfirmationResolved line, with its reason.
    assert out.count("auto-approved") == 1
    assert "  confirmation approved (auto-approved: stdin is not a terminal)" in out
    assert "< tool write_file [ok]" in out
    assert "Echo: hello" in out
    assert "turn done" in out
    assert "saved in sqlite:///sessionhive.db" in out
    assert (tmp_path / "sessionhive-demo.txt").read_text() == "hello\n"
    assert (tmp_path / "sessionhive.db").exists()


def test_run_continues_a_stored_session_and_prints_json(tmp_path: Path) -> None:
    first = run(["run", "one", "--session", "demo", "--system", "Be brief."], tmp_path)
    assert first.returncode == 0, first.stderr
    second = run(["run", "two", "--session", "demo", "--json"], tmp_path)
    assert second.returncode == 0, second.stderr
    events = [json.loads(line) for line in second.stdout.splitlines()]
    assert events[0]["type"] == "TurnStart" and events[-1]["type"] == "TurnEnd"
    # TurnEnd carries this turn's own messages; the stored history has both turns.
    messages = events[-1]["result"]["messages"]
    assert [m["text"] for m in messages if m["role"] == "user"] == ["two"]
    shown = run(["sessions", "export", "demo"], tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.index('"one"') < shown.stdout.index('"two"')


def test_system_prompt_on_an_existing_session_is_refused_not_ignored(tmp_path: Path) -> None:
    assert run(["run", "one", "--session", "demo"], tmp_path).returncode == 0
    done = run(["run", "two", "--session", "demo", "--system", "Be someone else."], tmp_path)
    assert done.returncode == 2
    assert "already exists" in done.stderr and "--system" in done.stderr
    assert "Traceback" not in done.stderr
    with Hive.start(store=f"sqlite:///{tmp_path / 'sessionhive.db'}", workspace=tmp_path) as hive:
        assert [m.text for m in hive.history("demo") if m.role == "user"] == ["one"]  # no turn ran


def test_memory_store_does_not_claim_the_session_was_saved(tmp_path: Path) -> None:
    done = run(["run", "hello", "--store", "memory", "--session", "m"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "saved in" not in done.stdout and "continue it" not in done.stdout
    assert "session 'm' was not saved" in done.stdout


def test_bad_store_is_a_clear_usage_error(tmp_path: Path) -> None:
    done = run(["run", "hello", "--store", "ftp://nowhere"], tmp_path)
    assert done.returncode == 2
    assert "ftp" in done.stderr
    assert "Traceback" not in done.stderr


def test_version_and_usage_errors(tmp_path: Path) -> None:
    version = run(["--version"], tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("sessionhive ")
    for argv in (
        ["run", "x", "--provider", "openai"],  # no --model
        ["loadtest", "--provider", "anthropic"],
        ["run"],  # no prompt
        ["run", "x", "--metrics-port", "99999"],
        ["sessions", "delete"],
        ["sessions", "show", "x", "--last", "-1"],
    ):
        done = run(argv, tmp_path)
        assert done.returncode == 2, (argv, done.stderr)
        assert "usage: sessionhive" in done.stderr and "Traceback" not in done.stderr
    no_model = run(["run", "x", "--provider", "openai"], tmp_path)
    assert "--model is required with --provider openai" in no_model.stderr
    port = run(["run", "x", "--metrics-port", "99999"], tmp_path)
    assert "--metrics-port" in port.stderr and "MetricsConfig" not in port.stderr


@pytest.mark.parametrize(
    ("model", "variable"), [("gpt-4o-mini", "OPENAI_API_KEY"), ("claude-x", "ANTHROPIC_API_KEY")]
)
def test_a_named_model_without_a_key_is_refused_not_answered_by_the_demo(
    tmp_path: Path, model: str, variable: str
) -> None:
    done = run(["run", "--model", model, "hi"], tmp_path)
    assert done.returncode == 2, done.stdout
    assert variable in done.stderr and "--provider scripted" in done.stderr
    assert "Echo" not in done.stdout and not (tmp_path / "sessionhive.db").exists()
    demo = run(["run", "--provider", "scripted", "--model", model, "hi"], tmp_path)
    assert demo.returncode == 0 and "Echo: hi" in demo.stdout, demo.stderr


def test_errors_give_command_line_advice(tmp_path: Path) -> None:
    assert run(["run", "hi", "--session", "alpha"], tmp_path).returncode == 0
    for argv in (["sessions", "show", "ghost"], ["sessions", "export", "ghost"]):
        done = run(argv, tmp_path)
        assert done.returncode == 1
        assert "session 'ghost' does not exist" in done.stderr
        assert "sessionhive sessions list" in done.stderr
        assert "create_session()" not in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["run", "--help"],
        ["loadtest", "--help"],
        ["serve", "--help"],
        ["sessions", "--help"],
        ["sessions", "delete", "--help"],
        ["sessions", "export", "--help"],
    ],
    ids=" ".join,
)
def test_help_texts_read_as_plain_text(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: sessionhive")
    assert "``" not in text and ":class:" not in text and ":func:" not in text
    assert not text.rstrip().endswith(":")  # a sentence cut before its list
    assert "OpenAI-compatible server" not in text or "Anthropic" in text  # --base-url is not OpenAI-only


def test_every_option_says_what_it_does_and_its_default() -> None:
    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}")
            elif action.option_strings and action.help != argparse.SUPPRESS:
                assert action.help, f"{path} {action.option_strings[0]} has no help"
                if action.default not in (None, False, argparse.SUPPRESS):
                    assert "default" in action.help, f"{path} {action.option_strings[0]} hides its default"

    walk(build_parser(), "sessionhive")


def test_sessions_list_show_export_delete(tmp_path: Path) -> None:
    for session_id in ("alpha", "beta"):
        assert run(["run", f"hi {session_id}", "--session", session_id], tmp_path).returncode == 0
    listing = run(["sessions", "list"], tmp_path)
    assert listing.stdout.split() == ["alpha", "beta"]
    long = run(["sessions", "list", "--long", "--json"], tmp_path)
    rows = json.loads(long.stdout)
    assert [(r["id"], r["messages"]) for r in rows] == [("alpha", 4), ("beta", 4)]
    plain = run(["sessions", "list", "-l"], tmp_path).stdout.splitlines()
    assert plain[0].split() == ["ID", "PARENT", "STATE", "MESSAGES", "TOKENS", "MODEL", "UPDATED"]
    assert plain[1].split()[0] == "alpha" and plain[-1] == "2 session(s) in sqlite:///sessionhive.db"
    show = run(["sessions", "show", "alpha"], tmp_path)
    assert "[user] hi alpha" in show.stdout and "write_file" in show.stdout
    # One id or all of them: the same shape, a list of snapshots.
    one = json.loads(run(["sessions", "export", "beta"], tmp_path).stdout)
    every = json.loads(run(["sessions", "export"], tmp_path).stdout)
    assert [s["session_id"] for s in one] == ["beta"]
    assert [s["session_id"] for s in every] == ["alpha", "beta"]
    assert one[0] == every[1]
    assert run(["sessions", "export", "beta", "-o", "beta.json"], tmp_path).returncode == 0
    assert json.loads((tmp_path / "beta.json").read_text()) == one
    missing = run(["sessions", "delete", "gamma"], tmp_path)
    assert missing.returncode == 1 and "gamma" in missing.stderr
    assert run(["sessions", "delete", "alpha"], tmp_path).returncode == 0
    assert run(["sessions", "list"], tmp_path).stdout.split() == ["beta"]


def make_family(store: str, workspace: Path) -> None:
    """root -> (root/a -> root/a/x, root/b), and an unrelated session."""
    with Hive.start(store=store, workspace=workspace) as hive:
        hive.create_session("root")
        hive.create_child_session("root", "root/a")
        hive.create_child_session("root", "root/b")
        hive.create_child_session("root/a", "root/a/x")
        hive.create_session("other")


def test_deleting_a_parent_refuses_without_r_and_cascades_with_it(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'sessionhive.db'}"
    make_family(store, tmp_path)
    refused = run(["sessions", "delete", "root"], tmp_path)
    assert refused.returncode == 2
    assert "3 child session(s)" in refused.stderr and "add -r" in refused.stderr
    assert run(["sessions", "list"], tmp_path).stdout.split() == [
        "other",
        "root",
        "root/a",
        "root/a/x",
        "root/b",
    ]
    done = run(["sessions", "delete", "-r", "root"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "deleted 4 session(s)" in done.stdout
    assert run(["sessions", "list"], tmp_path).stdout.split() == ["other"]


def test_orphans_of_a_deleted_parent_are_removed_with_r(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'sessionhive.db'}"
    make_family(store, tmp_path)
    raw = open_store(store)  # what an older sessionhive left behind: the parent gone, its children not
    try:
        raw.write_batch((), ["root"])
    finally:
        raw.close()
    hint = run(["sessions", "delete", "root"], tmp_path)
    assert hint.returncode == 2 and "sessions delete -r root" in hint.stderr
    done = run(["sessions", "delete", "-r", "root"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert run(["sessions", "list"], tmp_path).stdout.split() == ["other"]


def test_openai_session_remembers_its_model(tmp_path: Path) -> None:
    with OpenAiServer() as server:
        server.script(ReplySpec("hello from the local server"), ReplySpec("again"))
        base = ["--provider", "openai", "--model", "local-model", "--base-url", server.url]
        done = run(["run", "hi", "--session", "o", *base], tmp_path)
        assert done.returncode == 0, done.stderr
        assert "hello from the local server" in done.stdout
        rows = json.loads(run(["sessions", "list", "-l", "--json"], tmp_path).stdout)
        assert [(r["id"], r["model"]) for r in rows] == [("o", "openai/local-model")]
        assert "openai/local-model" in run(["sessions", "list", "-l"], tmp_path).stdout
        assert len(server.requests) == 1


def test_anthropic_on_a_local_endpoint_needs_no_key(tmp_path: Path) -> None:
    with AnthropicServer() as server:
        server.script(ReplySpec("hello from a local anthropic"))
        base = ["--provider", "anthropic", "--model", "local-claude", "--base-url", server.url]
        done = run(["run", "hi", *base], tmp_path)
        assert done.returncode == 0, done.stderr
        assert "hello from a local anthropic" in done.stdout


def test_a_base_url_ending_in_v1_that_gives_404_gets_a_hint(tmp_path: Path) -> None:
    with AnthropicServer() as server:
        # The Anthropic SDK adds /v1 itself: this asks for /v1/v1/messages, which is not there.
        base = ["--provider", "anthropic", "--model", "local-claude", "--base-url", server.url + "/v1"]
        done = run(["run", "hi", *base], tmp_path)
        assert done.returncode == 1
        assert "404" in done.stderr or "404" in done.stdout
        assert "without the trailing /v1" in done.stderr + done.stdout
        assert "LlmConfig" not in done.stderr + done.stdout


@pytest.mark.parametrize("latency", ["1h", "30m", "45s", "500ms"])
def test_durations_take_units(latency: str) -> None:
    args = build_parser().parse_args(["loadtest", "--idle-timeout", latency])
    assert args.idle_timeout == {"1h": 3600.0, "30m": 1800.0, "45s": 45.0, "500ms": 0.5}[latency]


def test_the_readme_quotes_the_help_word_for_word(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## The command\n", 1)[1]
    quoted = section.split("$ sessionhive --help\n", 1)[1].split("```", 1)[0]
    done = run(["--help"], tmp_path)  # not a terminal and no COLUMNS: argparse wraps at 80
    assert done.returncode == 0
    assert quoted == done.stdout, "README's command section quotes 'sessionhive --help': update it"
