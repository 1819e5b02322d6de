"""The ``bash`` sandbox: a bubblewrap command line that gives a command only what it needs.

The filesystem inside is built from an allow-list, not from ``/``: the
system directories (``/usr``, ``/bin``, ``/sbin``, ``/lib*``) read-only, a
list of ``/etc`` entries that hold no secrets (no ``shadow``, ``ssl/private``,
``sudoers``...), the workspace read-write, and a private ``/tmp``, ``/proc``,
``/dev`` and home directory. Nothing of the host's ``/run``, ``/var/run``,
``/tmp``, ``/home``, ``/root``, ``/srv`` or ``/var`` exists inside, so no Unix
socket of the host (a database, Docker, D-Bus, an SSH agent) can be named;
any further hidden path (the store's files) is masked where it would be
visible. The command runs as an unprivileged user (``nobody``) without
capabilities, in new namespaces of every kind, with no network unless the
session allows it, an environment built from an allow-list, and limits on
CPU time, file size and the number of processes. Whether bubblewrap really
works here (it needs user namespaces, which some containers forbid) is
probed once per process by running ``true`` in the very sandbox a command
would get.
"""

from __future__ import annotations

import functools
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sessionhive.tools._cgroup import PidsCgroupParent, find_pids_cgroup

__all__ = ["SANDBOX_HOME", "SandboxStatus", "bwrap_command", "command_environment", "probe_sandbox"]

# Bound read-only where they exist; a symbolic link (``/bin -> usr/bin``) is recreated as one.
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# What of /etc a command may read: name resolution, the dynamic linker, time zones, CA
# certificates, shell and locale defaults. Everything else (shadow, gshadow, sudoers,
# ssl/private, ssh host keys, pip.conf and npmrc with index tokens, ...) does not exist inside.
_ETC_ALLOWED = (
    "passwd",
    "group",
    "hostname",
    "hosts",
    "host.conf",
    "resolv.conf",
    "nsswitch.conf",
    "gai.conf",
    "networks",
    "protocols",
    "services",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "timezone",
    "alternatives",
    "ssl/certs",
    "ssl/openssl.cnf",
    "ca-certificates",
    "ca-certificates.conf",
    "pki/tls/certs",
    "os-release",
    "debian_version",
    "lsb-release",
    "profile",
    "bash.bashrc",
    "bashrc",
    "inputrc",
    "shells",
    "mime.types",
    "magic",
    "magic.mime",
    "locale.alias",
    "terminfo",
    "fonts",
    "mtab",
    "python3*",
)
SANDBOX_HOME = "/home/sandbox"
"""The home directory of a sandboxed command: empty, private to the call, gone after it."""
# Run as nobody: no capabilities inside, and the same uid whoever started the service.
_SANDBOX_UID = "65534"
# Names of the variables passed from this process's environment; nothing else passes.
_PASSED_VARIABLE = re.compile(r"PATH|LANG|LANGUAGE|TERM|TZ|LC_[A-Z_]+")
_DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
_PROBE_TIMEOUT_S = 10.0
_AS_NOBODY = ("--unshare-user", "--uid", _SANDBOX_UID, "--gid", _SANDBOX_UID)


@dataclass(frozen=True)
class SandboxStatus:
    """Whether commands can be sandboxed here; ``reason`` says why not (for the refusal message).

    ``cgroups`` is where each call's ``pids`` cgroup is made (None: the
    process limit is ``RLIMIT_NPROC`` only, which does not hold for root).
    """

    available: bool
    bwrap: str | None = None
    extra_flags: tuple[str, ...] = ()
    reason: str = ""
    cgroups: PidsCgroupParent | None = None

    @property
    def process_limit(self) -> str:
        """How the number of processes per call is bounded, in words (logs and the README)."""
        if self.cgroups is not None:
            return f"a pids cgroup per call (cgroup v{self.cgroups.version}, under {self.cgroups.path})"
        if os.geteuid() == 0:
            return "none: RLIMIT_NPROC does not apply to root and no pids cgroup can be created here"
        return "RLIMIT_NPROC (ulimit -u) of the calling user"


