"""A Hive in a process of its own for the restart test: ``enqueue`` a webhook, or ``serve`` till stdin closes.

Run as ``python tests/webhooks/webhook_child.py MODE DB URL``; it prints one
line when its part is done (``enqueued RUN_ID`` or ``started``).
"""

from __future__ import annotations

import sys
import time

from sessionhive import Hive
from sessionhive.model.runs import Run, Webhook, make_run_id

SERVER_SECRET = "server-key-7c1e0b"
OWN_SECRET = "own-secret-4d2a9f"


def finished_run(session_id: str) -> Run:
    """A completed run, as a session hands it to the webhooks when it ends."""
    now = time.time()
    return Run(
        run_id=make_run_id(session_id),
        session_id=session_id,
        prompt="summarize the report",
        status="completed",
        created_at=now - 2.0,
        started_at=now - 1.5,
        ended_at=now,
        text="The report says yes.",
        stop_reason="end_turn",
        last_event_id=7,
    )


def main(mode: str, database: str, url: str) -> None:
    hive = Hive.start(store=f"sqlite:///{database}", webhook_secret=SERVER_SECRET)
    if mode == "enqueue":
        run = finished_run("restarted-session")
        webhooks = hive.core.services.webhooks
        assert webhooks is not None
        webhooks.run_finished(run, Webhook(url, secret=OWN_SECRET))
        print(f"enqueued {run.run_id}", flush=True)
        time.sleep(3600)  # killed with kill -9 by the test
    print("started", flush=True)
    sys.stdin.read()  # the test closes stdin when it has seen the delivery
    hive.stop()


if __name__ == "__main__":
    main(*sys.argv[1:4])
