"""pid 1 of a local task's sandbox: the part tini plays in the image, plus the task's way out to AWS.

As an init it starts the entrypoint, forwards the signals ECS would send (SIGTERM on StopTask) to it,
reaps every orphan (the exec'd shells' tmux server ends up here, as under ECS's init), and exits with
the entrypoint's status (128 + signal when it was killed, as tini does), which ends the pid namespace.

With ``--map-ids OFFSET`` the entrypoint runs in its own user namespace in which ids 0-65535 are the
host's OFFSET to OFFSET+65535: the image's root and uid 1000 are then a host uid of this task alone, so
no other task's processes (each with its own range) can read its files, signal or trace its processes,
or reach its sockets, whatever path they find. task_init stays outside it: it writes the mapping, which
needs CAP_SETUID in the parent namespace.

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
import ctypes
import os
import signal
import sys
import threading
import warnings
from collections.abc import Awaitable, Callable, Sequence

FORWARDED_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)
ID_RANGE = 65_536
_CLONE_NEWUSER = 0x10000000
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


def _unshare_user_namespace() -> None:
    """unshare(CLONE_NEWUSER) through libc: os.unshare needs Python 3.12, the sandbox may run 3.11."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(_CLONE_NEWUSER) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWUSER)")


def _spawn(command: Sequence[str], id_offset: int | None) -> int:
    """Start the entrypoint, in a user namespace mapped at `id_offset` when given; returns its pid."""
    if id_offset is None:
        return os.posix_spawnp(command[0], list(command), os.environ)
    unshared_r, unshared_w = os.pipe()
    mapped_r, mapped_w = os.pipe()
    with warnings.catch_warnings():  # the relay thread runs; the child makes system calls only
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: only system calls until exec
        try:
            _unshare_user_namespace()
            os.write(unshared_w, b"u")
            if os.read(mapped_r, 1) != b"m":
                os._exit(1)
            os.setgroups([])
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)  # the namespace's root: exec gives it its capabilities there
            os.execvp(command[0], list(command))
        except OSError as error:
            os.write(2, f"task-init: cannot start {command[0]}: {error}\n".encode())
        os._exit(127)
    try:
        if os.read(unshared_r, 1) == b"u":
            for name in ("uid_map", "gid_map"):
                with open(f"/proc/{pid}/{name}", "w") as mapping:
                    mapping.write(f"0 {id_offset} {ID_RANGE}\n")
            os.write(mapped_w, b"m")
    finally:
        for fd in (unshared_r, unshared_w, mapped_r, mapped_w):
            os.close(fd)
    return pid


def run(command: Sequence[str], relay: tuple[int, str] | None, id_offset: int | None = None) -> int:
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
    child = _spawn(command, id_offset)
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
    parser.add_argument("--map-ids", type=int, metavar="OFFSET", help="run it as host ids OFFSET+0..65535")
    parser.add_argument("command", nargs="+", help="the entrypoint (after --)")
    args = parser.parse_args(argv)
    relay = None
    if args.relay:
        port, _, socket_path = args.relay.partition("=")
        relay = (int(port), socket_path)
    return run(args.command, relay, args.map_ids)


if __name__ == "__main__":
    sys.exit(main())