def command_environment(
    source: Mapping[str, str], *, home: str, added: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of a command: the allow-listed variables of ``source``, ``HOME``, then ``added``.

    The allow-list is ``PATH``, ``LANG``, ``LANGUAGE``, ``LC_*``, ``TERM`` and
    ``TZ``: a ``DATABASE_URL``, a ``GITHUB_PAT`` or a webhook URL reaches a
    command only when the operator adds it by name.
    """
    env = {name: value for name, value in source.items() if _PASSED_VARIABLE.fullmatch(name)}
    env.setdefault("PATH", _DEFAULT_PATH)
    env["HOME"] = home
    env.update(added or {})
    return env


def _is_inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _mask(path: str) -> list[str]:
    # A directory becomes an empty tmpfs; a file (an SQLite database) is covered by /dev/null.
    if os.path.isdir(path):
        return ["--tmpfs", path]
    if os.path.exists(path):
        return ["--ro-bind", "/dev/null", path]
    return []


@functools.lru_cache(maxsize=1)
def _system_binds() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The bubblewrap arguments for the system directories and /etc, and the paths they bind.

    Read from the host once per process: the layout of ``/usr`` and ``/etc``
    does not change while a service runs.
    """
    args: list[str] = []
    bound: list[str] = []
    for directory in _SYSTEM_DIRS:
        if os.path.islink(directory):
            args += ["--symlink", os.readlink(directory), directory]
        elif os.path.isdir(directory):
            args += ["--ro-bind", directory, directory]
            bound.append(directory)
    for pattern in _ETC_ALLOWED:
        for entry in sorted(glob.glob(os.path.join("/etc", pattern))):
            args += _etc_entry(entry, bound)
    return tuple(args), tuple(bound)


def _etc_entry(entry: str, bound: list[str]) -> list[str]:
    real = os.path.realpath(entry)
    if os.path.islink(entry):
        # A link into what the sandbox has anyway (/etc/localtime -> /usr/share/zoneinfo/...,
        # /etc/mtab -> ../proc/self/mounts) stays a link, so it shows the sandbox's own file,
        # not the host's.
        if any(_is_inside(real, root) for root in (*_SYSTEM_DIRS, "/proc")):
            return ["--symlink", os.readlink(entry), entry]
        if not os.path.isfile(real):  # a socket or a device elsewhere on the host: never
            return []
        # Elsewhere (resolv.conf -> /run/systemd/resolve/...): the file's content only.
        bound.append(entry)
        return ["--ro-bind", real, entry]
    if os.path.isfile(entry) or os.path.isdir(entry):
        bound.append(entry)
        return ["--ro-bind", entry, entry]
    return []


def bwrap_command(
    status: SandboxStatus,
    workspace: Path,
    argv: Sequence[str],
    *,
    allow_network: bool,
    hidden: Iterable[str | os.PathLike[str]] = (),
    cpu_seconds: int,
    max_file_bytes: int,
    max_processes: int,
    cgroup_procs: Path | None = None,
) -> list[str]:
    """The command line that runs ``argv`` confined to ``workspace`` (which must be resolved).

    Limits are set by a small shell prologue inside the sandbox (``ulimit``),
    so they apply to the command and everything it starts. With
    ``cgroup_procs`` (a cgroup's ``cgroup.procs`` file) a ``sh`` first moves
    itself into that cgroup and then execs bubblewrap, so every process of the
    call is counted by the cgroup's ``pids.max`` from its first fork on.
    """
    if status.bwrap is None:
        raise RuntimeError("no sandbox available")
    ws = str(workspace)
    cmd: list[str] = []
    if cgroup_procs is not None:
        cmd += [shutil.which("sh") or "/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(cgroup_procs)]
    cmd += [status.bwrap, *status.extra_flags]
    system, system_bound = _system_binds()
    cmd += system
    bound = [*system_bound]
    cmd += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", SANDBOX_HOME]
    cmd += ["--bind", ws, ws]
    bound.append(ws)
    # Masks go after every bind, or a bind would undo them; only what is visible needs one.
    masks = sorted({os.path.realpath(p) for p in hidden})
    for path in masks:
        if path != ws and any(_is_inside(path, root) for root in bound):
            cmd += _mask(path)
    # The root holding it all is read-only too: only the workspace, /tmp, the home and /dev/shm
    # (all but the workspace private to the call) can be written.
    cmd += ["--remount-ro", "/"]
    # --unshare-all: new user, mount, pid, ipc, uts, cgroup and network namespaces. The new
    # network namespace is also what keeps the host's *abstract* Unix sockets (@/tmp/.X11-unix,
    # D-Bus, ...) out of reach: they have no file to hide and are scoped by network namespace,
    # so --share-net (a session with allow_network) makes them reachable again.
    # --new-session: no TIOCSTI keystrokes injected into a terminal this process may have.
    cmd += ["--chdir", ws, "--unshare-all", "--die-with-parent", "--new-session"]
    if allow_network:
        cmd.append("--share-net")
    # ``ulimit -t`` bounds CPU seconds, ``-f`` the size of any file written (in 1 KiB blocks
    # in bash, 512-byte blocks in a POSIX sh), ``-u`` the processes of an unprivileged caller
    # (for root only the cgroup holds); then the user's command replaces the prologue shell.
    blocks = max(1, max_file_bytes // 1024)
    # The soft CPU limit sends SIGXCPU (the exit status says so); the hard one, a second
    # later, SIGKILL for a command that ignores it. A hard process limit already below ours
    # makes `ulimit -u` fail, and the stricter one holds: that is fine.
    prologue = (
        f"ulimit -S -t {cpu_seconds} && ulimit -H -t {cpu_seconds + 1} && ulimit -f {blocks} && "
        f"{{ ulimit -u {max_processes} 2>/dev/null || :; }} && "
        'exec "$0" -c "$1"'
    )
    shell, *rest = argv
    if rest[:1] != ["-c"] or len(rest) != 2:
        raise ValueError("argv must be [shell, '-c', command]")
    cmd += ["--", shell, "-c", prologue, shell, rest[1]]
    return cmd


@functools.lru_cache(maxsize=1)
def probe_sandbox() -> SandboxStatus:
    """Find bubblewrap and check, once per process, that it can run ``true`` in a full sandbox."""
    if not sys.platform.startswith("linux"):
        return SandboxStatus(False, reason=f"bubblewrap runs on Linux only (this is {sys.platform})")
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return SandboxStatus(
            False, reason="bubblewrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
        )
    failures: list[str] = []
    # A user namespace in which the command is nobody is the rule; a setuid bubblewrap on a
    # host that forbids user namespaces runs it as the calling (unprivileged) user instead.
    for extra in (_AS_NOBODY, ()):
        status = SandboxStatus(True, bwrap, extra, cgroups=find_pids_cgroup())
        with tempfile.TemporaryDirectory(prefix="sessionhive-probe-") as scratch:
            workspace = Path(os.path.realpath(scratch))
            cmd = bwrap_command(
                status,
                workspace,
                [shutil.which("bash") or "/bin/sh", "-c", "true"],
                allow_network=False,
                cpu_seconds=5,
                max_file_bytes=1 << 20,
                max_processes=16,
            )
            try:
                done = subprocess.run(
                    cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=_PROBE_TIMEOUT_S, check=False
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
                continue
        if done.returncode == 0:
            return status
        failures.append(done.stderr.decode("utf-8", "replace").strip() or f"exit code {done.returncode}")
    return SandboxStatus(
        False,
        bwrap,
        reason=f"bubblewrap is installed but cannot create a sandbox here ({'; '.join(failures)}); "
        "containers often forbid the user namespaces it needs",
    )
