"""The scenarios that must pass against any deployment: the local stack and a real one alike."""

from __future__ import annotations

import os
from typing import Any

import pexpect

from tests.e2e.local_stack import CLOUDIDE, Deployment


class Shell:
    """`cloudide attach` in a pseudo-terminal, as the user types into it.

    The shell runs inside tmux, which redraws the screen: a command's echo and its output arrive mixed
    with cursor movements. So each check pipes the output through a marker the typed line does not
    contain (`sed 's/^/uid=/'` prints `uid=1000`, which the echo of the command never shows)."""

    def __init__(self, deployment: Deployment, session_id: str) -> None:
        self.child = pexpect.spawn(
            str(CLOUDIDE),
            ["attach", session_id, "--api", deployment.api, "--token", deployment.token("me")],
            env={**os.environ, "TERM": "xterm"},
            encoding="utf-8",
            timeout=30,
            dimensions=(40, 200),
        )
        # $HOME holds the image's /etc/skel .bashrc, whose prompt is coloured under tmux-256color
        self.child.expect(r"/workspace(\x1b[^$ ]*)?\$ ")

    def check(self, command: str, label: str, expected: str) -> None:
        """Run `command`; its first line of output, labelled, must be `expected`."""
        self.child.sendline(f"{command} 2>&1 | head -1 | sed 's/^/{label}=/'")
        self.child.expect_exact(f"{label}={expected}")

    def type(self, command: str) -> None:
        self.child.sendline(command)

    def close(self) -> None:
        self.child.terminate(force=True)


def ready_session(deployment: Deployment, **body: Any) -> dict[str, Any]:
    started = deployment.start_session(**body)
    assert started["status"] in ("REQUESTED", "PROVISIONING")
    return deployment.wait_status(started["sessionId"], "READY", timeout_s=300)


def first_terminal(deployment: Deployment, *, project: str) -> dict[str, Any]:
    """Start, connect, `id -u` is 1000, save a file, stop: the file is in S3. Returns the ended record."""
    session = ready_session(deployment, projectId=project)
    shell = Shell(deployment, session["sessionId"])
    try:
        shell.check("id -u", "uid", "1000")
        shell.check("echo hello > note.txt && cat note.txt", "note", "hello")
        shell.check("pwd", "cwd", "/workspace")
    finally:
        shell.close()

    deployment.call("DELETE", f"/sessions/{session['sessionId']}")
    ended = deployment.wait_status(session["sessionId"], "STOPPED", timeout_s=300)

    assert ended["statusReason"]
    assert deployment.workspace_object(ended, "note.txt") == b"hello\n"
    return ended
