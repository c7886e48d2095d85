"""pid 1 of a local task's sandbox: the part tini plays in the image, plus the task's way out to AWS.

As an init it starts the entrypoint, forwards the signals ECS would send (SIGTERM on StopTask) to it,
reaps every orphan (the exec'd shells' tmux server ends up here, as under ECS's init), and exits with
the entrypoint's status (128 + signal when it was killed, as tini does), which ends the pid namespace.

The sandbox's network is loopback only, so it also relays 127.0.0.1:<port> to a unix socket the runner
binds into the sandbox, whose other end forwards to the local AWS: the agent sees an ordinary
AWS_ENDPOINT_URL and nothing else of the host's network.

The file runs as a script inside the sandbox (`python3 -I -S task_init.py ...`): standard library
only, and nothing imported from the package. The host's half is :mod:`cloudide.localstack.bridge`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence

FORWARDED_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)
CONNECT_TIMEOUT_S = 10.0
RELAY_READY_TIMEOUT_S = 10.0
_CHUNK = 64 * 1024

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while chunk := await source.read(_CHUNK):
            sink.write(chunk)
            await sink.drain()
        if sink.can_write_eof():
            sink.write_eof()
    except (ConnectionError, OSError):
        sink.close()


async def splice(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connect: Callable[[], Awaitable[Streams]]
) -> None:
    """Join an accepted connection to a new one from `connect`, both ways, until both sides are done."""
    try:
        upstream_reader, upstream_writer = await asyncio.wait_for(connect(), CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError):
        writer.close()
        return
    try:
        await asyncio.gather(_pump(reader, upstream_writer), _pump(upstream_reader, writer))
    finally:
        for stream in (writer, upstream_writer):
            stream.close()


def _serve_relay(port: int, socket_path: str, ready: threading.Event) -> None:
    async def serve() -> None:
        server = await asyncio.start_server(
            lambda r, w: splice(r, w, lambda: asyncio.open_unix_connection(socket_path)), "127.0.0.1", port
        )
        ready.set()
        await server.serve_forever()

    asyncio.run(serve())


def _exit_status(status: int) -> int:
    return 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def run(command: Sequence[str], relay: tuple[int, str] | None) -> int:
    if relay:
        ready = threading.Event()
        threading.Thread(target=_serve_relay, args=(*relay, ready), name="aws-relay", daemon=True).start()
        if not ready.wait(RELAY_READY_TIMEOUT_S):
            print("task-init: the AWS endpoint relay did not start", file=sys.stderr)
            return 1
    child = 0
    early: list[int] = []  # signals that arrived before the entrypoint existed

    def forward(signum: int, _frame: object) -> None:
        if not child:
            early.append(signum)
            return
        with contextlib.suppress(ProcessLookupError):  # already gone: its exit is about to be reaped
            os.kill(child, signum)

    # pid 1 drops signals it has no handler for: install before the entrypoint exists.
    for signum in FORWARDED_SIGNALS:
        signal.signal(signum, forward)
    child = os.posix_spawnp(command[0], list(command), os.environ)
    for pending in early:
        forward(pending, None)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return 1  # cannot happen while the entrypoint lives; do not spin if it does
        if pid == child:
            return _exit_status(status)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="task_init", description=__doc__.splitlines()[0])
    parser.add_argument("--relay", metavar="PORT=SOCKET", help="relay 127.0.0.1:PORT to a unix socket")
    parser.add_argument("command", nargs="+", help="the entrypoint (after --)")
    args = parser.parse_args(argv)
    relay = None
    if args.relay:
        port, _, socket_path = args.relay.partition("=")
        relay = (int(port), socket_path)
    return run(args.command, relay)


if __name__ == "__main__":
    sys.exit(main())
