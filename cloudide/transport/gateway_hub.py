"""One upstream terminal per session, fanned out to every browser watching it.

Why a hub: a second tab, or a colleague given a read-only link, must see the same shell without a
second data channel, and a slow browser must never make the gateway buffer without limit. So each
viewer gets a byte-bounded outbox; when a viewer falls behind by more than its budget its backlog is
dropped and replaced by a *resync*: the bounded scrollback (the last output, 64 KiB by default)
replayed into a reset terminal, which is also what a late joiner gets first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from cloudide.transport.client import (
    ConnectionState,
    Connector,
    SessionEnded,
    TerminalConnection,
    Timeouts,
    TransportError,
)
from cloudide.transport.sessions_api import UNAVAILABLE_CLOSE_CODE, ApiRejected, SessionRead

logger = logging.getLogger(__name__)

CLOSE_SESSION_ENDED = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_VIEWER_TIMEOUT = 4408


@dataclass(frozen=True)
class HubLimits:
    """Memory and time bounds of one session's fan-out."""

    scrollback_bytes: int = 64 * 1024
    viewer_backlog_bytes: int = 256 * 1024
    # One WebSocket frame per flush; coalescing small chunks is what keeps throughput up.
    frame_bytes: int = 64 * 1024
    # A browser that cannot take one frame in this long is gone; close it rather than wait forever.
    send_timeout_s: float = 30.0
    # Keep the upstream this long after the last viewer leaves, so a page reload does not reconnect.
    linger_s: float = 5.0
    # How long the viewers' last word waits for the session's record once the shell has ended.
    read_timeout_s: float = 5.0


def control(message_type: str, **fields: object) -> str:
    """A JSON control message for the browser (see the message format in ``gateway``)."""
    return json.dumps({"type": message_type, **fields}, separators=(",", ":"))


