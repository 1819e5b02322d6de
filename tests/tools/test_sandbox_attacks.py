"""Attacks on the ``bash`` sandbox, run for real: host sockets, secrets, a fork bomb.

Each attack runs from a sandboxed command against something real on this
host (PostgreSQL's socket, listeners this test opens, the parent's
environment), and each listener must receive nothing.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sessionhive.model.messages import ToolResult
from sessionhive.tools import ToolExecutor
from sessionhive.tools._sandbox import probe_sandbox

SANDBOX = probe_sandbox()
pytestmark = pytest.mark.skipif(
    not SANDBOX.available, reason=f"no working bubblewrap here: {SANDBOX.reason} (.ci/run installs it)"
)
POSTGRES_SOCKET = "/var/run/postgresql/.s.PGSQL.5432"
# Forks children that sleep until fork fails (or 500 are running), then says how many it made.
FORKER = """
import os, time
n = 0
while n < 500:
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    n += 1
print("forked", n)
"""
# Connects to a Unix socket by path (or by abstract name, after an '@') and says what happened.
CONNECT = """
import socket, sys
name = sys.argv[1]
address = "\\0" + name[1:] if name.startswith("@") else name
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(address)
    s.sendall(b"stolen")
    print("CONNECTED")
except OSError as exc:
    print("refused:", exc)
