"""The console in real Chromium (Debian's, via Playwright): a confirmation shows live, Approve ends it."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

from sessionhive import AgentResult, Hive, Message, Reply, ScriptedLlm, ToolCall
from sessionhive.client import RemoteHive
from sessionhive.serve import ServerThread, serve_app

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TOKEN = "browser-test-token-0123456789"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (os.path.exists(CHROMIUM) or shutil.which("chromium")),
        reason="LOUD SKIP: Debian's chromium is missing at /usr/bin/chromium (.ci/run installs it)",
    ),
]


def script(messages: list[Message]) -> Reply:
    last = messages[-1]
    if last.role == "tool":
        return Reply(f"done: {last.text[:24]}")
    if last.text.startswith("write"):
        return Reply("writing", [ToolCall("write_file", {"path": "report.txt", "content": last.text})])
    return Reply(f"echo {last.text}")


def test_a_turn_waiting_for_confirmation_appears_live_and_approve_finishes_it(tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    workspace = tmp_path / "ws"
    workspace.mkdir()
    with (
        Hive.start(
            store=f"sqlite:///{tmp_path / 'c.db'}", llm=ScriptedLlm(script), workspace=workspace
        ) as hive,
        ServerThread(serve_app(hive, token=TOKEN)) as server,
        RemoteHive(server.url, token=TOKEN) as remote,
        sync_api.sync_playwright() as playwright,
    ):
        remote.create_session("pat")
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(20_000)
            page.goto(server.url + "/")
            page.fill("#token", TOKEN)
            page.click("#login button[type=submit]")
            page.click('#sessions tr[data-session="pat"]')
            page.wait_for_selector('body[data-live="pat"]')  # the live event stream is open

            outcome: dict[str, Any] = {}
            turn = threading.Thread(
                target=lambda: outcome.update(result=remote.generate("pat", "write the report"))
            )
            turn.start()
            card = page.wait_for_selector("#confirmations li.confirmation")
            assert (
                card is not None and "write_file" in card.inner_text() and "report.txt" in card.inner_text()
            )
            page.wait_for_selector("#session-state:text('waiting')")
            page.fill("#confirmations li.confirmation input.reason", "looks right")
            page.click("#confirmations li.confirmation button.approve")
            turn.join(20)
            result = outcome["result"]
            assert isinstance(result, AgentResult) and result.text.startswith("done: created report.txt")
            assert (workspace / "report.txt").read_text() == "write the report"

            page.wait_for_selector("#history li.msg-tool")
            page.wait_for_selector("#events li[data-type=TurnEnd]")
            history = page.inner_text("#history")
            assert "write the report" in history and "done: created report.txt" in history
            assert "approved (looks right)" in page.inner_text("#events")
            assert page.inner_text("#confirmations") == "nothing is waiting"

            # The prompt box runs a turn too; the token stays for the tab only (sessionStorage).
            page.fill("#prompt", "hello from the console")
            page.click("#prompt-form button[type=submit]")
            page.wait_for_selector("#history li:has-text('echo hello from the console')")
            assert page.evaluate("sessionStorage.getItem('sessionhive-token')") == TOKEN
            assert page.evaluate("localStorage.length") == 0
            page.reload()
            page.wait_for_selector('#sessions tr[data-session="pat"]')
            page.screenshot(path=str(tmp_path / "console.png"), full_page=True)
        finally:
            browser.close()
