"""`cloudide local`: a browser terminal on this machine, over the project's real ECS Exec transport.

This is the first slice of the local stack: the browser gateway relays to a :class:`LocalPeer`, which plays
the SSM agent over a PTY, so the page, the gateway, the data-channel protocol and the reconnecting client
are the very code that runs against AWS. What stands in for the REST API is a connector that accepts
``local:<user-id>`` tokens. The shell is tmux by default because every connect starts the command afresh
(as ECS Exec does), and ``new-session -A`` re-attaches the same session, so a reload keeps the shell.
The REST API, the workflow and sandboxed tasks are not here yet; they arrive with the full local stack.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import shlex
import shutil
import signal
import sys
from collections.abc import Awaitable, Sequence
from pathlib import Path

from cloudide.transport.client import Connector, ExecCredentials
from cloudide.transport.gateway import serve_gateway
from cloudide.transport.gateway_api import ConnectorFactory, ConnectRejected
from cloudide.transport.peer import LocalPeer

logger = logging.getLogger(__name__)

SESSION_ID = "local"
TOKEN_PATTERN = re.compile(r"local:(?P<user_id>[A-Za-z0-9._@-]{1,64})")
TMUX_SOCKET = "cloudide-local"
SHUTDOWN_TIMEOUT_S = 8.0


def default_shell() -> str:
    """tmux keeps the shell alive between data channels, as ``cloudide-shell`` does in the task."""
    if shutil.which("tmux"):
        return f"tmux -L {TMUX_SOCKET} new-session -A -s main"
    return "bash -l"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``cloudide local [--host H] [--port P] [--shell CMD] [--workspace DIR]``."""
    parser = subparsers.add_parser(
        "local",
        help="run a browser terminal on this machine (terminal transport only, for now)",
        description="Serve the browser terminal on this machine through the ECS Exec transport, with a "
        "local shell standing in for the Fargate task. Open the printed URL.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (default: %(default)s)")
    parser.add_argument(
        "--shell",
        default=default_shell(),
        help="command each connect runs, split like a shell would (default: %(default)s)",
    )
    parser.add_argument(
        "--workspace",
        type=Path,
        default=Path(".local-state/workspace"),
        help="the shell's working directory, created if missing (default: %(default)s)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        command = shlex.split(args.shell)
    except ValueError as error:
        print(f"cloudide local: --shell: {error}", file=sys.stderr)
        return 2
    if not command:
        print("cloudide local: --shell must not be empty", file=sys.stderr)
        return 2
    workspace = args.workspace.resolve()
    try:
        workspace.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        print(f"cloudide local: cannot create workspace {workspace}: {error}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve_local(args.host, args.port, command, workspace))
    except OSError as error:  # typically the port is taken
        print(f"cloudide local: cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
    return 0


def local_connector_factory(peer: LocalPeer, command: Sequence[str], workspace: Path) -> ConnectorFactory:
    """Stands in for the REST API's connect call: one session, ``local:<user-id>`` tokens, a new PTY each time."""

    def factory(session_id: str, bearer_token: str) -> Connector:
        async def connect() -> ExecCredentials:
            if not TOKEN_PATTERN.fullmatch(bearer_token):
                raise ConnectRejected(401, "the local stack accepts only tokens of the form local:<user-id>")
            if session_id != SESSION_ID:
                raise ConnectRejected(404, f"the local stack has one session, {SESSION_ID!r}")
            return peer.new_session(command, cwd=str(workspace))

        return connect

    return factory


async def serve_local(host: str, port: int, command: Sequence[str], workspace: Path) -> None:
    """Serve until SIGINT or SIGTERM, then close the gateway and the peer."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    say(f"workspace: {workspace}")
    say(f"shell:     {shlex.join(command)}")
    peer = LocalPeer()  # loopback only, whatever --host is: the gateway is its sole client
    await peer.start()
    try:
        say(f"ECS Exec stand-in (LocalPeer) on 127.0.0.1:{peer.port}")
        gateway = await serve_gateway(host, port, local_connector_factory(peer, command, workspace))
        try:
            say(f"browser gateway on {gateway.url}")
            say("")
            say(f"  open:  {gateway.url}/#session={SESSION_ID}&token=local:me")
            say("")
            say("!! This is the terminal transport only (browser -> gateway -> ECS Exec protocol -> PTY).")
            say("!! The full local stack (REST API, workflow, sandboxed tasks) arrives with its own issue.")
            say("Ctrl-C stops.")
            await stop.wait()
            say("stopping ...")
        finally:
            await _bounded(gateway.close(), "gateway")
    finally:
        await _bounded(peer.stop(), "peer")
    if TMUX_SOCKET in command:
        say(f"any tmux session opened lives on; `tmux -L {TMUX_SOCKET} kill-server` ends it")
    say("stopped")


async def _bounded(closing: Awaitable[None], what: str) -> None:
    """A hung close must not keep Ctrl-C from ending the command."""
    try:
        await asyncio.wait_for(closing, SHUTDOWN_TIMEOUT_S)
    except TimeoutError:
        logger.warning("shutdown timed out", extra={"component": what, "timeout_s": SHUTDOWN_TIMEOUT_S})


def say(line: str) -> None:
    print(f"cloudide local: {line}" if line else "", flush=True)
