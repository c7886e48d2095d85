"""`cloudide attach`: the user's terminal, in raw mode, connected to a session's shell.

Thin over :class:`~cloudide.transport.client.TerminalConnection`: credentials come from the REST API's
``POST /sessions/{id}/connect`` -- called again for every reconnect, because an ECS Exec token opens one
data channel -- or, for debugging, from a raw ``streamUrl``/``tokenValue`` pair, which cannot reconnect.
Raw mode sends every byte, Ctrl-C included, to the remote shell; the local settings are restored on every
way out (session end, error, SIGTERM, SIGHUP), since a terminal left in raw mode is unusable.
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
from cloudide.transport.sessions_api import (
    ACTIVITY_INTERVAL_S,
    ActivityReport,
    ActivityReporter,
    MalformedToken,
    SessionsApi,
)

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 30.0
READ_SIZE = 1024
DEFAULT_SIZE = (24, 80)


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
        connect, report_activity = endpoints_from_args(args)
    except (ValueError, MalformedToken) as error:
        print(f"cloudide attach: {error}", file=sys.stderr)
        return 2
    return asyncio.run(
        attach(connect, sys.stdin.fileno(), sys.stdout.fileno(), report_activity=report_activity)
    )


def endpoints_from_args(args: argparse.Namespace) -> tuple[Connector, ActivityReport | None]:
    """How to (re)connect, and how to report activity: only a session attached through the API has both."""
    if args.stream_url or args.token_value:
        if not (args.stream_url and args.token_value):
            raise ValueError("--stream-url and --token-value go together")
        if args.session_id:
            raise ValueError("give either SESSION_ID or --stream-url/--token-value, not both")
        return single_use_connector(ExecCredentials("stream-url", args.stream_url, args.token_value)), None
    if not args.session_id:
        raise ValueError("SESSION_ID (with --api and --token) or --stream-url/--token-value is required")
    if not args.api or not args.token:
        raise ValueError("SESSION_ID needs --api and --token (or $CLOUDIDE_API and $CLOUDIDE_TOKEN)")
    api = SessionsApi(args.api, timeout_s=CONNECT_TIMEOUT)
    return api.connector(args.session_id, args.token), api.activity(args.session_id, args.token)


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
    report_activity: ActivityReport | None = None,
    activity_interval_s: float = ACTIVITY_INTERVAL_S,
) -> int:
    """Relay between the local terminal and the session until the shell exits; returns the exit status.

    With ``report_activity``, typing and output tell the API the session is in use, so its idle
    watchdog leaves it running (see :class:`ActivityReporter`).
    """
    rows, cols = _terminal_size(stdout_fd)
    activity = ActivityReporter(report_activity, interval_s=activity_interval_s) if report_activity else None
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    background: set[asyncio.Task[None]] = set()

    def on_resize(terminal: TerminalConnection) -> None:
        task = asyncio.create_task(terminal.resize(*_terminal_size(stdout_fd)))
        background.add(task)
        task.add_done_callback(background.discard)

    outcome: TransportError | None = None
    with _raw_mode(stdin_fd):
        for signum in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(signum, main.cancel)
        try:
            async with TerminalConnection(connect, rows=rows, cols=cols) as terminal:
                loop.add_signal_handler(signal.SIGWINCH, on_resize, terminal)
                forward = asyncio.create_task(_forward_input(terminal, stdin_fd, activity))
                if activity:
                    activity.start()
                try:
                    while True:
                        _write_all(stdout_fd, await terminal.recv())
                        if activity:
                            activity.touch()
                except TransportError as error:
                    outcome = error
                finally:
                    forward.cancel()
                    loop.remove_signal_handler(signal.SIGWINCH)
                    if activity:
                        await activity.stop()
        except asyncio.CancelledError:
            outcome = TransportError("interrupted")
        finally:
            for signum in (signal.SIGTERM, signal.SIGHUP):
                loop.remove_signal_handler(signum)
    if isinstance(outcome, SessionEnded):
        _write_all(stdout_fd, f"\n\n{outcome}\n\n".encode())
        return 0
    print(f"cloudide attach: {outcome}", file=sys.stderr)
    return 1


async def _forward_input(
    terminal: TerminalConnection, stdin_fd: int, activity: ActivityReporter | None
) -> None:
    while True:
        await wait_readable(stdin_fd)
        data = os.read(stdin_fd, READ_SIZE)
        if not data:
            return  # stdin closed (not a terminal): keep showing output until the session ends
        if activity:
            activity.touch()
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
