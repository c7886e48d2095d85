"""A terminal over ECS Exec that survives the data channel going away.

ECS Exec cuts a session after 20 idle minutes, and networks drop WebSockets. The shell in the task is
persistent (``cloudide-shell`` re-attaches the same tmux session for every new exec), so the only thing a
client has to do to make a drop invisible is open a *new* data channel -- a new ``connect`` call, since
tokens are single-use -- and carry on. :class:`TerminalConnection` does that behind a plain
send/recv/resize interface, so ``attach`` and the browser gateway share one implementation:

* per data channel: send the open-data-channel frame, answer the optional handshake (SessionType only;
  KMS encryption is refused with :class:`EncryptionNotSupported`), then send the terminal size and any
  keystrokes the previous channel never got acknowledged;
* between channels: retry ``connect`` with capped exponential backoff, and report the state
  (``connecting`` / ``open`` / ``reconnecting`` / ``closed``) for a UI indicator;
* the end: ``channel_closed`` means the shell exited, and :meth:`TerminalConnection.recv` raises
  :class:`SessionEnded`. A ``channel_closed`` that says the session timed out for inactivity is treated as a
  drop instead, because the shell behind it is still running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from websockets.asyncio.client import connect as websocket_connect
from websockets.exceptions import InvalidURI

from cloudide.transport.channel import ChannelDropped, ChannelLimits, DataChannel
from cloudide.transport.protocol import (
    ActionStatus,
    ClientMessage,
    FrameError,
    MessageType,
    PayloadType,
    handshake_response,
    open_data_channel,
    processed_action,
    size_payload,
)

logger = logging.getLogger(__name__)

ConnectionState = Literal["connecting", "open", "reconnecting", "closed"]

SUPPORTED_SESSION_TYPES = frozenset({"Standard_Stream", "InteractiveCommands", "NonInteractiveCommands"})
# Payload types that belong to the handshake and never reach the terminal.
_HANDSHAKE_TYPES = frozenset(
    {PayloadType.HANDSHAKE_REQUEST, PayloadType.HANDSHAKE_COMPLETE, PayloadType.ENC_CHALLENGE_REQUEST}
)
_IDLE_MARKERS = ("inactivity", "idle", "timed out")


@dataclass(frozen=True)
class ExecCredentials:
    """What ECS ``ExecuteCommand`` returns as ``session`` (and the REST API's connect endpoint relays)."""

    session_id: str
    stream_url: str
    token_value: str

    def to_json(self) -> dict[str, str]:
        """The shape ExecuteCommand (and the connect endpoint) answer with: what :meth:`from_json` reads."""
        return {"sessionId": self.session_id, "streamUrl": self.stream_url, "tokenValue": self.token_value}

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> ExecCredentials:
        try:
            return cls(str(document["sessionId"]), str(document["streamUrl"]), str(document["tokenValue"]))
        except KeyError as missing:
            raise ValueError(
                f"exec session is missing {missing}; expected sessionId, streamUrl, tokenValue"
            ) from None


Connector = Callable[[], Awaitable[ExecCredentials]]
"""Returns fresh credentials for a new data channel (tokens are single-use). It raises a
:class:`TransportError` for failures that retrying cannot fix; any other exception is retried."""


class TransportError(Exception):
    """The terminal cannot continue; the message says why."""


class SessionEnded(TransportError):
    """The agent ended the session (the shell exited)."""

    def __init__(self, session_id: str, output: str = "") -> None:
        self.session_id = session_id
        self.output = output
        super().__init__(
            f"SessionId: {session_id} : {output}"
            if output
            else f"Exiting session with sessionId: {session_id}."
        )


class EncryptionNotSupported(TransportError):
    """The agent asked for KMS encryption of the session, which this client does not implement."""


class ConnectFailed(TransportError):
    """No data channel could be opened (after retries, or for a reason retries cannot fix)."""


@dataclass(frozen=True)
class Timeouts:
    connect: float = 30.0
    """The connector call plus the WebSocket opening handshake."""
    first_message: float = 2.0
    """How long to wait for the agent's first message before assuming there is no handshake."""
    handshake: float = 20.0
    """HandshakeRequest to HandshakeComplete (the agent itself gives up after 15 s)."""
    keepalive_interval: float = 20.0
    keepalive_timeout: float = 20.0
    close: float = 5.0


@dataclass(frozen=True)
class ReconnectPolicy:
    """Capped exponential backoff, as the AWS plugin retries opening its data channel."""

    attempts: int = 5
    """Consecutive failures (connect errors, or channels that died before the agent said anything)."""
    first_delay: float = 0.1
    max_delay: float = 5.0

    def delay(self, failures: int) -> float:
        return min(self.max_delay, self.first_delay * (2 ** (failures - 1)) * (1 + random.random()))


class _Reconnect(Exception):
    """Internal: the data channel has to be replaced (it dropped, or the session was cut for inactivity)."""


class TerminalConnection:
    """An interactive terminal over successive ECS Exec data channels."""

    def __init__(
        self,
        connect: Connector,
        *,
        rows: int = 24,
        cols: int = 80,
        timeouts: Timeouts | None = None,
        reconnect: ReconnectPolicy | None = None,
        limits: ChannelLimits | None = None,
        output_buffer: int = 256,
        on_state: Callable[[ConnectionState], None] | None = None,
    ) -> None:
        size_payload(rows, cols)  # validates
        self._connect = connect
        self._size = (rows, cols)
        self.timeouts = timeouts or Timeouts()
        self.reconnect = reconnect or ReconnectPolicy()
        self._limits = limits or ChannelLimits()
        self._on_state = on_state
        self._client_id = str(uuid.uuid4())
        self._output: asyncio.Queue[bytes | TransportError] = asyncio.Queue(output_buffer)
        self._channel: DataChannel | None = None
        self._ready = asyncio.Event()
        self._failure: TransportError | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self.state: ConnectionState = "closed"
        self.session_id: str | None = None
        self.channels_opened = 0

    async def __aenter__(self) -> TerminalConnection:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def start(self) -> None:
        if self._supervisor is not None:
            raise RuntimeError("TerminalConnection already started")
        self._supervisor = asyncio.create_task(self._supervise(), name="terminal-connection")

    async def wait_open(self, timeout: float) -> None:
        """Wait until a data channel is in terminal mode (or raise why it never will be)."""
        await asyncio.wait_for(self._ready.wait(), timeout)
        if self._failure is not None:
            raise self._failure

    async def send(self, data: bytes) -> None:
        """Send keystrokes; waits while reconnecting (unacknowledged ones are replayed on the new channel)."""
        if not data:
            return
        while True:
            await self._ready.wait()
            if self._failure is not None:
                raise self._failure
            channel = self._channel
            if channel is None:
                continue
            with contextlib.suppress(ChannelDropped):
                await channel.send(PayloadType.OUTPUT, data)
                return
            await asyncio.sleep(0.01)  # the supervisor clears _ready once it sees the drop

    async def resize(self, rows: int, cols: int) -> None:
        payload = size_payload(rows, cols)
        self._size = (rows, cols)
        channel = self._channel
        if channel is not None and self._ready.is_set():
            with contextlib.suppress(ChannelDropped):  # the next channel starts with the current size
                await channel.send(PayloadType.SIZE, payload)

    async def recv(self) -> bytes:
        """The next chunk of terminal output, in order; raises :class:`TransportError` at the end."""
        item = await self._output.get()
        if isinstance(item, TransportError):
            self._output.put_nowait(item)
            raise item
        return item

    async def close(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        if self._failure is None or self.state != "closed":
            self._finish(self._failure or TransportError("the terminal connection was closed"))

    def _set_state(self, state: ConnectionState) -> None:
        if state == self.state:
            return
        self.state = state
        logger.info("terminal connection state", extra={"state": state, "session_id": self.session_id})
        if self._on_state is not None:
            self._on_state(state)

    def _finish(self, failure: TransportError) -> None:
        """Closed locally: unread output is of no use any more, but recv() callers must learn of the end."""
        self._failure = failure
        self._channel = None
        self._ready.set()  # wakes senders so they see the failure
        while True:
            try:
                self._output.put_nowait(failure)
                break
            except asyncio.QueueFull:
                self._output.get_nowait()
        self._set_state("closed")

    async def _supervise(self) -> None:
        failures = 0
        replay: list[bytes] = []
        try:
            while True:
                self._set_state("connecting" if self.channels_opened == 0 else "reconnecting")
                try:
                    channel = await self._open_channel()
                except TransportError:
                    raise
                except Exception as error:
                    failures += 1
                    logger.warning(
                        "could not open a data channel",
                        extra={"attempt": failures, "error": f"{type(error).__name__}: {error}"},
                    )
                    if failures >= self.reconnect.attempts:
                        raise ConnectFailed(
                            f"could not open a data channel after {failures} attempts: {error}"
                        ) from error
                    await asyncio.sleep(self.reconnect.delay(failures))
                    continue
                try:
                    await self._run_channel(channel, replay)
                finally:
                    self._ready.clear()
                    self._channel = None
                    replay = [
                        m.payload for m in channel.unacknowledged() if m.payload_type == PayloadType.OUTPUT
                    ]
                    await channel.close()
                failures = 0 if channel.counters.received else failures + 1
                if failures >= self.reconnect.attempts:
                    raise ConnectFailed(f"{failures} data channels in a row closed before the agent answered")
                if failures:
                    await asyncio.sleep(self.reconnect.delay(failures))
                logger.info("reconnecting", extra={"session_id": self.session_id, "replay": len(replay)})
        except TransportError as failure:
            self._failure = failure
            self._ready.set()  # wakes senders so they see the failure
            await self._output.put(failure)  # behind the output already received: the shell's last words
            self._set_state("closed")

    async def _open_channel(self) -> DataChannel:
        async with asyncio.timeout(self.timeouts.connect):
            credentials = await self._connect()
            self.session_id = credentials.session_id
            try:
                connection = await websocket_connect(
                    credentials.stream_url,
                    ping_interval=self.timeouts.keepalive_interval,
                    ping_timeout=self.timeouts.keepalive_timeout,
                    close_timeout=self.timeouts.close,
                    max_size=2**20,
                    compression=None,
                )
            except InvalidURI as error:
                raise ConnectFailed(f"invalid stream URL {credentials.stream_url!r}: {error}") from error
            try:
                await connection.send(open_data_channel(credentials.token_value, self._client_id))
            except BaseException:
                await connection.close()
                raise
        self.channels_opened += 1
        channel = DataChannel(
            connection,
            sends=MessageType.INPUT_STREAM_DATA,
            limits=self._limits,
            name=f"client:{credentials.session_id}",
        )
        channel.start()
        return channel

    async def _run_channel(self, channel: DataChannel, replay: list[bytes]) -> None:
        """Serve one data channel until it has to be replaced; raises :class:`TransportError` at the end."""
        try:
            await self._serve_channel(channel, replay)
        except ChannelDropped as error:
            logger.info("data channel dropped", extra={"session_id": self.session_id, "reason": str(error)})
        except FrameError as error:
            logger.warning(
                "unusable message from the agent", extra={"session_id": self.session_id, "error": str(error)}
            )

    async def _serve_channel(self, channel: DataChannel, replay: list[bytes]) -> None:
        loop = asyncio.get_running_loop()
        started = False
        handshake_deadline: float | None = None
        first_deadline = loop.time() + self.timeouts.first_message
        while True:
            if handshake_deadline is not None:
                timeout: float | None = handshake_deadline - loop.time()
            elif not started:
                timeout = first_deadline - loop.time()
            else:
                timeout = None
            try:
                # In terminal mode there is no deadline, and this runs once per output message.
                message = await (
                    channel.receive() if timeout is None else asyncio.wait_for(channel.receive(), timeout)
                )
            except TimeoutError:
                if handshake_deadline is not None:
                    logger.warning("handshake timed out", extra={"session_id": self.session_id})
                    return
                await self._start_terminal(channel, replay)
                started = True
                continue
            if message.message_type is MessageType.CHANNEL_CLOSED:
                self._channel_closed(message)
                return  # an idle cut: the shell is still there, reconnect
            payload_type = message.payload_type
            if payload_type == PayloadType.HANDSHAKE_REQUEST:
                handshake_deadline = loop.time() + self.timeouts.handshake
                await self._answer_handshake(channel, message)
            elif payload_type == PayloadType.HANDSHAKE_COMPLETE:
                handshake_deadline = None
                await self._handshake_complete(message)
                # Again if it had started on the first-message timeout: the agent discarded that size.
                await self._start_terminal(channel, replay)
                started = True
            elif payload_type == PayloadType.ENC_CHALLENGE_REQUEST:
                raise EncryptionNotSupported(
                    "the agent sent a KMS encryption challenge; KMS is not supported"
                )
            else:
                if not started and handshake_deadline is None:
                    await self._start_terminal(channel, replay)
                    started = True
                if message.payload:
                    await self._output.put(message.payload)

    async def _start_terminal(self, channel: DataChannel, replay: list[bytes]) -> None:
        """Terminal mode: the size first, then input the previous channel may have lost."""
        rows, cols = self._size
        await channel.send(PayloadType.SIZE, size_payload(rows, cols))
        while replay:
            await channel.send(PayloadType.OUTPUT, replay.pop(0))
        self._channel = channel
        self._ready.set()
        self._set_state("open")

    def _channel_closed(self, message: ClientMessage) -> None:
        try:
            content = message.payload_json()
        except FrameError:
            content = {}
        output = str(content.get("Output") or "") if isinstance(content, dict) else ""
        session_id = (
            str(content.get("SessionId") or self.session_id or "") if isinstance(content, dict) else ""
        )
        if any(marker in output.lower() for marker in _IDLE_MARKERS):
            logger.info("session cut for inactivity; reconnecting", extra={"session_id": session_id})
            return
        raise SessionEnded(session_id, output)

    async def _answer_handshake(self, channel: DataChannel, request: ClientMessage) -> None:
        content = request.payload_json()
        actions = content.get("RequestedClientActions") or [] if isinstance(content, dict) else []
        processed = []
        refusal: TransportError | None = None
        for action in actions:
            action_type = str(action.get("ActionType", ""))
            parameters = action.get("ActionParameters") or {}
            if action_type == "SessionType":
                session_type = str(parameters.get("SessionType", ""))
                if session_type in SUPPORTED_SESSION_TYPES:
                    processed.append(processed_action(action_type, ActionStatus.SUCCESS))
                else:
                    error = f"session type {session_type!r} is not a terminal session"
                    processed.append(processed_action(action_type, ActionStatus.FAILED, error))
                    refusal = ConnectFailed(error)
            elif action_type == "KMSEncryption":
                key = parameters.get("KMSKeyId", "?")
                error = (
                    f"the session requires KMS encryption (key {key}), which cloudide does not support; "
                    "remove the KMS key from the cluster's executeCommandConfiguration"
                )
                processed.append(processed_action(action_type, ActionStatus.FAILED, error))
                refusal = EncryptionNotSupported(error)
            else:
                processed.append(
                    processed_action(
                        action_type, ActionStatus.UNSUPPORTED, f"Unsupported action {action_type}"
                    )
                )
        # Answer even when refusing, so the agent ends the session now rather than after its 15 s timeout.
        await channel.send(
            PayloadType.HANDSHAKE_RESPONSE,
            handshake_response(processed, [refusal.args[0]] if refusal else None),
        )
        if refusal is not None:
            await channel.drain(self.timeouts.close)
            raise refusal

    async def _handshake_complete(self, message: ClientMessage) -> None:
        content = message.payload_json()
        customer_message = str(content.get("CustomerMessage") or "") if isinstance(content, dict) else ""
        if customer_message:
            await self._output.put(customer_message.encode() + b"\r\n")


__all__ = [
    "ConnectFailed",
    "ConnectionState",
    "Connector",
    "EncryptionNotSupported",
    "ExecCredentials",
    "ReconnectPolicy",
    "SessionEnded",
    "TerminalConnection",
    "Timeouts",
    "TransportError",
]
