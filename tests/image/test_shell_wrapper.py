"""cloudide-shell in a real sandbox: the user's shell is unprivileged, clean, and persistent."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from tests.support import eventually

from .sandbox import Sandbox

pytestmark = [
    pytest.mark.sandbox,
    # pexpect forks a pty while the moto server thread runs; the child only execs bwrap.
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]

PROBE = r"""
echo "uid=$(id -u) gid=$(id -g) groups=$(id -G)"
grep -E '^(NoNewPrivs|CapEff|CapPrm|CapBnd|CapAmb|CapInh):' /proc/self/status | tr -d '\t' | tr ':' '='
echo "cwd=$PWD"
echo "sudo=$(command -v sudo || echo absent)"
for path in /etc/probe /usr/probe /probe /opt/cloudide/probe; do
  touch "$path" 2>/dev/null && echo "wrote=$path"
done
touch /workspace/probe-ok /tmp/probe-ok /home/dev/probe-ok && echo "workspace_tmp_and_home=writable"
echo "aws_vars=$(env | grep -c '^AWS_')"
"""


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    box = Sandbox(tmp_path)
    yield box
    # End the tmux server this test started (by its pid, read from the server itself).
    result = subprocess.run(
        ["tmux", "-S", str(box.socket), "display-message", "-p", "#{pid}"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    if result.returncode == 0 and result.stdout.strip().isdigit():
        os.kill(int(result.stdout.strip()), signal.SIGTERM)


def attach(box: Sandbox, *args: str) -> pexpect.spawn:
    argv = box.wrapper(*args)
    child = pexpect.spawn(argv[0], argv[1:], env=box.wrapper_env(), dimensions=(40, 160), timeout=15)
    return child


def wait_for_shell(box: Sandbox) -> None:
    def ready() -> bool:
        result = subprocess.run(
            ["tmux", "-S", str(box.socket), "has-session", "-t", "=main"], capture_output=True, timeout=10
        )
        return result.returncode == 0

    eventually(ready)


def run_in_shell(child: pexpect.spawn, command: str, done: Path) -> str:
    child.sendline(f"{command}; touch {('/workspace/' + done.name)}")
    eventually(done.exists)
    return done.name


def test_shell_is_unprivileged_clean_and_confined(sandbox: Sandbox) -> None:
    (sandbox.workspace / "probe.sh").write_text(PROBE)
    child = attach(sandbox)
    wait_for_shell(sandbox)
    run_in_shell(child, "bash /workspace/probe.sh > /workspace/probe.out 2>&1", sandbox.workspace / "probed")
    child.close(force=True)

    lines = (sandbox.workspace / "probe.out").read_text().splitlines()
    facts = dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("wrote"))
    assert facts["uid"] == "1000 gid=1000 groups=1000"
    assert facts["NoNewPrivs"] == "1"
    for caps in ("CapEff", "CapPrm", "CapBnd", "CapAmb", "CapInh"):
        assert facts[caps] == "0000000000000000", caps
    assert facts["cwd"] == "/workspace"
    assert facts["sudo"] == "absent"
    assert not [line for line in lines if line.startswith("wrote=")]
    assert facts["workspace_tmp_and_home"] == "writable"
    assert facts["aws_vars"] == "0"
    assert (sandbox.workspace / "probe-ok").stat().st_uid == 1000


def test_reconnect_resumes_the_same_shell_with_its_scrollback(sandbox: Sandbox) -> None:
    first = attach(sandbox)
    wait_for_shell(sandbox)
    run_in_shell(first, "echo SCROLL''MARK-$((6*7)); echo $$ > /workspace/pid1", sandbox.workspace / "one")
    first.close(force=True)  # the connection drops

    second = attach(sandbox)
    run_in_shell(
        second,
        "tmux capture-pane -p -S - > /workspace/capture.txt; echo $$ > /workspace/pid2",
        sandbox.workspace / "two",
    )
    second.close(force=True)
    assert "SCROLLMARK-42" in (sandbox.workspace / "capture.txt").read_text()
    assert (sandbox.workspace / "pid1").read_text() == (sandbox.workspace / "pid2").read_text()


def test_read_only_attach_sees_but_cannot_type(sandbox: Sandbox) -> None:
    owner = attach(sandbox)
    wait_for_shell(sandbox)
    viewer = attach(sandbox, "--read-only")
    viewer.expect_exact("$")  # the viewer renders the owner's prompt
    viewer.sendline("touch /workspace/typed-by-viewer")

    run_in_shell(owner, "echo VIEW''ER-$((1+1))", sandbox.workspace / "owner-done")
    viewer.expect_exact("VIEWER-2")  # the viewer sees the owner's output...
    assert not (sandbox.workspace / "typed-by-viewer").exists()  # ...but its keys never reached the shell
    viewer.close(force=True)
    owner.close(force=True)


def test_wrapper_rejects_unknown_arguments(sandbox: Sandbox) -> None:
    result = subprocess.run(
        sandbox.wrapper("--bogus"), env=sandbox.wrapper_env(), capture_output=True, text=True, timeout=20
    )
    assert result.returncode == 64
    assert "unknown argument '--bogus'" in result.stderr
