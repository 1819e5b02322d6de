"""Provider endpoints are the operator's decision: the environment's keys never reach a URL a caller names.

Each attack points a session's ``base_url`` at a real listener on 127.0.0.1
that must receive nothing (not a connection, not a byte), with
``OPENAI_API_KEY`` and ``ANTHROPIC_API_KEY`` set where the Hive runs: in the
library, and in a ``sessionhive serve`` subprocess over real HTTP.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from sessionhive import (
    BaseUrlNotAllowed,
    Hive,
    InvalidConfig,
    LlmConfig,
    LlmError,
    LlmNotConfigured,
    Reply,
    ScriptedLlm,
)
from sessionhive.client import RemoteHive
from sessionhive.client._codec import error_from_problem
from sessionhive.model.urls import BaseUrlPolicy
from sessionhive.serve.problems import problem_for
from tests.cli.test_cli import clean_env, sessionhive_command
from tests.llm.llm_servers import AnthropicServer, LoopbackLlmServer, OpenAiServer, ReplySpec
from tests.serve.serve_process import TOKEN, start_serve

OPENAI_SECRET = "sk-operator-openai-7c1e-SECRET"
ANTHROPIC_SECRET = "sk-ant-operator-42d9-SECRET"
SECRETS = (OPENAI_SECRET, ANTHROPIC_SECRET)
MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-test-1"}
PLACEHOLDERS = {"openai": "sk-no-key", "anthropic": "sk-ant-no-key"}
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HIVE_ANSWER = "answered by the Hive's own model"

METADATA_URLS = (
    "http://169.254.169.254/latest/meta-data",
    "http://2852039166/v1",  # 169.254.169.254 as one decimal number
    "http://0xa9.0xfe.0xa9.0xfe/v1",
    "http://[::ffff:169.254.169.254]/v1",
    "http://[fe80::1]:8080/v1",
    "http://metadata.google.internal/computeMetadata/v1",
    "http://METADATA.google.internal./v1",
    "http://100.100.100.200/latest",
)


class Listener:
    """A TCP port that must receive nothing: it counts every connection and keeps every byte sent to it.

    A connection is read for half a second and closed, so that a client that
    did connect fails at once instead of waiting for an answer.
    """

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.1)
        self.port = self._server.getsockname()[1]
        self.connections = 0
        self.received = bytearray()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="listener", daemon=True)
        self._thread.start()

    def url(self, path: str = "/v1") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.settimeout(0.5)
                try:
                    while chunk := conn.recv(65536):
                        self.received += chunk
                except OSError:
                    pass

    def close(self) -> None:
        self._closed.set()
        self._server.close()
        self._thread.join(5)

    def assert_untouched(self) -> None:
        assert self.connections == 0 and not self.received, bytes(self.received[:300])


@pytest.fixture
def listener() -> Iterator[Listener]:
    started = Listener()
    yield started
    started.close()


@pytest.fixture
def operator_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_SECRET)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_SECRET)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)


def hive_model() -> ScriptedLlm:
    return ScriptedLlm(lambda _messages: Reply(HIVE_ANSWER))


def fake_server(provider: str) -> LoopbackLlmServer:
    return OpenAiServer() if provider == "openai" else AnthropicServer()


def assert_no_secret(*texts: str | bytes) -> None:
    for text in texts:
        data = text.encode() if isinstance(text, str) else text
        for secret in SECRETS:
            assert secret.encode() not in data


# ---------------------------------------------------------------------------------- the rule


@pytest.mark.parametrize(
    ("allowed", "url", "accepted"),
    [
        ("http://vllm:8000/v1", "http://vllm:8000/v1", True),
        ("http://vllm:8000/v1", "http://VLLM:8000/v1/", True),
        ("http://vllm:8000/v1", "http://vllm:8000/v1/chat", True),
        ("https://gw.example", "https://gw.example:443/anything", True),
        ("http://[::1]:8000/v1", "http://[0:0::1]:8000/v1", True),
        ("http://vllm:8000/v1", "http://vllm:8000/v10", False),  # whole segments, not text
        ("http://vllm:8000/v1", "http://vllm:8000", False),
        ("http://vllm:8000/v1", "http://vllm:8001/v1", False),
        ("http://vllm:8000/v1", "https://vllm:8000/v1", False),
        ("http://vllm:8000/v1", "http://vllm:8000.evil.example/v1", False),
        ("http://vllm:8000/v1", "http://vllm.evil.example:8000/v1", False),
        ("http://vllm:8000/v1", "http://vllm:8000@evil.example/v1", False),
        ("http://vllm:8000/v1", "http://vllm:8000/v1/../../admin", False),
        ("http://vllm:8000/v1", "http://vllm:8000/v1/%2e%2e/admin", False),
        ("http://vllm:8000/v1", "http://vllm:8000/v1?next=http://evil", False),
        ("http://vllm:8000/v1", "http://vllm:8000\\@evil/v1", False),
    ],
)
def test_an_allowed_prefix_matches_scheme_host_port_and_whole_path_segments(
    allowed: str, url: str, accepted: bool
) -> None:
    policy = BaseUrlPolicy([allowed])
    if accepted:
        policy.check(url)
    else:
        with pytest.raises(BaseUrlNotAllowed):
            policy.check(url)


def test_a_malformed_allowed_url_fails_the_start_and_a_password_is_never_shown(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfig, match="http:// or https://"):
        Hive.start(store="memory", workspace=tmp_path, allow_base_urls=["vllm:8000/v1"])
    with pytest.raises(BaseUrlNotAllowed) as refused:
        BaseUrlPolicy().check("http://user:hunter2-SECRET@llm.example/v1")
    assert "hunter2" not in str(refused.value) and "hunter2" not in refused.value.base_url


def test_serve_refuses_a_malformed_allow_base_url_before_taking_its_port(tmp_path: Path) -> None:
    done = subprocess.run(
        [*sessionhive_command(), "serve", "--store", "memory", "--allow-base-url", "vllm:8000/v1"],
        env={**clean_env(tmp_path), "SESSIONHIVE_TOKEN": TOKEN},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "--allow-base-url" in done.stderr and "http:// or https://" in done.stderr


def test_remote_callers_get_the_same_errors_with_their_fields() -> None:
    for error in (
        BaseUrlNotAllowed("http://llm.example/v1", "it is not among the endpoints the operator allowed"),
        LlmNotConfigured("s", "openai model 'm': OPENAI_API_KEY belongs to https://api.openai.com/v1"),
    ):
        status, problem, _headers = problem_for(error)
        rebuilt = error_from_problem(status, json.loads(json.dumps(problem)))
        assert type(rebuilt) is type(error) and str(rebuilt) == str(error)
    assert problem_for(BaseUrlNotAllowed("http://x", "no"))[0] == 403


# ---------------------------------------------------------------------------------- the library


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_the_environment_key_never_reaches_an_endpoint_a_session_names(
    provider: str, listener: Listener, operator_keys: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = tmp_path / "hive.db"
    with Hive.start(store=f"sqlite:///{store}", llm=hive_model(), workspace=tmp_path) as hive:
        hive.create_session("s")
        with pytest.raises(LlmNotConfigured) as refused:
            hive.configure("s", model_config=LlmConfig(provider, MODELS[provider], base_url=listener.url()))
        message = str(refused.value)
        assert f"{provider.upper()}_API_KEY" in message and "LlmConfig(api_key=" in message
        # Refused before anything changed: the session still answers with the Hive's model.
        assert hive.generate("s", "hi").text == HIVE_ANSWER
        assert hive.get_llm_for_session("s") == LlmConfig("scripted", "scripted")
    listener.assert_untouched()
    assert_no_secret(message, caplog.text, store.read_bytes())


def test_a_restored_session_does_not_borrow_the_environment_key(
    listener: Listener, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    store = f"sqlite:///{tmp_path / 'hive.db'}"
    own = LlmConfig(
        "openai", "gpt-4o-mini", api_key="sk-the-sessions-own", base_url=listener.url(), max_retries=0
    )
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with Hive.start(store=store, llm=hive_model(), workspace=tmp_path) as hive:
        hive.create_session("s")
        hive.configure("s", model_config=own)  # its key stays in this process's memory

    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_SECRET)
    with Hive.start(store=store, llm=hive_model(), workspace=tmp_path) as hive:
        with pytest.raises(LlmNotConfigured, match="OPENAI_API_KEY belongs to") as failed:
            hive.generate("s", "hi")
        assert failed.value.session_id == "s"
        assert_no_secret(str(failed.value))
    listener.assert_untouched()
    assert b"sk-the-sessions-own" not in (tmp_path / "hive.db").read_bytes()


@pytest.mark.parametrize("url", METADATA_URLS)
def test_link_local_and_metadata_addresses_are_refused_unless_allowed_explicitly(
    url: str, tmp_path: Path
) -> None:
    config = LlmConfig("openai", "m", api_key="sk-own", base_url=url)
    with Hive.start(store="memory", workspace=tmp_path) as hive:
        hive.create_session("s")
        with pytest.raises(BaseUrlNotAllowed, match=r"metadata|link-local"):
            hive.configure("s", model_config=config)
        assert hive.get_llm_for_session("s") is None
    with Hive.start(store="memory", workspace=tmp_path, allow_base_urls=[url]) as hive:
        hive.create_session("s")
        hive.configure("s", model_config=config)  # named by the operator: accepted (no turn is run)
        assert hive.get_llm_for_session("s") == config.without_key()


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_an_allowed_endpoint_works_and_gets_the_sessions_key_or_none(
    provider: str, operator_keys: None, tmp_path: Path
) -> None:
    with fake_server(provider) as server:
        server.script(ReplySpec("no key needed"), ReplySpec("with my key"), ReplySpec("operator's"))
        model = MODELS[provider]
        with Hive.start(store="memory", workspace=tmp_path, allow_base_urls=[server.url]) as hive:
            hive.create_session("keyless")
            hive.configure("keyless", model_config=LlmConfig(provider, model, base_url=server.url))
            assert hive.generate("keyless", "hi").text == "no key needed"
            hive.create_session("own")
            own = LlmConfig(provider, model, base_url=server.url, api_key="sk-the-sessions-own")
            hive.configure("own", model_config=own)
            assert hive.generate("own", "hi").text == "with my key"
        # The Hive's own model is the operator's: the environment's key belongs to its endpoint.
        operator = LlmConfig(provider, model, base_url=server.url)
        with Hive.start(store="memory", workspace=tmp_path, llm=operator) as hive:
            hive.create_session("default")
            assert hive.generate("default", "hi").text == "operator's"
        keys = [server.received_key(request) for request in server.requests]
    secret = OPENAI_SECRET if provider == "openai" else ANTHROPIC_SECRET
    assert keys == [PLACEHOLDERS[provider], "sk-the-sessions-own", secret]


class Redirector:
    """An HTTP server on 127.0.0.1 that answers every request with ``307`` to ``target``."""

    def __init__(self, target: str) -> None:
        location = target

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(307)
                self.send_header("Location", location + self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_an_allowed_endpoint_cannot_redirect_the_call_elsewhere(
    provider: str, listener: Listener, operator_keys: None, tmp_path: Path
) -> None:
    redirector = Redirector(listener.url(""))
    try:
        own = LlmConfig(provider, MODELS[provider], api_key="sk-own-REDIRECTED", base_url=redirector.url)
        with Hive.start(store="memory", workspace=tmp_path, allow_base_urls=[redirector.url]) as hive:
            hive.create_session("s")
            hive.configure("s", model_config=replace(own, max_retries=0))
            with pytest.raises(LlmError, match=r"redirect \(307\).*not followed"):
                hive.generate("s", "hi")
    finally:
        redirector.close()
    listener.assert_untouched()


# ---------------------------------------------------------------------------------- over HTTP


@pytest.mark.slow
def test_sessionhive_serve_accepts_only_the_endpoints_the_operator_allowed(
    listener: Listener, operator_keys: None, tmp_path: Path
) -> None:
    store = tmp_path / "served.db"
    with OpenAiServer() as operator, OpenAiServer() as allowed:
        operator.script(ReplySpec("the operator's model"), ReplySpec("the operator's model again"))
        allowed.script(ReplySpec("from the allowed endpoint"))
        model_flags = ("--provider", "openai", "--model", "gpt-4o-mini", "--base-url", operator.url)
        process, url, output = start_serve(
            f"sqlite:///{store}", tmp_path, *model_flags, "--allow-base-url", allowed.url
        )
        try:
            with httpx.Client(base_url=url, headers=AUTH, timeout=30) as http:
                http.post("/v1/sessions", json={"id": "s"}).raise_for_status()
                refused_bodies = []
                for provider in ("openai", "anthropic"):
                    for base_url in (listener.url(), METADATA_URLS[0]):
                        model = {"provider": provider, "model": MODELS[provider], "base_url": base_url}
                        refused = http.put("/v1/sessions/s/configure", json={"model_config": model})
                        assert refused.status_code == 403, refused.text
                        assert refused.headers["content-type"] == "application/problem+json"
                        problem = refused.json()
                        assert problem["error"] == "BaseUrlNotAllowed"
                        assert "--allow-base-url" in problem["detail"]
                        refused_bodies.append(refused.text)
                # Nothing changed: the turn goes to the served model.
                turn = http.post("/v1/sessions/s/turns", json={"prompt": "hi"})
                assert turn.status_code == 200 and turn.json()["text"] == "the operator's model"

                with RemoteHive(url, token=TOKEN) as remote:
                    with pytest.raises(BaseUrlNotAllowed) as raised:
                        remote.configure("s", model_config=LlmConfig("openai", "m", base_url=listener.url()))
                    assert raised.value.base_url == listener.url()

                for base_url, answer in (
                    (operator.url, "the operator's model again"),  # --base-url: allowed implicitly
                    (allowed.url, "from the allowed endpoint"),
                ):
                    model = {"provider": "openai", "model": "gpt-4o-mini", "base_url": base_url}
                    configured = http.put("/v1/sessions/s/configure", json={"model_config": model})
                    assert configured.status_code == 204, configured.text
                    turn = http.post("/v1/sessions/s/turns", json={"prompt": "hi"})
                    assert turn.status_code == 200 and turn.json()["text"] == answer
                metrics = http.get("/metrics").text
                listed = http.get("/v1/sessions?details=true").text
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        # The environment's key went to --base-url, its home, and nowhere else.
        assert [operator.received_key(r) for r in operator.requests] == [OPENAI_SECRET, OPENAI_SECRET]
        assert [allowed.received_key(r) for r in allowed.requests] == ["sk-no-key"]
    listener.assert_untouched()
    assert_no_secret(*refused_bodies, metrics, listed, "".join(output), store.read_bytes())
