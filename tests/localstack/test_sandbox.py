"""The task sandbox on its own (no AWS): pid 1 forwards signals and reports exit codes as tini does, the task
size becomes cgroup limits, the RSS watchdog stands in where cgroups are not writable, and the plain
fallback says loudly that it is not a sandbox."""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudide.localstack.sandbox import (
    REPO,
    SHELL_PATH,
    Isolation,
    Limits,
    Sandbox,
    SandboxError,
    SandboxHost,
)
from tests.support import eventually, require_tool

from .conftest import members, pid_namespace

pytestmark = pytest.mark.sandbox

# An entrypoint that reports SIGTERM the way the sync agent does: a clean, chosen exit code.
TRAPPING = ["/bin/sh", "-c", "trap 'echo got-term; exit 7' TERM; echo up; while :; do sleep 0.05; done"]


@pytest.fixture(scope="module")
def host() -> Iterator[SandboxHost]:
    require_tool("bwrap", "the local task sandbox")
    require_tool("setpriv", "the entrypoint runs as uid 1000")
    detected = SandboxHost.detect(f"cloudide-local-test-{os.getpid()}", isolation="bubblewrap")
    yield detected
    detected.close()


@pytest.fixture
def sandboxes(tmp_path: Path) -> Iterator[list[Sandbox]]:
    made: list[Sandbox] = []
    yield made
    for box in made:
        box.close()


def make(
    sandboxes: list[Sandbox],
    host: SandboxHost,
    tmp_path: Path,
    entrypoint: list[str],
    *,
    read_only_root: bool = True,
    **limits: int,
) -> Sandbox:
    box = Sandbox(
        host,
        f"t{len(sandboxes)}",
        tmp_path / f"t{len(sandboxes)}",
        env={"SESSION_ID": "s-1"},
        limits=Limits(**{"cpu_units": 256, "memory_mib": 512, **limits}),
        entrypoint=entrypoint,
        read_only_root=read_only_root,
    )
    sandboxes.append(box)
    box.prepare()
    box.start()
    return box


def test_sigterm_reaches_the_entrypoint_through_pid_1_and_its_exit_code_is_the_containers(
    host: SandboxHost, sandboxes: list[Sandbox], tmp_path: Path
) -> None:
    box = make(sandboxes, host, tmp_path, TRAPPING)
    eventually(lambda: "up" in box.log_path.read_text())
    namespace = pid_namespace(box.pid)
    box.signal(signal.SIGTERM)
    assert box.wait(10) == 7
    assert "got-term" in box.log_path.read_text()
    box.close()
    assert not members(namespace)


def test_the_entrypoint_runs_as_uid_1000_without_capabilities_and_no_network(
    host: SandboxHost, sandboxes: list[Sandbox], tmp_path: Path
) -> None:
    probe = "id -u; grep CapEff /proc/self/status; cat /proc/net/dev | tail -n +3 | cut -d: -f1; hostname"
    box = make(sandboxes, host, tmp_path, ["/bin/sh", "-c", probe])
    assert box.wait(10) == 0
    uid, caps, interfaces, hostname = box.log_path.read_text().split("\n", 3)
    assert uid == "1000"
    assert caps.split()[-1] == "0000000000000000"
    assert interfaces.split() == ["lo"]
    assert hostname.strip() == box.name


def test_kill_9_of_pid_1_ends_the_whole_sandbox_with_137(
    host: SandboxHost, sandboxes: list[Sandbox], tmp_path: Path
) -> None:
    box = make(sandboxes, host, tmp_path, ["/bin/sh", "-c", "sleep 60 & sleep 60 & wait"])
    namespace = pid_namespace(box.pid)
    eventually(lambda: len(members(namespace)) >= 4)  # task_init, sh and two sleeps
    assert box.pid
    os.kill(box.pid, signal.SIGKILL)
    assert box.wait(10) == 137
    eventually(lambda: not members(namespace), timeout=5)


def test_the_task_size_becomes_its_cgroup_limits(
    host: SandboxHost, sandboxes: list[Sandbox], tmp_path: Path
) -> None:
    if host.cgroups is None:
        pytest.skip("no writable cgroup on this machine: the RSS watchdog test covers the fallback")
    box = make(sandboxes, host, tmp_path, ["sleep", "30"], cpu_units=512, memory_mib=1024)
    assert box.cgroup is not None
    memory = box.cgroup.dirs["memory"]
    limit_file = "memory.max" if box.cgroup.version == 2 else "memory.limit_in_bytes"
    assert int((memory / limit_file).read_text()) == 1024 * 1024 * 1024
    assert box.pid in box.cgroup.pids()
    if "pids" in box.cgroup.dirs:
        assert (box.cgroup.dirs["pids"] / "pids.max").read_text().strip() == "1024"
    assert "0.5 vCPU, 1024 MiB" in box.limits_in_effect and "cgroup" in box.limits_in_effect
    box.close()
    assert not memory.exists(), "the task's cgroup is removed with the task"


