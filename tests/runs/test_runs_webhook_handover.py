"""Where a finished run with a webhook leaves the session: ``services.webhooks.run_finished``.

The outbox that delivers it is another part's; here a recorder stands in the
Hive's services (the only seam there is until the outbox is wired in).
"""

from __future__ import annotations

import json
from pathlib import Path

from sessionhive import Hive, Run, ScriptedLlm, Webhook
from tests.runs.runs_helpers import CountingScript


class Recorder:
    def __init__(self) -> None:
        self.finished: list[tuple[Run, Webhook]] = []

    def run_finished(self, run: Run, webhook: Webhook) -> None:
        self.finished.append((run, webhook))


def test_a_finished_run_is_handed_over_once_with_its_secret_never_stored(
    tmp_path: Path, workspace: Path
) -> None:
    store = tmp_path / "sessions"
    recorder = Recorder()
    with Hive.start(f"file:{store}", llm=ScriptedLlm(CountingScript()), workspace=workspace) as hive:
        object.__setattr__(
            hive.core.services, "webhooks", recorder
        )  # frozen: set once, as the outbox will be
        hive.create_session("s")
        hook = Webhook("https://example.com/hooks/runs", secret="s3cret")
        run = hive.start_run("s", "look", webhook=hook)
        done = hive.wait_run(run.run_id, timeout=30)
        hive.generate("s", "look again")  # a run without a webhook is not handed over
        hive.flush()
    [(handed, webhook)] = recorder.finished
    assert handed.run_id == run.run_id and handed.status == "completed" == done.status
    assert webhook.secret == "s3cret" and handed.webhook_url == hook.url
    stored = "".join(path.read_text() for path in store.rglob("*") if path.is_file())
    assert hook.url in stored and "s3cret" not in stored
    assert "s3cret" not in json.dumps(done.to_dict()) and "s3cret" not in repr(hook)
