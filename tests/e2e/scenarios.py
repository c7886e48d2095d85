"""The scenarios that must pass against any deployment: the local stack and a real one alike."""

from __future__ import annotations

import os
from typing import Any

import pexpect

from tests.e2e.local_stack import CLOUDIDE, Deployment

PROMPT = "cloudide-e2e$ "


class Shell:
    """`cloudide attach` in a pseudo-terminal, as the user types into it."""

    def __init__(self, deployment: Deployment, session_id: str) -> None:
        self.child = pexpect.spawn(
            str(CLOUDIDE),
            ["attach", session_id, "--api", deployment.api, "--token", deployment.token("me")],
            env={**os.environ, "TERM": "xterm"},
            encoding="utf-8",
            timeout=30,
            dimensions=(40, 200),
        )
        self.run(f"PS1='{PROMPT}'")

    def run(self, command: str) -> str:
        """Type `command` and return what it printed before the next prompt."""
        self.child.sendline(command)
        self.child.expect_exact(PROMPT)
        self.child.expect_exact(PROMPT)
        return str(self.child.before)

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
        assert shell.run("id -u").strip().splitlines()[-1] == "1000"
        assert "hello" in shell.run("echo hello > note.txt && cat note.txt")
        assert shell.run("pwd").strip().splitlines()[-1] == "/workspace"
    finally:
        shell.close()

    deployment.call("DELETE", f"/sessions/{session['sessionId']}")
    ended = deployment.wait_status(session["sessionId"], "STOPPED", timeout_s=300)

    assert ended["statusReason"]
    assert deployment.workspace_object(ended, "note.txt") == b"hello\n"
    return ended
