"""`cloudide local` as a user runs it: a process that serves a browser terminal and stops on SIGTERM."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.support import require_tool

CLOUDIDE = Path(sys.executable).with_name("cloudide")
STARTUP_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0


@dataclass
class LocalRun:
    process: subprocess.Popen[bytes]
    port: int
    workspace: Path
    log: Path
    env: dict[str, str]

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def tmux(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["tmux", "-L", "cloudide-local", *args], env=self.env, capture_output=True, text=True, timeout=10
        )

    @contextlib.contextmanager
    def terminal(self, token: str, session_id: str = "local") -> Iterator[ClientConnection]:
        """A WebSocket opened as the page opens it: the auth message goes first."""
        url = f"ws://127.0.0.1:{self.port}/sessions/{session_id}/terminal"
        with connect(url, open_timeout=10, close_timeout=5) as websocket:
            websocket.send(json.dumps({"type": "auth", "token": token, "rows": 24, "cols": 80}))
            yield websocket


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for_page(run: LocalRun) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if run.process.poll() is not None:
            pytest.fail(f"cloudide local exited with {run.process.returncode}:\n{run.output}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{run.port}/", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    pytest.fail(f"the page did not answer within {STARTUP_TIMEOUT_S}s:\n{run.output}")


@pytest.fixture
def local_run(tmp_path: Path) -> Iterator[LocalRun]:
    require_tool("tmux", "the default shell of `cloudide local`")
    # A private tmux server: the test must neither join nor leave behind the user's `cloudide-local` one.
    # A short directory, because a tmux socket path must fit in sockaddr_un.
    tmux_dir = tempfile.mkdtemp(prefix="cl-tmux-")
    env = {**os.environ, "TMUX_TMPDIR": tmux_dir, "SHELL": "/bin/bash"}
    env.pop("TMUX", None)
    port = _free_port()
    workspace = tmp_path / "workspace"
    log = tmp_path / "cloudide-local.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(CLOUDIDE), "local", "--port", str(port), "--workspace", str(workspace)],
            cwd=tmp_path,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    run = LocalRun(process, port, workspace, log, env)
    try:
        _wait_for_page(run)
        yield run
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)
        run.tmux("kill-server")
        shutil.rmtree(tmux_dir, ignore_errors=True)


def _read_until(websocket: ClientConnection, text: bytes, timeout_s: float = 15.0) -> bytes:
    output = b""
    deadline = time.monotonic() + timeout_s
    while text not in output:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no {text!r} within {timeout_s}s; output: {output[-500:]!r}")
        try:
            message = websocket.recv(timeout=remaining)
        except TimeoutError:
            continue
        if isinstance(message, bytes):
            output += message
    return output


def _close_code(websocket: ClientConnection) -> int | None:
    with pytest.raises(ConnectionClosed):
        while True:
            websocket.recv(timeout=10)
    return websocket.close_code


def test_local_serves_a_terminal_in_the_workspace_and_stops_on_sigterm(local_run: LocalRun) -> None:
    page = f"http://127.0.0.1:{local_run.port}/#session=local&token=local:me"
    assert page in local_run.output
    assert "full local stack" in local_run.output
    assert local_run.workspace.is_dir()

    with local_run.terminal("local:me") as websocket:
        assert json.loads(websocket.recv(timeout=10)) == {
            "type": "welcome",
            "sessionId": "local",
            "readOnly": False,
        }
        websocket.send(b"pwd > where; echo hel''lo\r")  # only the shell's output reads "hello"
        _read_until(websocket, b"hello")
    assert (local_run.workspace / "where").read_text() == f"{local_run.workspace}\n"

    local_run.process.send_signal(signal.SIGTERM)
    assert local_run.process.wait(timeout=STOP_TIMEOUT_S) == 0, local_run.output
    assert "stopped" in local_run.output


def test_a_new_connection_reattaches_the_same_shell(local_run: LocalRun) -> None:
    with local_run.terminal("local:me") as websocket:
        websocket.send(b"MARK=kept-$((6*7))\r")
        websocket.send(b"echo set-''done\r")
        _read_until(websocket, b"set-done")
    # Once the last viewer is gone the gateway drops its data channel and the peer hangs up the PTY:
    # the tmux client detaches, the session stays.
    deadline = time.monotonic() + 20
    while local_run.tmux("list-clients").stdout.strip():
        assert time.monotonic() < deadline, "the data channel was never closed"
        time.sleep(0.2)
    assert local_run.tmux("has-session", "-t", "main").returncode == 0

    with local_run.terminal("local:you") as websocket:
        websocket.send(b"echo $MARK\r")
        _read_until(websocket, b"kept-42")


@pytest.mark.parametrize(
    ("token", "session_id", "code"),
    [("not-local", "local", 4401), ("local:", "local", 4401), ("local:me", "other", 4404)],
    ids=["foreign-token", "empty-user", "unknown-session"],
)
def test_local_refuses_bad_tokens_and_unknown_sessions(
    local_run: LocalRun, token: str, session_id: str, code: int
) -> None:
    with local_run.terminal(token, session_id) as websocket:
        assert _close_code(websocket) == code
