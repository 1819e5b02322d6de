"""``sessionhive serve --webhook-secret-file``: the served Hive signs webhook deliveries with that key.

A Hive leaves a delivery in a SQLite file (its receiver down), then a real
``sessionhive serve`` process on the same file delivers it, signed with the
key read from the file, once the receiver is up.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import httpx

from sessionhive import Hive, verify_webhook_signature
from sessionhive.actors.webhooks import DELIVERY_HEADER, SIGNATURE_HEADER
from sessionhive.model.runs import Webhook
from tests.serve.serve_process import spawn_serve, wait_listening
from tests.webhooks.receiver import Receiver
from tests.webhooks.webhook_child import OWN_SECRET, finished_run, scripted_model

FILE_SECRET = "from-the-file-5b8e21"
TOKEN = "webhook-test-token-0123456789"


def serve(store: str, workspace: Path, *extra: str) -> subprocess.Popen[str]:
    return spawn_serve(store, workspace, *extra, token=TOKEN)


def test_serve_signs_deliveries_with_the_key_of_its_secret_file(tmp_path: Path) -> None:
    database = tmp_path / "hive.db"
    secret_file = tmp_path / "webhook.key"
    secret_file.write_text(FILE_SECRET + "\n")
    receiver = Receiver(listening=False)
    with Hive.start(store=f"sqlite:///{database}", llm=scripted_model(), workspace=tmp_path) as hive:
        finished_run(hive, "served", Webhook(receiver.url, secret=OWN_SECRET))
    receiver.listen()
    process = serve(f"sqlite:///{database}", tmp_path, "--webhook-secret-file", str(secret_file))
    try:
        url, _log = wait_listening(process)
        assert receiver.delivered.wait(60)
        # An answered request: the server runs, its signal handlers with it (SIGINT drains, exit 0).
        assert (
            httpx.get(f"{url}/v1/sessions", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        )
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)
        receiver.close()
    (request,) = receiver.requests
    assert request.headers[DELIVERY_HEADER].startswith("dlv_")
    assert verify_webhook_signature(request.body, request.headers[SIGNATURE_HEADER], FILE_SECRET)


def test_an_empty_webhook_secret_file_is_refused(tmp_path: Path) -> None:
    secret_file = tmp_path / "empty.key"
    secret_file.write_text("\n")
    process = serve("memory", tmp_path, "--webhook-secret-file", str(secret_file))
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 2
    assert "webhook secret file" in output and "is empty" in output
