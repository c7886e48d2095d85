"""Two users' terminals on the local stack, and one trying to reach the other's (issue 18).

On Fargate each task is its own machine as far as its user can tell: nothing of another task, or of
the control plane's state, is reachable. Alice's attempts run in her real sandbox, started by the real
runner and entered as ECS Exec enters it, as her user (uid 1000) and as the task's root; where a path
of bob's is named, it is the host path an attacker would have to guess, and alice's host uid is tried
on it directly too, so the proof does not rest on the path being hidden.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cloudide.localstack.runner import TaskInfo
from cloudide.offline.stack import OfflineAws
from tests.e2e.local_stack import CLOUDIDE, local_stack
from tests.e2e.scenarios import first_terminal
from tests.localstack.conftest import (  # noqa: F401
    Cluster,
    cluster,
    direct_sync_stack,
    members,
    pid_namespace,
)
from tests.support import require_tool

pytestmark = [pytest.mark.sandbox]

AS_USER = ["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", "--no-new-privs", "--"]
SOCKET = "/tmp/cloudide-tmux/default"


@pytest.fixture(scope="module")
def offline_server() -> Iterator[OfflineAws]:
    """The runner's fixtures' local AWS, under its own stack name: moto servers in one test process share
    their backends, and tests/localstack deploys the default name into them too."""
    with direct_sync_stack("cloudide-isolation") as aws:
        yield aws


@dataclass
class Task:
    arn: str
    cluster: Cluster

    @property
    def info(self) -> TaskInfo:
        return self.cluster.runner.tasks()[self.arn]

    def run(self, script: str, *, as_root: bool = False) -> subprocess.CompletedProcess[str]:
        """`script` in the task as ECS Exec runs a command: as its root, or dropped to its user."""
        command = ["/bin/sh", "-c", script] if as_root else [*AS_USER, "/bin/sh", "-c", script]
        argv, env = self.cluster.runner.exec_command(self.arn, command)
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)


def on_host_as(uid: int, *argv: str) -> subprocess.CompletedProcess[str]:
    """`argv` on the host as `uid`: what a process of that task could do if it found the host's paths."""
    drop = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs", "--"]
    return subprocess.run([*drop, *argv], capture_output=True, text=True, timeout=30, check=False)


@pytest.fixture
def alice_and_bob(cluster: Cluster) -> Iterator[tuple[Task, Task]]:  # noqa: F811
    """Two running tasks; bob has a mode-600 secret in his workspace and a live tmux shell."""
    require_tool("tmux", "bob's persistent shell")
    alice, bob = (Task(cluster.run_task(f"s-{uuid.uuid4().hex[:10]}"), cluster) for _ in range(2))
    for task in (alice, bob):
        cluster.wait_exec_ready(task.arn)
    made = bob.run(
        f"umask 077; echo bob-secret > /workspace/secret.txt; mkdir -p -m 700 {SOCKET.rsplit('/', 1)[0]};"
        f" tmux -S {SOCKET} new-session -d -s main 'sleep 600'"
    )
    assert made.returncode == 0, made.stderr
    yield alice, bob


@pytest.mark.escape_attempt
def test_alice_cannot_read_bobs_mode_600_file_by_any_path(alice_and_bob: tuple[Task, Task]) -> None:
    alice, bob = alice_and_bob
    secret = bob.info.workspace / "secret.txt"
    assert secret.read_text() == "bob-secret\n" and secret.stat().st_mode & 0o777 == 0o600
    # Inside: no path to it, not under /opt/cloudide, not through /proc, not anywhere on her file system.
    search = (
        f"cat {secret} /opt/cloudide/.local-state/tasks/*/workspace/secret.txt /proc/*/root/workspace/secret.txt;"
        " find / \\( -path /proc -o -path /sys -o -path /dev \\) -prune -o -name secret.txt -print"
    )
    for as_root in (False, True):
        found = alice.run(search, as_root=as_root)
        assert "bob-secret" not in found.stdout and "secret.txt" not in found.stdout, found.stdout
    # Had she found the host path: her host ids (user and root) cannot open it.
    for uid in (alice.info.user_uid, alice.info.user_uid - 1000):
        assert on_host_as(uid, "cat", str(secret)).returncode != 0
    assert bob.info.directory.stat().st_mode & 0o777 == 0o700


