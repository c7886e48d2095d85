"""`cloudide attach` driven through a real pseudo-terminal, against the local peer and a stub REST API."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pexpect
import pytest

from cloudide.cli import build_parser
from cloudide.transport.peer import LocalPeer
from tests.transport.stub_api import Answer, Request, stub_api

pytestmark = pytest.mark.timeout(60)
REMOTE_SHELL = ["bash", "--norc", "--noprofile", "--noediting"]
API_TOKEN = "user-bearer-token"
SESSION_ID = "sess-123"
WAIT = 10


class PeerThread:
    """A LocalPeer on its own event loop, so the test can drive a blocking pexpect child."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.peer = LocalPeer()
        self.connects = 0
        self.replaced: list[str] = []
        self.issued: list[str] = []
        self.session_view: dict[str, str] = {"status": "READY"}
        self.api_calls: list[str] = []  # "METHOD path" of every request the REST API got
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> PeerThread:
        self._thread.start()
        self.call(self.peer.start())
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.call(self.peer.stop())
        self.call(self.loop.shutdown_default_executor())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(WAIT)
        self.loop.close()

    def call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(WAIT)

    def new_session(self) -> dict[str, str]:
        async def create() -> dict[str, str]:
            credentials = self.peer.new_session(REMOTE_SHELL, env={"PS1": "remote$ "})
            return credentials.to_json()

        self.connects += 1
        credentials = self.call(create())
        self.issued.append(credentials["sessionId"])
        return credentials

    def cut(self) -> int:
        future: Future[int] = Future()
        self.loop.call_soon_threadsafe(lambda: future.set_result(self.peer.cut()))
        return future.result(WAIT)


@pytest.fixture
def peer() -> Iterator[PeerThread]:
    with PeerThread() as running:
        yield running


@pytest.fixture
def api(peer: PeerThread) -> Iterator[str]:
    """The REST API's connect endpoint, as far as attach cares: bearer auth, fresh exec credentials."""

    def answer(request: Request) -> Answer:
        peer.api_calls.append(f"{request.method} {request.path}")
        if request.authorization != f"Bearer {API_TOKEN}":
            return 401, {"message": "Unauthorized"}
        if request.method == "GET" and request.path == f"/v1/sessions/{SESSION_ID}":
            return 200, {"sessionId": SESSION_ID, **peer.session_view}
        if request.path != f"/v1/sessions/{SESSION_ID}/connect":
            return 404, {"message": "no such session"}
        if (status := peer.session_view["status"]) != "READY":
            return 409, {"message": f"session is {status}, not READY: {peer.session_view['statusReason']}"}
        replaces = (request.body or {}).get("replaces")
        if replaces:
            peer.replaced.append(replaces)
            peer.peer.terminate(replaces)  # as the API calls ssm:TerminateSession
        return 200, peer.new_session()

    with stub_api(answer) as (url, _):
        yield f"{url}/v1"


