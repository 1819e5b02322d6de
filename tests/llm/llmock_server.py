"""llmock (from PyPI, in the dev extra) run as its own process: a mock provider that enforces quotas.

``llmock serve --rpm N --tpm M`` keeps requests- and tokens-per-minute
buckets per API key the way providers do, answers 429 with the real wait
past them, and sends ``x-ratelimit-*`` / ``anthropic-ratelimit-*`` headers
on every answer. Its journal (``GET /_llmock/requests``) lists every request
it received, with its status and llmock's own monotonic time, which is what
the tests count 429s and rates from.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Llmock", "llmock_process"]

_LISTENING = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")


@dataclass(frozen=True)
class Llmock:
    """A running llmock: its root URL and what it journaled."""

    url: str

    @property
    def openai_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def anthropic_url(self) -> str:
        return f"{self.url}/anthropic"

    def _admin(self, method: str, path: str, body: object | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.url}/_llmock/{path}",
            data=data,
            method=method,
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read() or b"null")

    def requests(self) -> list[dict[str, Any]]:
        """Every model request llmock received, oldest first."""
        answer = self._admin("GET", "requests")
        records = answer["requests"] if isinstance(answer, dict) else answer
        return sorted(
            (r for r in records if "/_llmock" not in r["path"] and r["path"] != "/health"),
            key=lambda r: r["started_at"],
        )

    def scenario(self, *behaviors: dict[str, Any]) -> None:
        """Queue fault behaviours (llmock's scenario format)."""
        self._admin("POST", "scenario", {"behaviors": list(behaviors)})

    def reset(self) -> None:
        self._admin("POST", "reset", {})


@contextmanager
def llmock_process(log_dir: Path, args: Sequence[str] = ()) -> Iterator[Llmock]:
    """Start ``llmock serve`` on a free loopback port with ``args``; stop it on exit."""
    executable = shutil.which("llmock", path=str(Path(sys.executable).parent)) or "llmock"
    log = log_dir / "llmock.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [executable, "serve", "--host", "127.0.0.1", "--port", "0", "--log-level", "info", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        port = None
        while port is None:
            match = _LISTENING.search(log.read_text(errors="replace"))
            if match:
                port = int(match.group(1))
            elif process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"llmock did not start: {log.read_text(errors='replace')[-2000:]}")
            else:
                time.sleep(0.05)  # polling a subprocess's log for its port, not waiting on an actor
        yield Llmock(f"http://127.0.0.1:{port}")
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
