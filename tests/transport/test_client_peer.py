"""The terminal client against the local agent peer: real PTYs, real WebSockets, injected faults."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from cloudide.transport.client import (
    ConnectFailed,
    ConnectionState,
    EncryptionNotSupported,
    ExecCredentials,
    SessionEnded,
    TerminalConnection,
    Timeouts,
    TransportError,
)
from cloudide.transport.faults import FaultPlan
from cloudide.transport.peer import LocalPeer, utf8_boundary
from tests.support import require_tool

pytestmark = pytest.mark.timeout(60)
WAIT = 10.0
BASH = ["bash", "--norc", "--noprofile", "--noediting"]
PROMPT_ENV = {"PS1": "$ ", "PROMPT_COMMAND": "", "HISTFILE": "/dev/null"}


class Screen:
    """Everything the terminal printed so far, with helpers to wait for text."""

    def __init__(self, terminal: TerminalConnection) -> None:
        self.terminal = terminal
        self.text = ""

    async def wait_for(self, pattern: str, timeout: float = WAIT) -> re.Match[str]:
        async with asyncio.timeout(timeout):
            while not (match := re.search(pattern, self.text, re.DOTALL)):
                self.text += (await self.terminal.recv()).decode(errors="replace")
        self.text = self.text[match.end() :]
        return match

    async def run(self, command: str) -> str:
        """Type a command line and return what it printed.

        The line ends by echoing a marker that only appears once the shell expands it, so neither the
        terminal's echo of the typed line nor a prompt printed late is mistaken for output.
        Only for the plain bash shell (its prompt is ``$ ``).
        """
        await self.terminal.send(f"{command}; echo END-$((1 + 1))\r".encode())
        # Up to the next prompt, so that the next command is not typed before it is printed.
        return (await self.wait_for(r"END-\$\(\(1 \+ 1\)\)\r\n(.*?)END-2\r\n\$ ")).group(1)


@asynccontextmanager
async def terminal(
    peer: LocalPeer,
    command: Sequence[str] = BASH,
    *,
    on_state: Callable[[ConnectionState], None] | None = None,
    **session: object,
) -> AsyncIterator[Screen]:
    async def connect() -> ExecCredentials:
        return peer.new_session(command, env=PROMPT_ENV, **session)  # type: ignore[arg-type]

    async with TerminalConnection(connect, rows=24, cols=80, on_state=on_state) as connection:
        screen = Screen(connection)
        if command == BASH:
            await screen.wait_for(r"\$ ")  # typing before the first prompt would print it amid the output
        yield screen


@pytest.fixture
def tmux_socket(tmp_path: Path) -> object:
    """A private tmux server for one test: the persistent shell that survives data channels."""
    require_tool("tmux", "the reconnect tests keep their shell in tmux, as cloudide-shell does")
    socket = tmp_path / "tmux.sock"
    yield socket
    os.system(f"tmux -S {socket} kill-server 2>/dev/null")


def _tmux_shell(socket: object) -> list[str]:
    return ["tmux", "-S", str(socket), "-f", "/dev/null", "new-session", "-A", "-s", "t", *BASH]


async def test_commands_run_and_their_output_comes_back() -> None:
    async with LocalPeer() as peer, terminal(peer) as screen:
        assert await screen.run("echo $((6 * 7))") == "42\r\n"
        assert await screen.run("printf 'a\\nb\\n'") == "a\r\nb\r\n"


async def test_resize_reaches_the_pty() -> None:
    async with LocalPeer() as peer, terminal(peer) as screen:
        assert (await screen.run("stty size")).split() == ["24", "80"]

        await screen.terminal.resize(rows=37, cols=131)

        assert (await screen.run("stty size")).split() == ["37", "131"]


async def test_the_shell_exiting_ends_the_session_cleanly() -> None:
    states: list[ConnectionState] = []
    async with LocalPeer() as peer, terminal(peer, on_state=states.append) as screen:
        await screen.terminal.send(b"exit 3\r")

        with pytest.raises(SessionEnded, match="Exiting session with sessionId: ecs-execute-command-"):
            async with asyncio.timeout(WAIT):
                while True:
                    await screen.terminal.recv()
        with pytest.raises(SessionEnded):  # stays ended
            await screen.terminal.recv()
        with pytest.raises(SessionEnded):
            await screen.terminal.send(b"ls\r")
    assert states == ["connecting", "open", "closed"]


LINES = 3_000_000  # `seq` prints about 23 MB


@pytest.mark.parametrize(
    "faults",
    [None, FaultPlan(drop=0.01, duplicate=0.01, reorder=0.01, delay=0.005, seed=7)],
    ids=["clean", "drop-duplicate-reorder-delay"],
)
async def test_large_output_arrives_complete_and_in_order(faults: FaultPlan | None) -> None:
    expected = hashlib.sha256("".join(f"{n}\n" for n in range(1, LINES + 1)).encode()).hexdigest()
    command = ["sh", "-c", f"stty -opost -echo; sleep 0.2; seq 1 {LINES}"]  # -opost: no \r\n translation
    received = hashlib.sha256()
    size = 0
    async with LocalPeer(faults=faults) as peer, terminal(peer, command) as screen:
        with pytest.raises(SessionEnded):
            async with asyncio.timeout(45):
                while True:
                    chunk = await screen.terminal.recv()
                    received.update(chunk)
                    size += len(chunk)

    assert size > 20_000_000
    assert received.hexdigest() == expected
    if faults is not None:
        assert {"drop", "duplicate", "reorder", "delay"} <= set(peer.injected)


async def test_keystrokes_survive_a_lossy_path_to_the_agent() -> None:
    faults = FaultPlan(drop=0.2, duplicate=0.1, reorder=0.1, seed=3)
    async with LocalPeer(faults=faults) as peer, terminal(peer) as screen:
        for word in ("alpha", "bravo", "charlie"):
            assert await screen.run(f"echo {word}") == f"{word}\r\n"
    assert peer.injected["drop"] > 0


async def test_a_dropped_connection_reconnects_to_the_same_shell(tmux_socket: object) -> None:
    states: list[ConnectionState] = []
    async with (
        LocalPeer() as peer,
        terminal(peer, _tmux_shell(tmux_socket), on_state=states.append) as screen,
    ):
        # tmux redraws the screen, so wait for text only the command's output contains.
        await screen.terminal.send(b"KEPT=kept; echo set-$((1 + 1))\r")
        await screen.wait_for("set-2")

        assert peer.cut() == 1

        await screen.terminal.send(b"echo $KEPT-$((40 + 2))\r")
        await screen.wait_for("kept-42")
        assert screen.terminal.channels_opened == 2
    assert states[:4] == ["connecting", "open", "reconnecting", "open"]


async def test_an_idle_cut_reconnects_instead_of_ending(tmux_socket: object) -> None:
    async with LocalPeer(idle_timeout=0.5) as peer, terminal(peer, _tmux_shell(tmux_socket)) as screen:
        await screen.terminal.send(b"KEPT=kept; echo set-$((1 + 1))\r")
        await screen.wait_for("set-2")

        await asyncio.sleep(1.5)  # the peer cuts the quiet session with an inactivity channel_closed

        await screen.terminal.send(b"echo $KEPT-$((40 + 2))\r")
        await screen.wait_for("kept-42")
        assert screen.terminal.channels_opened >= 2


async def test_the_session_type_handshake_comes_before_size_and_input() -> None:
    async with LocalPeer() as peer, terminal(peer, handshake=True) as screen:
        assert (await screen.run("stty size")).split() == ["24", "80"]


async def test_a_kms_encrypted_session_fails_with_a_clear_message() -> None:
    async with LocalPeer() as peer:

        async def connect() -> ExecCredentials:
            return peer.new_session(BASH, kms_key_id="arn:aws:kms:us-east-1:1:key/k")

        async with TerminalConnection(connect) as connection:
            with pytest.raises(
                EncryptionNotSupported, match=r"requires KMS encryption \(key arn:aws:kms:.*not support"
            ):
                await asyncio.wait_for(connection.recv(), WAIT)
            assert connection.channels_opened == 1  # refused for good, not retried


async def test_a_used_token_is_refused_and_the_client_gives_up() -> None:
    async with LocalPeer() as peer:
        credentials = peer.new_session(BASH)
        attempts = 0

        async def same_credentials() -> ExecCredentials:
            nonlocal attempts
            attempts += 1
            return credentials

        async with TerminalConnection(same_credentials) as connection:
            await connection.wait_open(WAIT)
            await connection.send(b"exit\r")
            with pytest.raises(TransportError) as ended:
                async with asyncio.timeout(WAIT):
                    while True:
                        await connection.recv()
        assert isinstance(ended.value, SessionEnded)

        async with TerminalConnection(same_credentials, timeouts=Timeouts(first_message=0.2)) as connection:
            with pytest.raises(ConnectFailed, match="closed before the agent answered"):
                await asyncio.wait_for(connection.recv(), 30)
        assert attempts == 1 + 5


@pytest.mark.parametrize(
    ("data", "boundary"),
    [
        (b"abc", 3),
        ("é".encode(), 2),
        ("é".encode()[:1], 0),
        (b"a" + "€".encode()[:2], 1),
        (b"x" + "😀".encode(), 5),
    ],
)
def test_output_chunks_never_end_inside_a_utf8_character(data: bytes, boundary: int) -> None:
    assert utf8_boundary(data) == boundary