@pytest.fixture
def outer_shell(tmp_path: Path) -> Iterator[pexpect.spawn]:
    """The user's own terminal: a shell on a pseudo-terminal, from which they run `cloudide attach`."""
    child = pexpect.spawn(
        "bash",
        ["--norc", "--noprofile", "--noediting"],
        env={"PS1": "outer$ ", "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path)},
        dimensions=(24, 80),
        encoding="utf-8",
        timeout=WAIT,
    )
    child.expect_exact("outer$ ")
    yield child
    child.close(force=True)


def _stty_settings(shell: pexpect.spawn) -> str:
    shell.sendline("echo STTY-$(stty -g)-END")
    shell.expect(r"STTY-([0-9a-f:]+)-END")
    settings = shell.match.group(1)
    shell.expect_exact("outer$ ")
    return settings


def _attach_command(*arguments: str) -> str:
    return " ".join([sys.executable, "-m", "cloudide.cli", "attach", *arguments])


def _attach(shell: pexpect.spawn, api: str) -> None:
    """Run `cloudide attach` for the session from the user's shell and wait for the remote prompt."""
    shell.sendline(_attach_command(SESSION_ID, "--api", api, "--token", API_TOKEN))
    shell.expect_exact("remote$ ")


def _remote(shell: pexpect.spawn, command: str, expected: str) -> None:
    """Run a command in the remote shell and wait for its (computed) output."""
    shell.send(command + "\r")
    shell.expect_exact(expected)


def test_attach_types_resizes_reconnects_exits_and_restores_the_terminal(
    outer_shell: pexpect.spawn, peer: PeerThread, api: str
) -> None:
    # Given the user's terminal settings
    before = _stty_settings(outer_shell)

    # When they attach to a session
    _attach(outer_shell, api)

    # Then keystrokes reach the remote shell, raw (Ctrl-C interrupts the remote command, not attach)
    _remote(outer_shell, "echo $((6 * 7))-answer", "42-answer")
    # (the marker is computed by the remote shell, so it proves the line was read and is running: a
    # Ctrl-C typed before that would be flushed with the unread line and interrupt nothing)
    _remote(outer_shell, "echo sleeping-$((2 + 3)); sleep 30", "sleeping-5")
    outer_shell.send("\x03")
    outer_shell.expect_exact("remote$ ")
    _remote(outer_shell, "echo still-$((1 + 1))", "still-2")

    # And a window-size change reaches the remote PTY
    outer_shell.setwinsize(40, 100)
    _remote(outer_shell, "echo size-$(stty size | tr ' ' x)", "size-40x100")

    # And a dropped channel reconnects through a new connect call, with the terminal's current size
    assert peer.cut() == 1
    _remote(outer_shell, "echo back-$(stty size | tr ' ' x)", "back-40x100")
    assert peer.connects == 2

    # And exiting the remote shell ends attach and gives the terminal back as it was
    outer_shell.send("exit\r")
    outer_shell.expect(r"Exiting session with sessionId: ecs-execute-command-\w+\.")
    outer_shell.expect_exact(f"Session {SESSION_ID} is READY (the shell exited; the session runs on")
    outer_shell.expect_exact("outer$ ")
    outer_shell.sendline("echo status-$?")
    outer_shell.expect_exact("status-0")
    outer_shell.expect_exact("outer$ ")
    assert _stty_settings(outer_shell) == before


def test_a_reconnect_storm_ends_each_superseded_exec_session_so_the_shell_keeps_coming_back(
    outer_shell: pexpect.spawn, peer: PeerThread, api: str
) -> None:
    # The exec agent runs two sessions per container, and a dropped one lingers until it times out:
    # each reconnect has to end the session it replaces, or the third gets no shell.
    _attach(outer_shell, api)

    for round_ in range(1, 5):
        assert peer.cut() == 1
        _remote(outer_shell, f"echo round-$(({round_} * 11))", f"round-{round_ * 11}")

    assert peer.connects == 5
    assert len(peer.replaced) == 4
    assert len(peer.call(_live(peer.peer))) == 1
    outer_shell.send("exit\r")
    outer_shell.expect_exact("outer$ ")


async def _live(peer: LocalPeer) -> list[str]:
    return peer.live_sessions()


def test_typing_output_and_a_reconnect_tell_the_api_nothing_but_connect(
    outer_shell: pexpect.spawn, peer: PeerThread, api: str
) -> None:
    # Use is the task's to report: nothing attach does moves the session's idle deadline
    _attach(outer_shell, api)
    _remote(outer_shell, "echo typed-$((6 * 7))", "typed-42")
    _remote(outer_shell, "seq 1 3000; echo burst-$((1 + 1))-done", "burst-2-done")  # a burst of output
    assert peer.cut() == 1  # as ECS Exec cuts an idle channel
    _remote(outer_shell, "echo back-$((2 + 2))", "back-4")
    outer_shell.send("exit\r")
    outer_shell.expect_exact("outer$ ")

    connect = f"POST /v1/sessions/{SESSION_ID}/connect"
    assert peer.api_calls == [connect, connect, f"GET /v1/sessions/{SESSION_ID}"]  # the last: its fate


def test_when_the_shell_ends_because_the_session_stopped_attach_says_so_and_why(
    outer_shell: pexpect.spawn, peer: PeerThread, api: str
) -> None:
    _attach(outer_shell, api)
    peer.session_view = {"status": "STOPPING", "statusReason": "idle for 30 minutes"}

    outer_shell.send("exit\r")

    outer_shell.expect(r"Exiting session with sessionId: ecs-execute-command-\w+\.")
    outer_shell.expect_exact(f"Session {SESSION_ID} is STOPPING: idle for 30 minutes")
    outer_shell.expect_exact("outer$ ")


def test_when_a_reconnect_finds_the_session_stopped_attach_says_why_and_ends(
    outer_shell: pexpect.spawn, peer: PeerThread, api: str
) -> None:
    # A stopped task's channel drops rather than closes: the reconnect is what learns the session ended
    _attach(outer_shell, api)
    peer.session_view = {"status": "STOPPING", "statusReason": "no client attached for 5 min"}

    assert peer.cut() == 1

    outer_shell.expect_exact(f"Session {SESSION_ID} is STOPPING: no client attached for 5 min")
    outer_shell.expect_exact("outer$ ")
    outer_shell.sendline("echo status-$?")
    outer_shell.expect_exact("status-0")


def test_enter_tilde_dot_detaches_and_tilde_tilde_types_one_tilde(
    outer_shell: pexpect.spawn, peer: PeerThread, api: str
) -> None:
    before = _stty_settings(outer_shell)
    _attach(outer_shell, api)

    # A ~ inside a line is typed as it is; at a line's start ~~ types one ~ and ~ before another key both
    _remote(outer_shell, "echo in~line-$((1 + 1))", "in~line-2")
    outer_shell.send('read first; read second; echo "got[$first][$second]"\r')
    outer_shell.send("~~x\r")
    outer_shell.send("~y\r")
    outer_shell.expect_exact("got[~x][~y]")
    outer_shell.expect_exact("remote$ ")

    # Enter then ~. detaches: attach ends at once, successfully, and the terminal is given back
    outer_shell.send("\r~.")
    outer_shell.expect_exact("Detached; the shell keeps running.")
    outer_shell.expect_exact("outer$ ")
    outer_shell.sendline("echo status-$?")
    outer_shell.expect_exact("status-0")
    outer_shell.expect_exact("outer$ ")
    assert _stty_settings(outer_shell) == before

    # And attaching again ends the exec session the detached one left (it would hold a place until
    # the idle timeout), however many times the user detaches and comes back
    for _ in range(3):
        left = peer.issued[-1]
        _attach(outer_shell, api)
        assert peer.replaced[-1] == left
        outer_shell.send("\r~.")
        outer_shell.expect_exact("outer$ ")
    assert peer.replaced == peer.issued[:-1]


def test_attach_with_a_raw_stream_url_and_token(outer_shell: pexpect.spawn, peer: PeerThread) -> None:
    credentials = peer.new_session()
    before = _stty_settings(outer_shell)

    outer_shell.sendline(
        _attach_command(
            "--stream-url", f"'{credentials['streamUrl']}'", "--token-value", credentials["tokenValue"]
        )
    )
    outer_shell.expect_exact("remote$ ")
    _remote(outer_shell, "echo raw-$((2 + 3))", "raw-5")
    outer_shell.send("exit\r")

    outer_shell.expect_exact("Exiting session")
    outer_shell.expect_exact("outer$ ")
    assert _stty_settings(outer_shell) == before


def test_attach_reports_a_refused_connect_and_restores_the_terminal(
    outer_shell: pexpect.spawn, api: str
) -> None:
    before = _stty_settings(outer_shell)

    outer_shell.sendline(_attach_command(SESSION_ID, "--api", api, "--token", "wrong"))

    outer_shell.expect_exact("cloudide attach: connect returned HTTP 401: Unauthorized")
    outer_shell.expect_exact("outer$ ")
    outer_shell.sendline("echo status-$?")
    outer_shell.expect_exact("status-1")
    outer_shell.expect_exact("outer$ ")
    assert _stty_settings(outer_shell) == before


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ([], "SESSION_ID (with --api and --token) or --stream-url/--token-value is required"),
        (["sess-1"], "SESSION_ID needs --api and --token"),
        (["--stream-url", "wss://x"], "--stream-url and --token-value go together"),
        (["sess-1", "--stream-url", "wss://x", "--token-value", "t"], "not both"),
        (["sess-1", "--api", "http://x", "--token", "jwt\r\nX: y"], "visible ASCII without spaces"),
    ],
)
def test_attach_explains_missing_or_conflicting_arguments(
    arguments: list[str], error: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CLOUDIDE_API", raising=False)
    monkeypatch.delenv("CLOUDIDE_TOKEN", raising=False)
    args = build_parser().parse_args(["attach", *arguments])

    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert error in err
    assert "jwt" not in err  # a token is never echoed


@pytest.mark.parametrize(
    ("reads", "sent", "detached"),
    [
        ([b"~."], b"", True),  # the very start is a line start
        ([b"ls\r~.", b"never"], b"ls\r", True),
        ([b"ls\r~", b"."], b"ls\r", True),  # split across reads
        ([b"ls\n~."], b"ls\n", True),
        ([b"a~.b"], b"a~.b", False),  # not at a line start
        ([b"~~.\r"], b"~.\r", False),
        ([b"~x~."], b"~x~.", False),  # after ~x the line has started
        ([b"\r~", b"q"], b"\r~q", False),
    ],
)
def test_the_escape_filter_follows_ssh(reads: list[bytes], sent: bytes, detached: bool) -> None:
    from cloudide.attach import Detached, EscapeFilter

    escape, out, ended = EscapeFilter(), b"", False
    for data in reads:
        try:
            out += escape.feed(data)
        except Detached as detach:
            out += detach.before
            ended = True
            break
    assert (out, ended) == (sent, detached)