def test_without_cgroups_an_rss_watchdog_kills_a_task_past_its_memory(
    sandboxes: list[Sandbox], tmp_path: Path
) -> None:
    bwrap = require_tool("bwrap", "the local task sandbox")
    host = SandboxHost(Isolation.BUBBLEWRAP, bwrap, cgroups=None)
    hog = "import time; x = bytearray(200 << 20); x[::4096] = b'1' * len(x[::4096]); time.sleep(30)"
    box = make(sandboxes, host, tmp_path, ["python3", "-c", hog], memory_mib=64)
    assert "RSS watchdog" in box.limits_in_effect
    assert box.wait(20) == 137
    assert box.oom_killed


def test_exec_is_refused_once_the_task_has_exited(
    host: SandboxHost, sandboxes: list[Sandbox], tmp_path: Path
) -> None:
    box = make(sandboxes, host, tmp_path, ["true"])
    assert box.wait(10) == 0
    with pytest.raises(SandboxError, match="no running process"):
        box.exec_argv(["id"])


def test_plain_fallback_is_loud_and_runs_in_the_workspace(sandboxes: list[Sandbox], tmp_path: Path) -> None:
    host = SandboxHost(Isolation.PLAIN, None, cgroups=None)
    assert host.warning and "UNSANDBOXED" in host.warning
    assert host.isolation.startswith("plain process (UNSANDBOXED")
    box = make(sandboxes, host, tmp_path, ["/bin/sh", "-c", "pwd; echo $WORKSPACE_DIR; sleep 30"])
    eventually(lambda: len(box.log_path.read_text().splitlines()) == 2)
    assert box.log_path.read_text().splitlines() == [str(box.workspace)] * 2
    argv, env = box.exec_argv([SHELL_PATH])
    assert argv == [str(REPO / "terminal_image" / "cloudide-shell")], "the image's wrapper, from the repo"
    assert env["CLOUDIDE_TMUX_SOCKET"] == f"{box.tmp}/cloudide-tmux/default"


@pytest.mark.stand_in_rule("fargate-ephemeral-storage-bound")
def test_writing_past_the_tasks_storage_bound_is_enospc_and_the_host_is_untouched(
    host: SandboxHost, sandboxes: list[Sandbox], tmp_path: Path
) -> None:
    # A 64 MiB task gets 128 MiB for all its volumes, as a Fargate task's volumes share its ephemeral storage.
    write = (
        "import errno, json, os\n"
        "def fill(path):\n"
        "    with open(path, 'wb') as out:\n"
        "        try:\n"
        "            while True: out.write(bytes(1 << 20)); out.flush(); os.fsync(out.fileno())\n"
        "        except OSError as error: return error.errno == errno.ENOSPC, out.tell()\n"
        "print(json.dumps([fill('/workspace/big'), fill('/tmp/big')]))\n"
    )
    before = shutil.disk_usage(tmp_path).used
    box = make(sandboxes, host, tmp_path, ["python3", "-c", write], memory_mib=64)
    assert box.wait(60) == 0, box.log_path.read_text()
    workspace, tmp = json.loads(box.log_path.read_text())
    assert workspace[0] and tmp[0], "ENOSPC, not another error"
    assert workspace[1] + tmp[1] <= 128 << 20 and workspace[1] > 100 << 20
    assert shutil.disk_usage(tmp_path).used - before < 200 << 20
    box.close()
    assert not (box.directory / "disk.img").exists(), "the task's disk goes with it"


@pytest.mark.stand_in_rule("fargate-read-only-root")
def test_a_read_only_root_leaves_only_the_task_volumes_writable(
    host: SandboxHost, sandboxes: list[Sandbox], tmp_path: Path
) -> None:
    probe = (
        "for p in /var/probe /var/tmp/probe /probe /workspace/probe; do touch $p 2>/dev/null && echo $p; done"
    )
    read_only = make(sandboxes, host, tmp_path, ["/bin/sh", "-c", probe])
    writable = make(sandboxes, host, tmp_path, ["/bin/sh", "-c", probe], read_only_root=False)
    assert read_only.wait(10) == 0 and writable.wait(10) == 0
    assert read_only.log_path.read_text().split() == ["/workspace/probe"]
    assert writable.log_path.read_text().split() == ["/var/tmp/probe", "/workspace/probe"]