"""


def bash(executor: ToolExecutor, command: str, **kwargs: Any) -> ToolResult:
    return asyncio.run(executor.execute("bash", {"command": command}, **kwargs))


def connect_from_sandbox(executor: ToolExecutor, ws: Path, address: str, **kwargs: Any) -> str:
    (ws / "connect.py").write_text(CONNECT)
    return bash(executor, f"python3 connect.py '{address}'", **kwargs).output


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    return workspace


@pytest.fixture
def executor(ws: Path) -> Iterator[ToolExecutor]:
    with ToolExecutor(ws, bash_timeout_s=20.0) as ex:
        yield ex


def unix_listener(address: str) -> socket.socket:
    server = socket.socket(socket.AF_UNIX)
    server.bind(address)
    server.listen(8)
    server.setblocking(False)
    return server


def assert_received_nothing(server: socket.socket) -> None:
    # The command has ended: a connection it made would be waiting in the backlog.
    with pytest.raises(BlockingIOError):
        server.accept()


@pytest.mark.skipif(not os.path.exists(POSTGRES_SOCKET), reason="no local PostgreSQL socket here")
def test_postgresqls_unix_socket_is_out_of_reach(executor: ToolExecutor, ws: Path) -> None:
    # The host reaches it, so the refusal below is the sandbox's doing.
    with socket.socket(socket.AF_UNIX) as probe:
        probe.connect(POSTGRES_SOCKET)
    for allow_network in (False, True):
        output = connect_from_sandbox(executor, ws, POSTGRES_SOCKET, allow_network=allow_network)
        assert "refused: [Errno 2] No such file or directory" in output, output
    listing = bash(executor, "ls -A /run /var/run /var/run/postgresql 2>&1").output
    assert listing.count("No such file or directory") == 3, listing
    psql = bash(executor, "psql -h /var/run/postgresql -U postgres -d test -c 'select 1' 2>&1").output
    assert "failed: No such file or directory" in psql and "(1 row)" not in psql, psql


@pytest.mark.parametrize("directory", ["/tmp", "/run"])
def test_a_unix_socket_of_the_host_under_tmp_or_run_receives_nothing(
    executor: ToolExecutor, ws: Path, directory: str
) -> None:
    address = f"{directory}/sessionhive-attack-{uuid.uuid4().hex[:12]}.sock"
    server = unix_listener(address)
    try:
        for allow_network in (False, True):  # the network does not bring the filesystem back
            output = connect_from_sandbox(executor, ws, address, allow_network=allow_network)
            assert "CONNECTED" not in output and "No such file or directory" in output, output
            assert_received_nothing(server)
    finally:
        server.close()
        os.unlink(address)


def test_an_abstract_unix_socket_of_the_host_receives_nothing(executor: ToolExecutor, ws: Path) -> None:
    name = f"@sessionhive-attack-{uuid.uuid4().hex[:12]}"
    with unix_listener("\0" + name[1:]) as server:
        with socket.socket(socket.AF_UNIX) as probe:  # reachable from the host's network namespace
            probe.connect("\0" + name[1:])
        server.accept()[0].close()
        output = connect_from_sandbox(executor, ws, name)
        assert "CONNECTED" not in output and "Connection refused" in output, output
        assert_received_nothing(server)


def test_secrets_in_the_environment_and_in_etc_stay_out(
    executor: ToolExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = {
        "DATABASE_URL": "postgresql://app:hunter2-db@db/app",
        "GITHUB_PAT": "ghp_sessionhive_attack",
        "SLACK_WEBHOOK": "https://hooks.slack.com/services/T0/B0/attack",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    command = (
        "env; cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n'; "
        "ls /etc/shadow /etc/gshadow /etc/sudoers /etc/ssl/private /root 2>&1; ls -A /home; echo done"
    )
    output = bash(executor, command).output
    for name, value in secrets.items():
        assert name not in output and value not in output, output
    assert output.count("No such file or directory") == 5, output
    assert "\nsandbox\ndone\n" in output  # /home holds only the command's own, empty home
    assert Path("/etc/shadow").exists()  # the host has them; the sandbox does not show them


def test_the_command_runs_unprivileged_with_a_read_only_system(executor: ToolExecutor) -> None:
    output = bash(executor, "id -u; touch /usr/x /etc/x /x 2>&1; grep CapEff /proc/self/status").output
    lines = output.splitlines()
    assert lines[0] == "65534", output
    assert output.count("Read-only file system") == 3, output
    assert "CapEff:\t0000000000000000" in output


def test_forks_beyond_bash_max_processes_fail_even_for_root(ws: Path) -> None:
    (ws / "forker.py").write_text(FORKER)
    with ToolExecutor(ws, bash_max_processes=40) as executor:
        output = bash(executor, "python3 forker.py").output
    forked = int(output.split("forked ")[1].split()[0])
    # bash and python count too; the limit holds whoever runs the service (root here).
    assert 0 < forked < 40, output


def test_a_fork_bomb_ends_at_its_timeout_while_another_session_answers(ws: Path) -> None:
    other = ws / "other"
    other.mkdir()
    (other / "seen.txt").write_text("here")
    timeout_s = 3.0

    async def scenario() -> tuple[float, ToolResult, ToolResult, bool]:
        with ToolExecutor(ws, bash_max_processes=64) as executor:
            started = time.monotonic()
            bomb = asyncio.create_task(
                executor.execute(
                    "bash",
                    {"command": "touch bombing; :(){ :|:& };:; sleep 60", "timeout_s": timeout_s},
                    session_id="attacker",
                )
            )
            while not (ws / "bombing").exists():  # an OS-level condition: the command has begun
                await asyncio.sleep(0.01)
            listed = await executor.execute("list_dir", {"path": "other"}, session_id="bystander")
            bomb_still_running = not bomb.done()
            bombed = await bomb
            return time.monotonic() - started, bombed, listed, bomb_still_running

    elapsed, bombed, listed, bomb_still_running = asyncio.run(scenario())
    assert listed == ToolResult("seen.txt")
    assert bomb_still_running  # the bystander got its answer during the bomb, not after it
    assert bombed.is_error and "timed out after 3 s" in bombed.output
    # The bound: the call ends within 1 s of its timeout, fork bomb or not.
    assert elapsed < timeout_s + 1.0, elapsed
    cgroups = SANDBOX.cgroups
    if cgroups is not None:  # and the call's cgroup goes, with every process in it
        assert eventually(lambda: not list(cgroups.path.glob(f"sessionhive-{os.getpid()}-*")))


def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll an OS-level condition (cgroups emptied by a background reaper); not used for actors."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


NOBODY_CHILD = """
import asyncio, sys
from sessionhive.tools import ToolExecutor
with ToolExecutor(sys.argv[1], bash_max_processes=30) as executor:
    assert executor.bash_sandbox is not None and executor.bash_sandbox.cgroups is None
    print(asyncio.run(executor.execute("bash", {"command": "python3 forker.py"})).output)
"""


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv")
def test_the_process_limit_holds_for_an_unprivileged_service_too() -> None:
    # A service running as an ordinary user cannot make cgroups: RLIMIT_NPROC holds instead.
    ws = Path(tempfile.mkdtemp(prefix="sessionhive-nobody-"))
    try:
        ws.chmod(0o777)
        (ws / "forker.py").write_text(FORKER)
        done = subprocess.run(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                sys.executable,
                "-c",
                NOBODY_CHILD,
                str(ws),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={"PYTHONPATH": str(Path(__file__).resolve().parents[2]), "PATH": "/usr/bin:/bin"},
            check=False,
        )
    finally:
        shutil.rmtree(ws)
    assert done.returncode == 0, done.stderr
    forked = int(done.stdout.split("forked ")[1].split()[0])
    assert 0 < forked < 30, done.stdout
