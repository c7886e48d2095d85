"""The README's set-up, exactly as written, on a fresh copy of the project.

The first command (`make local`) is started in the background on a fresh checkout until the stack says
it is healthy, then stopped with Ctrl-C; the second (`make test`) is what CI's `.ci/run` calls, which
is how it runs on a fresh machine (running it from inside the test suite would recurse).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from pathlib import Path

from tests.e2e.local_stack import local_stack
from tests.support import free_port, require_tool

ROOT = Path(__file__).resolve().parents[2]


def setup_commands() -> list[str]:
    """The commands of the README's set-up block, comments dropped."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Set-up", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "the README's set-up section has no bash block"
    return [line.split("#", 1)[0].strip() for line in block.group(1).splitlines() if line.strip()]


def fresh_checkout(target: Path) -> Path:
    """The project's tracked files as they are now (committed or not), nothing generated."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True, timeout=30,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def test_the_readme_names_two_commands_and_ci_runs_the_second() -> None:
    assert setup_commands() == ["make local", "make test"]
    ci_commands = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()]
    assert ci_commands[-1] == "make test"


def test_make_local_on_a_fresh_checkout_serves_the_stack_until_ctrl_c(tmp_path: Path) -> None:
    require_tool("make", "the README's commands are make targets")
    require_tool("bwrap", "the local stack's task sandbox")
    checkout = fresh_checkout(tmp_path / "checkout")
    env_ports = {"CLOUDIDE_API_PORT": str(free_port()), "CLOUDIDE_GATEWAY_PORT": str(free_port())}
    command = setup_commands()[0].split()

    with local_stack(
        checkout / ".local-state", command=command, cwd=checkout, env=env_ports, startup_timeout_s=900
    ) as stack:
        started = stack.start_session(projectId="readme")
        ready = stack.wait_status(started["sessionId"], "READY", timeout_s=120)
        assert ready["taskArn"]

    # make dies of the Ctrl-C itself (as it does in a terminal); the stack it ran must have shut down cleanly.
    assert stack.process.returncode in (0, -signal.SIGINT), stack.output
    assert "cloudide local: ready" in stack.output
    assert (
        stack.output.rstrip().endswith("cloudide local: stopped")
        or "cloudide local: stopped\n" in stack.output
    )
    assert stack.sandbox_processes() == []
