"""The local task runner against the real template on the offline AWS: RunTask starts the terminal image's
entrypoint in a sandbox, each change is the task-state event ECS emits, StopTask and crashes end as
ECS reports them, and ECS Exec reaches the same sandbox as root, dropped to the user by the real wrapper."""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from pathlib import Path

import pytest

from cloudide.localstack.runner import OOM_REASON, TaskNotRunning
from cloudide.localstack.sandbox import SHELL_PATH
from tests.support import require_tool

from .conftest import Cluster, members, pid_namespace

pytestmark = [
    pytest.mark.sandbox,
    # pexpect forks a pty while the moto server thread runs; the child only execs the exec argv.
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]


@pytest.fixture(autouse=True)
def _tools() -> None:
    require_tool("bwrap", "the local task sandbox")
    require_tool("nsenter", "ECS Exec into the sandbox")
    require_tool("setpriv", "the entrypoint and the shell run as uid 1000")


def new_id() -> str:
    return f"s-{uuid.uuid4().hex[:10]}"


def run_in_task(
    cluster: Cluster, task_arn: str, *command: str, timeout: float = 20
) -> subprocess.CompletedProcess[str]:
    argv, env = cluster.runner.exec_command(task_arn, list(command))
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def test_a_task_runs_the_entrypoint_pulls_its_workspace_and_reports_each_state(cluster: Cluster) -> None:
    session = new_id()
    prefix = f"workspaces/u/{session}/"
    cluster.s3.put_object(Bucket=cluster.bucket, Key=prefix + "src/app.py", Body=b"print('hi')\n")
    arn = cluster.run_task(session, cpu=512, memory=1024)

    running = cluster.wait_status(arn, "RUNNING")
    cluster.wait_exec_ready(arn)
    assert cluster.statuses(arn)[:2] == ["PENDING", "RUNNING"]
    assert running["group"] == "cloudide-terminals" and running["startedBy"] == session
    assert [e["version"] for e in cluster.task_events(arn)] == sorted(
        {e["version"] for e in cluster.task_events(arn)}
    )

    info = cluster.runner.tasks()[arn]
    pulled = cluster.workspace(arn) / "src/app.py"
    assert pulled.read_bytes() == b"print('hi')\n"
    assert pulled.stat().st_uid == info.user_uid != 1000, "the image's uid 1000 is the task's own host uid"

    assert info.status == "RUNNING" and info.exec_ready
    assert "0.5 vCPU, 1024 MiB" in info.limits
    ps = run_in_task(cluster, arn, "ps", "-eo", "pid,user,args")
    assert "python3 -m workspace_sync run" in ps.stdout, ps.stdout
    init, entrypoint = ps.stdout.splitlines()[1:3]
    assert init.split()[0] == "1" and "task_init.py" in init
    assert entrypoint.split()[1] in {"1000", "dev", "cloudsdk"}  # the image's uid 1000, whatever its name


def test_exec_runs_the_image_wrapper_as_uid_1000_inside_the_sandbox(cluster: Cluster) -> None:
    arn = cluster.run_task(new_id())
    cluster.wait_exec_ready(arn)

    whoami = run_in_task(cluster, arn, "id", "-u")
    assert whoami.stdout.strip() == "0", "ECS Exec runs its command as root"
    net = run_in_task(cluster, arn, "cat", "/proc/net/dev")
    assert [line.split(":")[0].strip() for line in net.stdout.splitlines()[2:]] == ["lo"]
    image = run_in_task(cluster, arn, "touch", "/usr/probe", "/etc/probe", "/opt/cloudide/probe")
    assert image.returncode != 0 and image.stderr.count("cannot touch") == 3, image.stderr
    # The template's default is a writable root (ReadOnlyRootFilesystem=false): its /var is the task's.
    root = run_in_task(cluster, arn, "touch", "/var/probe", "/var/tmp/probe")
    assert root.returncode == 0, root.stderr

    pexpect = pytest.importorskip("pexpect")
    require_tool("tmux", "the persistent shell")
    argv, env = cluster.runner.exec_command(arn, [SHELL_PATH])
    child = pexpect.spawn(argv[0], argv[1:], env=env, dimensions=(30, 120), timeout=15)
    try:
        child.sendline("echo uid=$(id -u) > /workspace/who && cat /workspace/who")
        child.expect("uid=1000")
        assert (cluster.workspace(arn) / "who").read_text().strip() == "uid=1000"
    finally:
        child.close(force=True)


