"""Fault injection between a data channel and its WebSocket, for tests of the recovery rules.

The acknowledgement and resend rules only matter when the relay misbehaves, which a loopback socket never
does. :class:`FaultyTransport` makes it misbehave on purpose -- drop, duplicate, reorder and delay frames in
both directions, or cut the connection without a close frame -- with a seeded random generator so that a
failing test can be replayed. ``channel_closed`` is exempt: the service delivers it outside the sequence
and nothing would ever resend it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter, deque
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.connection import Connection

logger = logging.getLogger(__name__)

_EXEMPT_TYPE = b"channel_closed"


@dataclass(frozen=True)
class FaultPlan:
    """Probabilities per binary frame, applied to frames the peer sends and frames it receives."""

    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    delay: float = 0.0
    delay_seconds: float = 0.05
    close_after: int | None = None
    """Cut the connection abruptly (no close frame) after this many frames sent by the peer."""
    seed: int | None = 0

    def __post_init__(self) -> None:
        for name in ("drop", "duplicate", "reorder", "delay"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"FaultPlan.{name} must be a probability in [0, 1), got {value}")


class FaultyTransport:
    """A :class:`cloudide.transport.channel.Transport` over a websockets connection, with faults."""

    def __init__(self, connection: Connection, plan: FaultPlan, injected: Counter[str] | None = None) -> None:
        self._connection = connection
        self.injected = injected if injected is not None else Counter()
        self._plan = plan
        self._random = random.Random(plan.seed)
        self._held_outgoing: bytes | None = None
        self._incoming: deque[bytes | str] = deque()
        self._held_incoming: bytes | None = None
        self._sent = 0
        self._background: set[asyncio.Task[None]] = set()

    def _roll(self, probability: float, fault: str) -> bool:
        if probability > 0 and self._random.random() < probability:
            self.injected[fault] += 1
            return True
        return False

    async def send(self, message: bytes | str) -> None:
        if isinstance(message, str) or message[4 : 4 + len(_EXEMPT_TYPE)] == _EXEMPT_TYPE:
            await self._connection.send(message)
            return
        plan = self._plan
        self._sent += 1
        if plan.close_after is not None and self._sent > plan.close_after:
            logger.info("fault: cutting the connection", extra={"frames_sent": self._sent - 1})
            self.injected["cut"] += 1
            self.abort()
            return
        if self._roll(plan.drop, "drop"):
            return
        if self._roll(plan.delay, "delay"):
            self._spawn(self._send_later(message, plan.delay_seconds))
            return
        if self._held_outgoing is None and self._roll(plan.reorder, "reorder"):
            self._held_outgoing = message
            self._spawn(self._flush_held(plan.delay_seconds))  # in case no later frame overtakes it
            return
        await self._connection.send(message)
        if self._held_outgoing is not None:
            held, self._held_outgoing = self._held_outgoing, None
            await self._connection.send(held)
        if self._roll(plan.duplicate, "duplicate"):
            await self._connection.send(message)

    async def recv(self) -> bytes | str:
        plan = self._plan
        while not self._incoming:
            message = await self._connection.recv()
            if isinstance(message, str):
                self._incoming.append(message)
                break
            if self._roll(plan.drop, "drop"):
                continue
            if self._held_incoming is None and self._roll(plan.reorder, "reorder"):
                self._held_incoming = message
                continue
            self._incoming.append(message)
            if self._held_incoming is not None:
                self._incoming.append(self._held_incoming)
                self._held_incoming = None
            if self._roll(plan.duplicate, "duplicate"):
                self._incoming.append(message)
        return self._incoming.popleft()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        for task in self._background:
            task.cancel()
        await self._connection.close(code, reason)

    def abort(self) -> None:
        """Drop the TCP connection without a WebSocket close frame, like a cut network path."""
        self._connection.transport.abort()

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _send_later(self, message: bytes, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self._send_quietly(message)

    async def _flush_held(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        if self._held_outgoing is not None:
            held, self._held_outgoing = self._held_outgoing, None
            await self._send_quietly(held)

    async def _send_quietly(self, message: bytes) -> None:
        try:
            await self._connection.send(message)
        except Exception as error:  # the connection may be gone by now; a lost frame is the point anyway
            logger.debug("fault: late frame not sent", extra={"error": str(error)})