class Scrollback:
    """The last ``limit`` bytes of output, trimmed at a line start when one is near."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._data = bytearray()

    def append(self, chunk: bytes) -> None:
        self._data += chunk
        excess = len(self._data) - self._limit
        if excess > 0:
            # Starting the replay at a line start avoids replaying half an escape sequence or character.
            newline = self._data.find(b"\n", excess, excess + 4096)
            del self._data[: newline + 1 if newline >= 0 else excess]

    def snapshot(self) -> bytes:
        return bytes(self._data)


class Viewer:
    """One browser's WebSocket, with a bounded outbox drained by :meth:`pump`."""

    def __init__(
        self, websocket: ServerConnection, *, read_only: bool, limits: HubLimits, greeting: str | None = None
    ) -> None:
        self.websocket = websocket
        self.read_only = read_only
        self._limits = limits
        self._outbox: deque[bytes | str] = deque([greeting] if greeting else [])
        self._backlog = len(greeting) if greeting else 0
        self._resync = True  # a viewer starts with the scrollback replay
        self._wake = asyncio.Event()
        self._wake.set()
        self.resyncs = 0

    @property
    def backlog_bytes(self) -> int:
        """Bytes queued for this viewer and not yet handed to its socket (never above the budget)."""
        return self._backlog

    def offer(self, item: bytes | str) -> None:
        """Queue output or a control message without ever waiting; overflow turns into a resync."""
        size = len(item)
        if self._resync:
            return  # the coming replay already holds this output (and state is re-sent after it)
        if self._backlog + size > self._limits.viewer_backlog_bytes:
            logger.info(
                "viewer fell behind; dropping its backlog for a resync", extra={"backlog": self._backlog}
            )
            self._outbox.clear()
            self._backlog = 0
            self._resync = True
            self.resyncs += 1
        else:
            self._outbox.append(item)
            self._backlog += size
        self._wake.set()

    async def pump(self, scrollback: Scrollback, current_state: Callable[[], str]) -> None:
        """Send queued items until the socket closes; raises ``TimeoutError`` if a send stalls."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._outbox and isinstance(self._outbox[0], str):
                await self._send(self._take_frame())  # the greeting, ahead of the first replay
            if self._resync:
                # Snapshot and clear with no await in between: nothing is lost or sent twice.
                self._resync = False
                replay = scrollback.snapshot()
                await self._send(control("resync"))
                if replay:
                    await self._send(replay)
                await self._send(control("state", state=current_state()))
            while self._outbox and not self._resync:
                await self._send(self._take_frame())

    def _take_frame(self) -> bytes | str:
        item = self._outbox.popleft()
        self._backlog -= len(item)
        if isinstance(item, str):
            return item
        frame = bytearray(item)
        while self._outbox:
            following = self._outbox[0]
            if not isinstance(following, bytes) or len(frame) + len(following) > self._limits.frame_bytes:
                break
            self._outbox.popleft()
            self._backlog -= len(following)
            frame += following
        return bytes(frame)

    async def _send(self, message: bytes | str) -> None:
        async with asyncio.timeout(self._limits.send_timeout_s):
            await self.websocket.send(message)


class SessionHub:
    """The shared upstream of one session on this gateway and the viewers attached to it."""

    def __init__(self, session_id: str, limits: HubLimits, on_finished: Callable[[SessionHub], None]) -> None:
        self.session_id = session_id
        self.limits = limits
        self.viewers: set[Viewer] = set()
        self.state = "connecting"
        self.scrollback = Scrollback(limits.scrollback_bytes)
        # SHA-256 digests of bearer tokens the API accepted for this session: they may join without
        # another connect call.
        self.accepted_tokens: set[bytes] = set()
        self.lock = asyncio.Lock()  # serialises starting the upstream and admitting viewers
        self._on_finished = on_finished
        self._upstream: TerminalConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._linger: asyncio.TimerHandle | None = None
        self._read_session: SessionRead | None = None
        self._finished = False

    @property
    def started(self) -> bool:
        return self._upstream is not None

    @property
    def finished(self) -> bool:
        return self._finished

    async def start(
        self,
        connector: Connector,
        *,
        rows: int,
        cols: int,
        timeout_s: float,
        read_session: SessionRead | None = None,
    ) -> None:
        """Open the upstream; ``connector`` is called now and again on every transparent reconnect.

        With ``read_session``, the end of the session is followed by an ``ended`` message telling the
        viewers what became of it and why (the record's ``status`` and ``statusReason``).
        Raises what kept the first data channel from opening (``ApiRejected`` for an API refusal).
        """
        upstream = TerminalConnection(
            connector, rows=rows, cols=cols, timeouts=Timeouts(connect=timeout_s), on_state=self._set_state
        )
        upstream.start()
        try:
            await upstream.wait_open(timeout_s)
        except BaseException:
            await upstream.close()
            raise
        self._upstream = upstream
        self._read_session = read_session
        self._reader = asyncio.create_task(self._read_upstream(), name=f"gateway-upstream-{self.session_id}")

    def attach(self, viewer: Viewer) -> None:
        """Add a viewer; callers check :attr:`finished` first, with no await in between."""
        assert not self._finished, "attach to a finished hub"
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        self.viewers.add(viewer)
        logger.info(
            "viewer joined",
            extra={
                "session_id": self.session_id,
                "read_only": viewer.read_only,
                "viewers": len(self.viewers),
            },
        )

    def detach(self, viewer: Viewer) -> None:
        self.viewers.discard(viewer)
        logger.info("viewer left", extra={"session_id": self.session_id, "viewers": len(self.viewers)})
        if not self.viewers and not self._finished:
            loop = asyncio.get_running_loop()
            self._linger = loop.call_later(self.limits.linger_s, self._close_if_unwatched)

    async def send_input(self, viewer: Viewer, data: bytes) -> None:
        if viewer.read_only or self._upstream is None:
            return
        await self._upstream.send(data)

    async def resize(self, viewer: Viewer, rows: int, cols: int) -> None:
        """The latest writable viewer to resize sets the PTY size; read-only viewers never do."""
        if viewer.read_only or self._upstream is None:
            return
        await self._upstream.resize(rows, cols)

    async def close(self, code: int = CLOSE_GOING_AWAY, reason: str = "gateway shutting down") -> None:
        """Close the upstream and every viewer; idempotent."""
        if self._finished:
            return
        self._finished = True
        if self._linger is not None:
            self._linger.cancel()
        if self._reader is not None and self._reader is not asyncio.current_task():
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._upstream is not None:
            with contextlib.suppress(Exception):
                await self._upstream.close()
        reason = reason.encode()[:123].decode(errors="ignore")  # the WebSocket limit for close reasons
        await asyncio.gather(
            *(viewer.websocket.close(code, reason) for viewer in list(self.viewers)), return_exceptions=True
        )
        self._on_finished(self)
        logger.info("session hub closed", extra={"session_id": self.session_id, "reason": reason})

    def _set_state(self, state: ConnectionState) -> None:
        if state == self.state:
            return
        self.state = state
        self._broadcast(control("state", state=state))

    def _broadcast(self, item: bytes | str) -> None:
        for viewer in self.viewers:
            viewer.offer(item)

    async def _read_upstream(self) -> None:
        assert self._upstream is not None
        code, reason = CLOSE_SESSION_ENDED, "session ended"
        try:
            while True:
                chunk = await self._upstream.recv()
                self.scrollback.append(chunk)
                self._broadcast(chunk)
        except SessionEnded:
            ended = True
        except ApiRejected as rejected:
            code, reason = rejected.close_code, rejected.message
            ended = rejected.status == HTTPStatus.CONFLICT  # the reconnect found the session not READY
        except TransportError as failure:
            logger.warning("upstream failed", extra={"session_id": self.session_id, "error": str(failure)})
            code, reason = UNAVAILABLE_CLOSE_CODE, str(failure)
            ended = False
        self._set_state("closed")
        if ended:
            await self._tell_fate()
        await self._drain_viewers()
        await self.close(code, reason)

    async def _tell_fate(self) -> None:
        """Tell the viewers what became of the session: READY (only the shell exited), or stopping and
        why. If the record cannot be read (the token expired, the API is down, or slow), they learn only
        that the terminal closed: the close must not wait on the API."""
        if self._read_session is None:
            return
        try:
            async with asyncio.timeout(self.limits.read_timeout_s):
                view = await self._read_session()
        except (TransportError, ConnectionError, TimeoutError) as error:
            logger.info(
                "could not read the ended session", extra={"session_id": self.session_id, "error": str(error)}
            )
            return
        self._broadcast(control("ended", status=view.get("status"), reason=view.get("statusReason") or ""))

    async def _drain_viewers(self) -> None:
        """Give viewers a moment to receive the last output before their sockets close."""
        deadline = asyncio.get_running_loop().time() + 2.0
        while any(viewer.backlog_bytes for viewer in self.viewers):
            if asyncio.get_running_loop().time() > deadline:
                return
            await asyncio.sleep(0.01)

    def _close_if_unwatched(self) -> None:
        self._linger = None
        if not self.viewers:
            asyncio.create_task(self.close(CLOSE_GOING_AWAY, "no viewers left"))  # noqa: RUF006


async def run_viewer(
    hub: SessionHub,
    viewer: Viewer,
    handle_message: Callable[[SessionHub, Viewer, bytes | str], Awaitable[None]],
) -> None:
    """Serve an attached ``viewer`` until its socket closes, the session ends, or a send stalls."""
    pump = asyncio.create_task(viewer.pump(hub.scrollback, lambda: hub.state))
    try:
        reader = asyncio.create_task(_read_viewer(hub, viewer, handle_message))
        done, _ = await asyncio.wait({pump, reader}, return_when=asyncio.FIRST_COMPLETED)
        reader.cancel()
        if pump in done and isinstance(pump.exception(), TimeoutError):
            await viewer.websocket.close(CLOSE_VIEWER_TIMEOUT, "browser too slow to receive output")
    finally:
        pump.cancel()
        hub.detach(viewer)


async def _read_viewer(
    hub: SessionHub,
    viewer: Viewer,
    handle_message: Callable[[SessionHub, Viewer, bytes | str], Awaitable[None]],
) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for message in viewer.websocket:
            await handle_message(hub, viewer, message)