def test_stop_task_sigterms_flushes_the_workspace_and_ends_user_initiated(cluster: Cluster) -> None:
    session = new_id()
    arn = cluster.run_task(session)
    cluster.wait_exec_ready(arn)
    note = cluster.workspace(arn) / "note.txt"
    note.write_text("hello\n")
    uid = cluster.runner.tasks()[arn].user_uid
    os.chown(note, uid, uid)

    namespace = pid_namespace(cluster.runner.tasks()[arn].pid)
    cluster.ecs.stop_task(cluster=cluster.name, task=arn, reason="Session stopped by its owner")
    stopped = cluster.wait_status(arn, "STOPPED")
    assert stopped["stopCode"] == "UserInitiated"
    assert stopped["stoppedReason"] == "Session stopped by its owner"
    assert stopped["containers"][0]["exitCode"] == 0, "the agent flushed and exited cleanly on SIGTERM"
    body = cluster.s3.get_object(Bucket=cluster.bucket, Key=f"workspaces/u/{session}/note.txt")["Body"].read()
    assert body == b"hello\n"
    assert cluster.describe(arn)["lastStatus"] == "STOPPED"
    assert not members(namespace)
    with pytest.raises(TaskNotRunning):
        cluster.runner.exec_command(arn, ["true"])


def test_kill_9_of_the_sandbox_ends_essential_container_exited_137(cluster: Cluster) -> None:
    arn = cluster.run_task(new_id())
    cluster.wait_status(arn, "RUNNING")
    pid = cluster.runner.tasks()[arn].pid
    assert pid
    os.kill(pid, signal.SIGKILL)
    stopped = cluster.wait_status(arn, "STOPPED")
    assert stopped["stopCode"] == "EssentialContainerExited"
    assert stopped["containers"][0]["exitCode"] == 137
    assert "reason" not in stopped["containers"][0]


def test_allocating_past_the_memory_limit_is_an_oom_kill(cluster: Cluster) -> None:
    arn = cluster.run_task(new_id(), cpu=256, memory=512)
    cluster.wait_exec_ready(arn)
    hog = run_in_task(
        cluster, arn, "python3", "-c", "x = bytearray(900 * 1024 * 1024); x[::4096] = b'1' * len(x[::4096])"
    )
    assert hog.returncode != 0
    stopped = cluster.wait_status(arn, "STOPPED")
    assert stopped["stopCode"] == "EssentialContainerExited"
    assert stopped["containers"][0]["exitCode"] == 137
    assert stopped["containers"][0]["reason"] == OOM_REASON
    assert cluster.describe(arn)["containers"][0]["reason"] == OOM_REASON, "DescribeTasks says so too"


def test_an_entrypoint_that_fails_at_once_is_task_failed_to_start(cluster: Cluster) -> None:
    arn = cluster.run_task("bad id!")  # the agent refuses the configuration and exits 2
    stopped = cluster.wait_status(arn, "STOPPED")
    assert stopped["stopCode"] == "TaskFailedToStart"
    assert "exited with code 2" in stopped["stoppedReason"]
    assert "RUNNING" not in cluster.statuses(arn)
    log = cluster.runner.tasks()[arn].log_path.read_text()
    assert "SESSION_ID='bad id!' is invalid" in log


def test_close_stops_every_task_flushes_and_leaves_no_process(cluster: Cluster) -> None:
    sessions = [new_id(), new_id()]
    arns = [cluster.run_task(s) for s in sessions]
    for arn in arns:
        cluster.wait_exec_ready(arn)
    for session, arn in zip(sessions, arns, strict=True):
        saved = cluster.workspace(arn) / "saved.txt"
        saved.write_text(session)
        uid = cluster.runner.tasks()[arn].user_uid
        os.chown(saved, uid, uid)
    namespaces = {pid_namespace(cluster.runner.tasks()[arn].pid) for arn in arns}
    assert len(namespaces) == 2 and all(members(ns) for ns in namespaces)

    cluster.runner.close(timeout=30)

    for session, arn in zip(sessions, arns, strict=True):
        assert cluster.task_events(arn)[-1]["lastStatus"] == "STOPPED"
        body = cluster.s3.get_object(Bucket=cluster.bucket, Key=f"workspaces/u/{session}/saved.txt")["Body"]
        assert body.read() == session.encode()
    assert not [pid for ns in namespaces for pid in members(ns)], "a sandbox process outlived close()"
    # this runner's cgroups only: other runners on the host (other test runs) have their own
    leftover = list(Path("/sys/fs/cgroup").glob(f"*/**/cloudide-local-{cluster.name.split('/')[-1][-24:]}"))
    assert not leftover, "a task cgroup outlived close()"
    assert not cluster.runner.state_dir.exists(), "every task's volumes, logs and sockets go with the runner"
    assert str(cluster.runner.state_dir) not in Path("/proc/self/mountinfo").read_text(), (
        "a task disk outlived it"
    )
