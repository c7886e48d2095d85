"""A local stand-in for the SSM agent end of ECS Exec: a real PTY behind a loopback data channel.

The local stack and the tests need something that behaves like ECS Exec without AWS: hand out a
``streamUrl``/``tokenValue`` pair, accept the client's WebSocket at that URL, and run a command on a
pseudo-terminal for it. :class:`LocalPeer` follows the agent's rules (SSM_PROTOCOL.md §4-6) with the same
:class:`~cloudide.transport.channel.DataChannel` the client uses:

* a token opens exactly one data channel, and every data channel starts the command afresh -- the command
  (``cloudide-shell`` in the local stack, tmux in tests) is what makes the shell persist across channels;
* the optional handshake asks for the session type (and, for tests, KMS encryption), discarding any other
  input until it completes, as the agent does;
* output is read in chunks of at most 1024 bytes without splitting a UTF-8 character, and only as fast as
  the client acknowledges it (the channel's window);
* when the command exits, the outgoing buffer is drained (2 s, like the agent) and ``channel_closed`` is
  sent; when the client goes away, the command gets SIGHUP like any process whose terminal hangs up;
* :class:`~cloudide.transport.faults.FaultPlan` and :meth:`LocalPeer.cut` inject the failures a real relay
  produces, and ``idle_timeout`` imitates ECS Exec's idle cut.

It is as strict as the service about what a session costs (docs/ecs-exec-sessions.md):

* each target (task container) runs at most ``session_limit`` sessions at once -- the exec agent's
  ``SessionWorkersLimit``, 2 when the control plane sends none -- and a session holds its worker from
  ``new_session`` (ExecuteCommand) on. A session over the limit waits for a worker, silently, as the
  agent's job pool queues it: its data channel opens but no output comes;
* a token not used within ``token_ttl_s`` is refused and its session freed;
* a client that drops its socket does not end its session: the session keeps its worker until
  ``abandoned_timeout_s`` (the 20-minute idle timeout) passes or :meth:`LocalPeer.terminate` (the SSM
  ``TerminateSession`` API) ends it. Its PTY is hung up at once, which the agent would keep running.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import secrets
import signal
import struct
import subprocess
import termios
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from cloudide.transport.channel import ChannelDropped, ChannelLimits, DataChannel, Transport
from cloudide.transport.client import ExecCredentials
from cloudide.transport.faults import FaultPlan, FaultyTransport
from cloudide.transport.fdio import wait_readable, wait_writable
from cloudide.transport.protocol import (
    ActionStatus,
    FrameError,
    MessageType,
    PayloadType,
    channel_closed,
    handshake_complete,
    handshake_request,
    parse_size,
)

logger = logging.getLogger(__name__)

AGENT_VERSION = "3.3.1142.0"
PATH_PREFIX = "/v1/data-channel/"
IDLE_CUT_MESSAGE = "Your session timed out due to inactivity and has been terminated."
OPEN_TIMEOUT = 10.0
HANDSHAKE_TIMEOUT = 15.0
DRAIN_TIMEOUT = 2.0
HANGUP_GRACE = 2.0
READ_SIZE = 64 * 1024
SESSION_LIMIT = 2
"""The ECS agent's SessionWorkersLimit when the control plane sends none (Fargate's value: UNSURE)."""
TOKEN_TTL_S = 60.0
"""A token is "valid only long enough to ensure the connection is successful" (StartSession reference);
no figure is published, so this takes a strict short bound."""
ABANDONED_TIMEOUT_S = 20 * 60.0
"""ECS Exec's idle timeout, which is what ends a session whose client went away without ending it."""
SWEEP_INTERVAL_S = 1.0

SessionState = Literal["issued", "open", "abandoned"]


@dataclass
class _Session:
    credentials: ExecCredentials
    command: tuple[str, ...]
    env: dict[str, str]
    cwd: str | None
    handshake: bool
    kms_key_id: str | None
    target: str
    issued_at: float
    state: SessionState = "issued"
    abandoned_at: float = 0.0
    connections: set[ServerConnection] = field(default_factory=set)


