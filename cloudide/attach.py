"""`cloudide attach`: the user's terminal, in raw mode, connected to a session's shell.

Thin over :class:`~cloudide.transport.client.TerminalConnection`: credentials come from the REST API's
``POST /sessions/{id}/connect`` -- called again for every reconnect, because an ECS Exec token opens one
data channel -- or, for debugging, from a raw ``streamUrl``/``tokenValue`` pair, which cannot reconnect.
Raw mode sends every byte, Ctrl-C included, to the remote shell; the local settings are restored on every
way out (session end, error, SIGTERM, SIGHUP), since a terminal left in raw mode is unusable.

Leaving: ``exit`` in the shell ends the shell (and attach says what became of the session); Enter then
``~.`` detaches and leaves the shell running, as ssh's escape does -- the client's own, so it never
clashes with a tmux prefix the user chose. ``~~`` at the start of a line types one ``~``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import termios
import tty
from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Any

from cloudide.transport.client import (
    ConnectFailed,
    Connector,
    ExecCredentials,
    SessionEnded,
    TerminalConnection,
    TransportError,
)
from cloudide.transport.fdio import wait_readable
from cloudide.transport.sessions_api import ApiRejected, MalformedToken, SessionRead, SessionsApi

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 30.0
READ_SIZE = 1024
DEFAULT_SIZE = (24, 80)
ESCAPE = ord("~")
DETACH = ord(".")
LINE_ENDS = (0x0D, 0x0A)


class Detached(Exception):
    """The user typed the detach escape (``~.`` at the start of a line); ``before`` is what they typed
    ahead of it in the same read, still to be sent."""

    def __init__(self, before: bytes) -> None:
        super().__init__("detached")
        self.before = before


class EscapeFilter:
    """ssh's escape over the keystroke stream: at the start of a line ``~.`` detaches, ``~~`` sends
    one ``~``, and ``~`` before anything else is sent as typed (with what follows it)."""

    def __init__(self) -> None:
        self._line_start = True
        self._pending = False

    def feed(self, data: bytes) -> bytes:
        """What to send for ``data``; raises :class:`Detached` at ``~.`` (what came before is lost)."""
        out = bytearray()
        for byte in data:
            if self._pending:
                self._pending = False
                if byte == DETACH:
                    raise Detached(bytes(out))
                if byte != ESCAPE:
                    out.append(ESCAPE)
            elif self._line_start and byte == ESCAPE:
                self._pending = True
                continue
            out.append(byte)
            self._line_start = byte in LINE_ENDS
        return bytes(out)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "attach",
        help="open an interactive terminal on a session",
        description="Open an interactive terminal on a running session; reconnects when the channel drops.",
    )
    parser.add_argument("session_id", nargs="?", metavar="SESSION_ID", help="session to attach to")
    parser.add_argument(
        "--api", default=os.environ.get("CLOUDIDE_API"), help="REST API base URL [$CLOUDIDE_API]"
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("CLOUDIDE_TOKEN"),
        help="bearer token for the REST API [$CLOUDIDE_TOKEN]",
    )
    parser.add_argument("--stream-url", help="an ECS Exec streamUrl, instead of SESSION_ID (no reconnect)")
    parser.add_argument("--token-value", help="the tokenValue that goes with --stream-url")
    parser.add_argument("-v", "--verbose", action="store_true", help="log connection events to stderr")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr)
    try:
        connect, read_session = endpoints_from_args(args)
    except (ValueError, MalformedToken) as error:
        print(f"cloudide attach: {error}", file=sys.stderr)
        return 2
    return asyncio.run(
        attach(
            connect,
            sys.stdin.fileno(),
            sys.stdout.fileno(),
            read_session=read_session,
            left_behind=LeftBehind(args.session_id) if args.session_id else None,
        )
    )


class LeftBehind:
    """The exec session a detached (or killed) attach left open, so the next attach ends it.

    Leaving does not end an exec session: it holds one of the task's two places until ECS Exec's idle
    timeout, and a few detach/attach rounds would leave no place for a shell. The next attach of the
    same session on this machine names it as the one its first connect replaces.
    """

    def __init__(self, session_id: str) -> None:
        state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
        self._file = state / "cloudide" / "attach" / f"{session_id}.exec"

    def take(self) -> str | None:
        """The exec session the last attach left, forgotten once read (None if there is none)."""
        try:
            exec_session_id = self._file.read_text().strip()
            self._file.unlink()
        except OSError:
            return None
        return exec_session_id or None

    def leave(self, exec_session_id: str) -> None:
        with contextlib.suppress(OSError):
            self._file.parent.mkdir(parents=True, exist_ok=True)
            self._file.write_text(exec_session_id + "\n")


def endpoints_from_args(args: argparse.Namespace) -> tuple[Connector, SessionRead | None]:
    """How to (re)connect and read the session: only a session attached through the API can be read."""
    if args.stream_url or args.token_value:
        if not (args.stream_url and args.token_value):
            raise ValueError("--stream-url and --token-value go together")
        if args.session_id:
            raise ValueError("give either SESSION_ID or --stream-url/--token-value, not both")
        return (
            single_use_connector(ExecCredentials("stream-url", args.stream_url, args.token_value)),
            None,
        )
    if not args.session_id:
        raise ValueError("SESSION_ID (with --api and --token) or --stream-url/--token-value is required")
    if not args.api or not args.token:
        raise ValueError("SESSION_ID needs --api and --token (or $CLOUDIDE_API and $CLOUDIDE_TOKEN)")
    api = SessionsApi(args.api, timeout_s=CONNECT_TIMEOUT)
    return (
        api.connector(args.session_id, args.token, replaces=LeftBehind(args.session_id).take()),
        api.reader(args.session_id, args.token),
    )


def single_use_connector(credentials: ExecCredentials) -> Connector:
    used = False

    async def connect() -> ExecCredentials:
        nonlocal used
        if used:
            raise ConnectFailed(
                "a streamUrl/tokenValue pair opens one data channel; attach by SESSION_ID to reconnect"
            )
        used = True
        return credentials

    return connect


async def attach(
    connect: Connector,
    stdin_fd: int,
    stdout_fd: int,
    *,
    read_session: SessionRead | None = None,
    left_behind: LeftBehind | None = None,
) -> int:
    """Relay between the local terminal and the session until the shell exits or the user detaches;
    returns the exit status.

    Nothing here tells the API the session is in use: the task itself reports keystrokes and work
    (see ``sessions_api``). With ``read_session``, the end of the shell is followed by what became of
    the session (still READY, or STOPPING and why: its ``statusReason``). With
    ``left_behind``, leaving without the shell ending records the exec session for the next attach.
    """
    rows, cols = _terminal_size(stdout_fd)
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    background: set[asyncio.Task[None]] = set()

    def on_resize(terminal: TerminalConnection) -> None:
        task = asyncio.create_task(terminal.resize(*_terminal_size(stdout_fd)))
        background.add(task)
        task.add_done_callback(background.discard)

    outcome: BaseException | None = None
    exec_session_id: str | None = None
    with _raw_mode(stdin_fd):
        for signum in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(signum, main.cancel)
        try:
            async with TerminalConnection(connect, rows=rows, cols=cols) as terminal:
                loop.add_signal_handler(signal.SIGWINCH, on_resize, terminal)
                output = asyncio.create_task(_show_output(terminal, stdout_fd))
                forward = asyncio.create_task(_forward_input(terminal, stdin_fd))
                try:
                    done, _ = await asyncio.wait({output, forward}, return_when=asyncio.FIRST_COMPLETED)
                    if output not in done and forward.exception() is None:
                        await asyncio.wait({output})  # stdin closed (not a terminal): show output to the end
                    outcome = output.exception() if output.done() else forward.exception()
                finally:
                    exec_session_id = terminal.session_id
                    output.cancel()
                    forward.cancel()
                    loop.remove_signal_handler(signal.SIGWINCH)
        except asyncio.CancelledError:
            outcome = TransportError("interrupted")
        finally:
            for signum in (signal.SIGTERM, signal.SIGHUP):
                loop.remove_signal_handler(signum)
    # The session ended under the shell when the shell exited, or when a reconnect found it no longer
    # READY (a stopped task's channel drops rather than closes); a refused first connect is an error.
    stopped = (
        bool(exec_session_id) and isinstance(outcome, ApiRejected) and outcome.status == HTTPStatus.CONFLICT
    )
    ended = isinstance(outcome, SessionEnded) or stopped
    if left_behind is not None and exec_session_id and not ended:
        left_behind.leave(exec_session_id)
    if isinstance(outcome, Detached):
        _write_all(stdout_fd, b"\r\nDetached; the shell keeps running. Attach again to go on.\r\n")
        return 0
    if not ended:
        print(f"cloudide attach: {outcome}", file=sys.stderr)
        return 1
    _write_all(stdout_fd, f"\n\n{outcome}\n\n".encode() if isinstance(outcome, SessionEnded) else b"\n\n")
    if read_session is not None:
        _write_all(stdout_fd, (await _session_fate(read_session)).encode())
    return 0


async def _session_fate(read_session: SessionRead) -> str:
    """One line on what the session is now: the shell may have exited while the task runs on, or the
    session may be stopping, and the user should know which (and why)."""
    try:
        view = await read_session()
    except (TransportError, ConnectionError) as error:
        return f"(could not read the session: {error})\n"
    status, reason = view.get("status", "UNKNOWN"), view.get("statusReason")
    line = f"Session {view.get('sessionId', '')} is {status}" + (f": {reason}" if reason else "")
    if status == "READY":
        line += " (the shell exited; the session runs on: attach again for a new shell)"
    return line + "\n"


async def _show_output(terminal: TerminalConnection, stdout_fd: int) -> None:
    """Write output until the session ends (:class:`TransportError`, raised)."""
    while True:
        _write_all(stdout_fd, await terminal.recv())


async def _forward_input(terminal: TerminalConnection, stdin_fd: int) -> None:
    escape = EscapeFilter()
    while True:
        await wait_readable(stdin_fd)
        data = os.read(stdin_fd, READ_SIZE)
        if not data:
            return  # stdin closed (not a terminal): keep showing output until the session ends
        try:
            data = escape.feed(data)
        except Detached as detached:
            await terminal.send(detached.before)
            raise
        await terminal.send(data)


@contextlib.contextmanager
def _raw_mode(fd: int) -> Iterator[None]:
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _terminal_size(fd: int) -> tuple[int, int]:
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return DEFAULT_SIZE
    return (size.lines, size.columns) if size.lines and size.columns else DEFAULT_SIZE


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