@pytest.mark.escape_attempt
def test_alice_cannot_reach_bobs_tmux_socket(alice_and_bob: tuple[Task, Task], tmp_path: Path) -> None:
    alice, bob = alice_and_bob
    bobs_socket = bob.info.directory / "volumes" / "tmp" / "cloudide-tmux" / "default"
    assert bobs_socket.is_socket()
    # A unix socket path has at most 107 bytes: reach it through a short link, as an attacker would.
    link = Path(tempfile.mkdtemp(prefix="sock-"))
    try:
        link.chmod(0o755)
        (link / "bob").symlink_to(bobs_socket)
        send = ["tmux", "-S", str(link / "bob"), "send-keys", "-t", "main", "touch /workspace/pwned", "Enter"]
        assert alice.run(shlex.join(send)).returncode != 0
        assert "cloudide-tmux" not in alice.run("ls -A /tmp").stdout, "her /tmp is her own"
        on_host = on_host_as(alice.info.user_uid, *send)
        assert on_host.returncode != 0 and "ermission denied" in on_host.stderr, on_host.stderr
    finally:
        shutil.rmtree(link)
    assert not (bob.info.workspace / "pwned").exists()
    assert bob.run(f"tmux -S {SOCKET} has-session -t main").returncode == 0, "bob's shell is fine"


@pytest.mark.escape_attempt
def test_alice_sees_none_of_the_local_stacks_state(alice_and_bob: tuple[Task, Task]) -> None:
    alice, bob = alice_and_bob
    state = bob.info.directory.parent
    listing = alice.run(f"ls -A /opt/cloudide; ls {state} /opt/cloudide/.local-state", as_root=True)
    assert "terminal_image" in listing.stdout.split(), listing.stderr
    assert set(listing.stdout.split()) <= {".venv", "task_init.py", "terminal_image"}, (
        "only the image's files"
    )
    assert listing.stderr.count("No such file or directory") == 2
    named = alice.run(f"find / -path /proc -prune -o -name {bob.arn.rsplit('/', 1)[-1]} -print", as_root=True)
    assert named.stdout == ""


@pytest.mark.escape_attempt
def test_alice_cannot_signal_or_trace_bobs_processes(alice_and_bob: tuple[Task, Task]) -> None:
    alice, bob = alice_and_bob
    bobs = members(pid_namespace(bob.info.pid))
    targets = " ".join(str(pid) for pid in bobs)
    for as_root in (False, True):
        inside = alice.run(
            f"for p in {targets}; do kill -0 $p 2>/dev/null && echo reached $p; done", as_root=as_root
        )
        assert "reached" not in inside.stdout
    user_pids = [pid for pid in bobs if Path(f"/proc/{pid}").stat().st_uid == bob.info.user_uid]
    assert user_pids, "bob's entrypoint runs as his own host uid"
    for pid in user_pids:
        assert on_host_as(alice.info.user_uid, "kill", "-0", str(pid)).returncode != 0
        assert on_host_as(alice.info.user_uid, "cat", f"/proc/{pid}/environ").returncode != 0  # ptrace check
    assert bob.info.status == "RUNNING"


def test_without_bubblewrap_local_refuses_to_start_unless_told_unsandboxed(tmp_path: Path) -> None:
    no_bwrap = {"PATH": str(Path(sys.executable).parent)}  # python and cloudide, no bwrap
    refused = subprocess.run(
        [str(CLOUDIDE), "local", "--state-dir", str(tmp_path)],
        env=no_bwrap, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert refused.returncode == 2
    assert "--unsandboxed" in refused.stderr and "apt-get install bubblewrap" in refused.stderr
    # With the flag the check passes (an invalid option is what stops it here, before anything starts).
    allowed = subprocess.run(
        [str(CLOUDIDE), "local", "--unsandboxed", "--time-scale", "5", "--state-dir", str(tmp_path)],
        env=no_bwrap, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert allowed.returncode == 2 and "--time-scale" in allowed.stderr, allowed.stderr


def test_ctrl_c_removes_every_tasks_directory_and_persist_keeps_its_own(tmp_path: Path) -> None:
    require_tool("bwrap", "the local stack's task sandbox")
    with local_stack(tmp_path, "--persist") as stack:
        ended = first_terminal(stack, project="cleaned-up")
        assert [path.name for path in (tmp_path / "tasks").iterdir()] == [ended["taskArn"].rsplit("/", 1)[-1]]
    assert not (tmp_path / "tasks").exists(), "every user's workspace copy, logs and sockets are gone"
    saved = (tmp_path / "persist" / "sessions.jsonl").read_text().splitlines()
    assert len(saved) == 1 and ended["sessionId"] in saved[0], "--persist keeps its own"