class LocalPeer:
    """Serves ``ws://HOST:PORT/v1/data-channel/<session-id>?role=publish_subscribe`` for its sessions."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: FaultPlan | None = None,
        *,
        chunk_size: int = 1024,
        idle_timeout: float | None = None,
        limits: ChannelLimits | None = None,
        session_limit: int = SESSION_LIMIT,
        token_ttl_s: float = TOKEN_TTL_S,
        abandoned_timeout_s: float = ABANDONED_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``clock`` decides token and abandonment expiry, so tests can drive it instead of waiting."""
        if session_limit < 1:
            raise ValueError("session_limit must be at least 1")
        self._host = host
        self._port = port
        self.faults = faults
        self._chunk_size = chunk_size
        self._idle_timeout = idle_timeout
        self._limits = limits or ChannelLimits(give_up_after=None)  # the agent never gives up resending
        self._session_limit = session_limit
        self._token_ttl_s = token_ttl_s
        self._abandoned_timeout_s = abandoned_timeout_s
        self._clock = clock
        self._sessions: dict[str, _Session] = {}  # in issue order: the first ones per target hold workers
        self._released = asyncio.Event()  # set (and replaced) whenever a session frees its worker
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake_pending = False
        self._sweeper: asyncio.Task[None] | None = None
        self._server: Server | None = None
        self.injected: Counter[str] = Counter()
        """How many faults of each kind were injected, over all connections (for tests to check)."""

    async def __aenter__(self) -> LocalPeer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self._server = await serve(
            self._serve_connection, self._host, self._port, max_size=2**20, compression=None
        )
        self._port = self._server.sockets[0].getsockname()[1]
        self._loop = asyncio.get_running_loop()
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="local-peer-sweeper")
        logger.info("local peer listening", extra={"host": self._host, "port": self._port})

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    @property
    def port(self) -> int:
        return self._port

    def new_session(
        self,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        handshake: bool = False,
        kms_key_id: str | None = None,
        target: str = "default",
    ) -> ExecCredentials:
        """Credentials for one data channel that runs ``command`` on a PTY, shaped as ExecuteCommand's.

        ``target`` names the task container: sessions of one target share its ``session_limit``.
        """
        if self._server is None:
            raise RuntimeError("LocalPeer.start() has not been called")
        if not command:
            raise ValueError("command must not be empty")
        session_id = f"ecs-execute-command-{secrets.token_hex(8)}"
        credentials = ExecCredentials(
            session_id=session_id,
            stream_url=f"ws://{self._host}:{self._port}{PATH_PREFIX}{session_id}?role=publish_subscribe",
            token_value=secrets.token_urlsafe(32),
        )
        self.sweep()
        self._sessions[session_id] = _Session(
            credentials,
            tuple(command),
            dict(env or {}),
            cwd,
            handshake=handshake or kms_key_id is not None,
            kms_key_id=kms_key_id,
            target=target,
            issued_at=self._clock(),
        )
        return credentials

    def live_sessions(self, target: str | None = None) -> list[str]:
        """Ids of the sessions not yet ended (issued, open or abandoned), of one target or all."""
        self.sweep()
        return [i for i, s in self._sessions.items() if target is None or s.target == target]

    def state(self, session_id: str) -> SessionState | None:
        """Where a session is: token issued, channel open, client gone (abandoned); None once ended."""
        session = self._sessions.get(session_id)
        return session.state if session else None

    def waiting(self) -> list[str]:
        """Ids of the sessions whose client is connected but that wait for a worker (no output yet)."""
        return [
            i
            for i, s in self._sessions.items()
            if s.state == "open" and s.connections and not self._holds_worker(s)
        ]

    def terminate(self, session_id: str) -> bool:
        """The SSM ``TerminateSession`` API: end a session and free its worker; False if it is not live."""
        session = self._sessions.get(session_id)
        if session is None:
            return False
        if self._loop is not None:  # called from the API's thread in the local stack
            for connection in list(session.connections):
                self._loop.call_soon_threadsafe(connection.transport.abort)
        self._release(session_id, "terminated")
        return True

    def sweep(self) -> int:
        """Free sessions whose token expired unused or whose client left too long ago; returns how many."""
        now = self._clock()
        expired = [
            session_id
            for session_id, session in self._sessions.items()
            if (session.state == "issued" and now - session.issued_at >= self._token_ttl_s)
            or (session.state == "abandoned" and now - session.abandoned_at >= self._abandoned_timeout_s)
        ]
        for session_id in expired:
            self._release(session_id, "expired")
        return len(expired)

    def _holds_worker(self, session: _Session) -> bool:
        ahead = [s for s in self._sessions.values() if s.target == session.target]
        return session in ahead[: self._session_limit]

    def _release(self, session_id: str, why: str) -> None:
        if self._sessions.pop(session_id, None) is None:
            return
        logger.debug("session released", extra={"session_id": session_id, "why": why})
        if self._loop is not None and not self._wake_pending:  # may be called from another thread
            self._wake_pending = True
            self._loop.call_soon_threadsafe(self._wake_waiters)

    def _wake_waiters(self) -> None:
        self._wake_pending = False
        self._released.set()
        self._released = asyncio.Event()

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            self.sweep()

    def cut(self, session_id: str | None = None) -> int:
        """Drop live data channels (one session's, or all) without a close frame; returns how many."""
        cut = 0
        for session in self._sessions.values():
            if session_id is None or session.credentials.session_id == session_id:
                for connection in list(session.connections):
                    connection.transport.abort()
                    cut += 1
        return cut

    async def _serve_connection(self, connection: ServerConnection) -> None:
        session = await self._authenticate(connection)
        if session is None:
            return
        session.connections.add(connection)
        session_id = session.credentials.session_id
        transport: Transport = (
            FaultyTransport(connection, self.faults, self.injected) if self.faults else connection
        )
        ended = False
        try:
            if not await self._wait_for_worker(session, connection):
                return
            async with DataChannel(
                transport,
                sends=MessageType.OUTPUT_STREAM_DATA,
                limits=self._limits,
                name=f"peer:{session_id}",
            ) as channel:
                ended = await self._run_session(session, channel)
        finally:
            session.connections.discard(connection)
            if ended:
                self._release(session_id, "ended")
            elif session_id in self._sessions:
                # The client went away without the session ending: it keeps its worker until it times
                # out or is terminated, as the agent keeps it.
                session.state = "abandoned"
                session.abandoned_at = self._clock()

    async def _wait_for_worker(self, session: _Session, connection: ServerConnection) -> bool:
        """Hold a session over the target's limit until a worker frees; False if it ended meanwhile."""
        if not self._holds_worker(session):
            logger.warning(
                "session waits for a worker: the target is at its session limit",
                extra={"session_id": session.credentials.session_id, "limit": self._session_limit},
            )
        closed = asyncio.ensure_future(connection.wait_closed())
        try:
            while not self._holds_worker(session):
                if session.credentials.session_id not in self._sessions or closed.done():
                    return False
                waiter = asyncio.ensure_future(self._released.wait())
                await asyncio.wait({waiter, closed}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
            return session.credentials.session_id in self._sessions
        finally:
            closed.cancel()

    async def _authenticate(self, connection: ServerConnection) -> _Session | None:
        path = connection.request.path if connection.request else ""
        session_id = path.split("?", 1)[0].removeprefix(PATH_PREFIX)
        session = self._sessions.get(session_id) if path.startswith(PATH_PREFIX) else None
        try:
            opening = await asyncio.wait_for(connection.recv(), OPEN_TIMEOUT)
            token = json.loads(opening).get("TokenValue") if isinstance(opening, str) else None
        except (TimeoutError, ConnectionClosed, ValueError, AttributeError):
            token = None
        if session is not None and session.state == "issued":
            self.sweep()  # an expired token is refused, not merely late
            session = self._sessions.get(session.credentials.session_id)
        if (
            session is None
            or session.state != "issued"
            or not token
            or not secrets.compare_digest(str(token), session.credentials.token_value)
        ):
            logger.warning("refused data channel", extra={"path": path})
            await connection.close(1008, "invalid session or token")
            return None
        session.state = "open"
        return session

    async def _run_session(self, session: _Session, channel: DataChannel) -> bool:
        """Serve the session's one data channel; True if the session ended (not just its client left)."""
        session_id = session.credentials.session_id
        if session.handshake:
            refusal = await self._handshake(session, channel)
            if refusal is not None:
                await channel.send_unsequenced(channel_closed(session_id, refusal))
                return True
        async with _PtyProcess(session.command, session.env, session.cwd) as process:
            output = asyncio.create_task(self._pump_output(process, channel))
            input_ = asyncio.create_task(self._pump_input(process, channel))
            done, _ = await asyncio.wait({output, input_}, return_when=asyncio.FIRST_COMPLETED)
            input_.cancel()
            idle_cut = input_ in done and not input_.cancelled() and input_.result()
            if output in done or idle_cut:
                output.cancel()
                await channel.drain(DRAIN_TIMEOUT)
                await channel.send_unsequenced(
                    channel_closed(session_id, IDLE_CUT_MESSAGE if idle_cut else "")
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(channel.close(), DRAIN_TIMEOUT)
                logger.info("session over", extra={"session_id": session_id, "idle_cut": bool(idle_cut)})
                return True
            output.cancel()
            logger.info("client went away", extra={"session_id": session_id})
            return False

    async def _handshake(self, session: _Session, channel: DataChannel) -> str | None:
        """Run the agent's handshake; returns why the session was refused, or None."""
        started = time.monotonic_ns()
        await channel.send(
            PayloadType.HANDSHAKE_REQUEST,
            handshake_request(AGENT_VERSION, "InteractiveCommands", session.kms_key_id),
        )
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT):
                while (message := await channel.receive()).payload_type != PayloadType.HANDSHAKE_RESPONSE:
                    logger.debug("discarding input during handshake", extra={"type": message.payload_type})
        except TimeoutError:
            return "handshake timed out"
        except ChannelDropped:
            return "client went away during the handshake"
        try:
            response: Any = message.payload_json()
            actions = {a["ActionType"]: a for a in response["ProcessedClientActions"]}
        except (FrameError, KeyError, TypeError) as error:
            return f"malformed HandshakeResponse: {error}"
        requested = {"SessionType"} | ({"KMSEncryption"} if session.kms_key_id else set())
        failed = [
            f"{name}: {actions.get(name, {}).get('Error') or 'not processed'}"
            for name in sorted(requested)
            if actions.get(name, {}).get("ActionStatus") != ActionStatus.SUCCESS
        ]
        if failed:
            return "handshake failed: " + "; ".join(failed)
        await channel.send(PayloadType.HANDSHAKE_COMPLETE, handshake_complete(time.monotonic_ns() - started))
        return None

    async def _pump_output(self, process: _PtyProcess, channel: DataChannel) -> None:
        """Send the PTY's output in messages of at most ``chunk_size`` bytes, as the agent does.

        The PTY is read in larger blocks than the messages it is cut into: one read (and one wait for
        readiness) per message would cost more than the message itself during a flood. The window still
        bounds what is read, because nothing more is read until the whole block has been sent.
        """
        held = b""
        while block := await process.read(READ_SIZE):
            data = held + block
            boundary = utf8_boundary(data)
            held = data[boundary:]
            for message in _messages(data[:boundary], self._chunk_size):
                await channel.send(PayloadType.OUTPUT, message)
        if held:
            await channel.send(PayloadType.OUTPUT, held)

    async def _pump_input(self, process: _PtyProcess, channel: DataChannel) -> bool:
        """Apply client input until the client goes away (False) or stays quiet too long (True)."""
        while True:
            try:
                message = await asyncio.wait_for(channel.receive(), self._idle_timeout)
            except TimeoutError:
                return True
            except ChannelDropped:
                return False
            if message.payload_type == PayloadType.OUTPUT:
                await process.write(message.payload)
            elif message.payload_type == PayloadType.SIZE:
                try:
                    process.resize(*parse_size(message.payload))
                except FrameError as error:
                    logger.warning("ignoring bad Size message", extra={"error": str(error)})


def _messages(data: bytes, size: int) -> Iterator[bytes]:
    """``data`` cut into pieces of at most ``size`` bytes, none of which ends inside a UTF-8 character."""
    start = 0
    while start < len(data):
        piece = data[start : start + size]
        if start + size < len(data):
            piece = piece[: utf8_boundary(piece) or size]  # a "character" longer than size: cut it anyway
        yield piece
        start += len(piece)


def utf8_boundary(data: bytes) -> int:
    """Length of the longest prefix of ``data`` that does not end inside a UTF-8 character."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:  # the first byte of the last character
            needed = (
                2 if byte >> 5 == 0b110 else 3 if byte >> 4 == 0b1110 else 4 if byte >> 3 == 0b11110 else 1
            )
            return len(data) if back >= needed else len(data) - back
    return len(data)


class _PtyProcess:
    """A command on a new pseudo-terminal, with non-blocking reads and writes on the asyncio loop."""

    def __init__(self, command: Sequence[str], env: Mapping[str, str], cwd: str | None) -> None:
        self._command = list(command)
        # The agent's defaults (SSM_PROTOCOL.md §6), under whatever the caller sets.
        self._env = {**os.environ, "TERM": "xterm-256color", **env}
        self._env.setdefault("LANG", "C.UTF-8")
        self._cwd = cwd
        self._master = -1
        self._process: subprocess.Popen[bytes] | None = None

    async def __aenter__(self) -> _PtyProcess:
        master, slave = os.openpty()
        try:
            self._set_size(slave, 24, 80)
            self._process = subprocess.Popen(
                self._command,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                env=self._env,
                cwd=self._cwd,
                start_new_session=True,
                preexec_fn=_take_controlling_terminal,
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        self._master = master
        logger.info("started command", extra={"command": self._command, "pid": self._process.pid})
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        process = self._process
        assert process is not None
        if process.poll() is None:
            # Closing the master hangs up the terminal; tmux clients detach, shells exit.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGHUP)
        os.close(self._master)
        try:
            await asyncio.wait_for(asyncio.to_thread(process.wait), HANGUP_GRACE)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await asyncio.to_thread(process.wait)

    async def read(self, size: int) -> bytes:
        """Up to ``size`` bytes of output; b"" once every process has closed the terminal."""
        while True:
            try:
                return os.read(self._master, size)
            except BlockingIOError:
                await wait_readable(self._master)
            except OSError as error:
                if error.errno == errno.EIO:  # Linux: the slave side is closed
                    return b""
                raise

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self._master, view) :]
            except BlockingIOError:
                await wait_writable(self._master)

    def resize(self, rows: int, cols: int) -> None:
        self._set_size(self._master, rows, cols)

    @staticmethod
    def _set_size(fd: int, rows: int, cols: int) -> None:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _take_controlling_terminal() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
