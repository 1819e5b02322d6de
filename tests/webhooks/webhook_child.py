"""A Hive in a process of its own for the restart test: ``enqueue`` a webhook, or ``serve`` till stdin closes.

Run as ``python tests/webhooks/webhook_child.py MODE DB URL``; it prints one
line when its part is done (``enqueued RUN_ID`` or ``started``).
"""

from __future__ import annotations

import sys
import time

from sessionhive import Hive, Reply, Run, ScriptedLlm, Webhook

SERVER_SECRET = "server-key-7c1e0b"
OWN_SECRET = "own-secret-4d2a9f"
ANSWER = "The report says yes."


def scripted_model() -> ScriptedLlm:
    return ScriptedLlm([Reply(ANSWER)])


def finished_run(hive: Hive, session_id: str, webhook: Webhook) -> Run:
    """Run a turn with ``webhook`` to its end: the session hands it to the Hive's webhooks as it finishes."""
    hive.create_session(session_id)
    run = hive.start_run(session_id, "summarize the report", webhook=webhook)
    return hive.wait_run(run.run_id, timeout=60)


def main(mode: str, database: str, url: str) -> None:
    hive = Hive.start(store=f"sqlite:///{database}", llm=scripted_model(), webhook_secret=SERVER_SECRET)
    if mode == "enqueue":
        run = finished_run(hive, "restarted-session", Webhook(url, secret=OWN_SECRET))
        print(f"enqueued {run.run_id}", flush=True)
        time.sleep(3600)  # killed with kill -9 by the test
    print("started", flush=True)
    sys.stdin.read()  # the test closes stdin when it has seen the delivery
    hive.stop()


if __name__ == "__main__":
    main(*sys.argv[1:4])
