"""Reliable, in-order delivery over one data-channel WebSocket: sequence numbers, acks and resends.

The SSM relay between the client and the agent may lose, repeat or reorder messages, so both ends run the
same small protocol on top of the WebSocket (docs/ssm-protocol.md §4):

* every data message carries a per-direction sequence number starting at 0;
* the receiver acknowledges each one, delivers them strictly in order, parks early arrivals in a bounded
  out-of-order buffer, and *re-acknowledges* duplicates (a lost ack would otherwise make the sender resend
  forever);
* the sender keeps each message until it is acknowledged and resends it when no ack came within the
  retransmission timeout (RFC 6298 estimator, capped at 1 s) -- the relay never tells a sender that a
  message was lost, so a timer is the only way to find out.

Unlike the AWS client, whose outgoing buffer silently drops its oldest entry when full, the window here is
a hard bound that makes :meth:`DataChannel.send` wait: a fast producer (a PTY printing tens of MB) is
slowed down to what the far end acknowledges instead of losing data or growing memory without limit.

A :class:`DataChannel` lives exactly as long as its WebSocket. Reconnecting means a new data channel
(ECS Exec hands out a new session for every connect), so counters never carry over; callers that want
to replay unacknowledged input read :meth:`DataChannel.unacknowledged`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from websockets.exceptions import ConnectionClosed

from cloudide.transport.protocol import (
    ClientMessage,
    Flags,
    FrameError,
    MessageType,
    UnknownMessageType,
    acknowledged_sequence_number,
    acknowledgement,
    decode,
    encode,
)

logger = logging.getLogger(__name__)

MAX_RTO = 1.0
CLOCK_GRANULARITY = 0.010


class Transport(Protocol):
    """What a data channel needs from a WebSocket connection (``websockets`` connections qualify)."""

    async def send(self, message: bytes | str) -> None: ...

    async def recv(self) -> bytes | str: ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...


class ChannelDropped(ConnectionError):
    """The WebSocket under the data channel is gone; anything not acknowledged may not have arrived."""


class ChannelStalled(ChannelDropped):
    """The far end stopped acknowledging: the connection is treated as dead even though it is still open."""


@dataclass
class RetransmissionTimeout:
    """RFC 6298 round-trip estimator with the constants both AWS implementations use."""

    srtt: float = 0.1
    rttvar: float = 0.0
    rto: float = 0.2

    def observe(self, sample: float) -> None:
        self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - sample)
        self.srtt = 0.875 * self.srtt + 0.125 * sample
        self.rto = min(MAX_RTO, self.srtt + max(CLOCK_GRANULARITY, 4 * self.rttvar))


@dataclass
class _Unacknowledged:
    message: ClientMessage
    frame: bytes
    first_sent: float
    last_sent: float
    resent: bool = False


@dataclass(frozen=True)
class ChannelLimits:
    """Bounds and timers of a data channel; the defaults follow the AWS implementations where they exist."""

    window: int = 1024
    """Most sent-but-unacknowledged messages; :meth:`DataChannel.send` waits beyond it."""
    reorder_capacity: int = 4096
    """Most early (out-of-order) messages parked while a gap is resent."""
    inbox: int = 256
    """In-order messages delivered but not yet taken by :meth:`DataChannel.receive`."""
    resend_tick: float = 0.1
    """How often the resend timer looks for messages older than the RTO."""
    resends_per_tick: int = 64
    give_up_after: float | None = 60.0
    """A message unacknowledged this long means the connection is dead (None: never give up)."""


@dataclass
class _Counters:
    sent: int = 0
    resent: int = 0
    received: int = 0
    duplicates: int = 0
    rejected: int = 0


class DataChannel:
    """One side of a data channel over one WebSocket.

    ``sends`` is ``input_stream_data`` for the client and ``output_stream_data`` for the agent;
    :meth:`receive` yields the other side's sequenced messages in order, plus ``channel_closed``.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        sends: MessageType,
        limits: ChannelLimits | None = None,
        name: str = "data-channel",
    ) -> None:
        if sends not in (MessageType.INPUT_STREAM_DATA, MessageType.OUTPUT_STREAM_DATA):
            raise ValueError(f"a data channel sends input_stream_data or output_stream_data, not {sends}")
        self._transport = transport
        self._sends = sends
        self._receives = (
            MessageType.OUTPUT_STREAM_DATA
            if sends is MessageType.INPUT_STREAM_DATA
            else MessageType.INPUT_STREAM_DATA
        )
        self.limits = limits or ChannelLimits()
        self.name = name
        self.rto = RetransmissionTimeout()
        self.counters = _Counters()
        self._next_sequence = 0
        self._expected = 0
        self._unacknowledged: OrderedDict[int, _Unacknowledged] = OrderedDict()
        self._early: dict[int, ClientMessage] = {}
        self._inbox: asyncio.Queue[ClientMessage | None] = asyncio.Queue(self.limits.inbox)
        self._room = asyncio.Condition()
        self._failure: ChannelDropped | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> DataChannel:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._read_loop(), name=f"{self.name}-read"),
            asyncio.create_task(self._resend_loop(), name=f"{self.name}-resend"),
        ]

    @property
    def dropped(self) -> bool:
        return self._failure is not None

    async def send(self, payload_type: int, payload: bytes) -> ClientMessage:
        """Send one sequenced message, waiting while the window of unacknowledged messages is full.

        Raises :class:`ChannelDropped` if the connection was gone before the message was accepted; once
        accepted, a message stays in :meth:`unacknowledged` until its ack arrives.
        """
        if self._failure is None and len(self._unacknowledged) >= self.limits.window:
            async with self._room:
                await self._room.wait_for(
                    lambda: self._failure is not None or len(self._unacknowledged) < self.limits.window
                )
        if self._failure is not None:
            raise self._failure
        sequence = self._next_sequence
        self._next_sequence += 1
        flags = Flags.SYN if sequence == 0 and self._sends is MessageType.OUTPUT_STREAM_DATA else Flags.NONE
        message = ClientMessage(
            message_type=self._sends,
            sequence_number=sequence,
            payload=payload,
            payload_type=payload_type,
            flags=flags,
        )
        frame = encode(message)
        now = time.monotonic()
        self._unacknowledged[sequence] = _Unacknowledged(message, frame, now, now)
        self.counters.sent += 1
        await self._transmit(frame)
        return message

    async def send_unsequenced(self, message: ClientMessage) -> None:
        """Send a message outside the sequence (``channel_closed``): never acknowledged, never resent."""
        await self._transmit(encode(message))

    async def receive(self) -> ClientMessage:
        """The next in-order message from the far end; :class:`ChannelDropped` once the connection ends."""
        if self._inbox.empty() and self._failure is not None:
            raise self._failure
        message = await self._inbox.get()
        if message is None:
            self._inbox.put_nowait(None)  # keep reporting the end to later callers
            assert self._failure is not None
            raise self._failure
        return message

    def unacknowledged(self) -> list[ClientMessage]:
        """Messages sent (or accepted for sending) that the far end has not acknowledged, oldest first."""
        return [entry.message for entry in self._unacknowledged.values()]

    async def drain(self, timeout: float) -> bool:
        """Wait until everything sent is acknowledged; False on timeout or if the connection dropped."""
        async with self._room:
            try:
                await asyncio.wait_for(
                    self._room.wait_for(lambda: self._failure is not None or not self._unacknowledged),
                    timeout,
                )
            except TimeoutError:
                return False
        return not self._unacknowledged

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the WebSocket cleanly and stop the channel's tasks."""
        with contextlib.suppress(ConnectionClosed, OSError):
            await asyncio.wait_for(self._transport.close(code, reason), 5.0)
        await self._stop(ChannelDropped(f"{self.name}: closed locally"))

    async def _stop(self, failure: ChannelDropped) -> None:
        await self._fail(failure)
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        for task in self._tasks:
            if task is not current:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _fail(self, failure: ChannelDropped) -> None:
        if self._failure is not None:
            return
        self._failure = failure
        logger.info("data channel ended", extra={"channel": self.name, "reason": str(failure)})
        async with self._room:
            self._room.notify_all()
        # Wakes a receive() waiting on an empty inbox; a full inbox is drained first, then receive()
        # sees the failure itself.
        with contextlib.suppress(asyncio.QueueFull):
            self._inbox.put_nowait(None)

    async def _transmit(self, frame: bytes) -> None:
        if self._failure is not None:
            return
        try:
            await self._transport.send(frame)
        except (ConnectionClosed, OSError) as error:
            await self._fail(ChannelDropped(f"{self.name}: connection lost while sending ({error})"))

    async def _read_loop(self) -> None:
        try:
            while True:
                frame = await self._transport.recv()
                await self._handle_frame(frame.encode() if isinstance(frame, str) else frame)
        except (ConnectionClosed, OSError) as error:
            await self._fail(ChannelDropped(f"{self.name}: connection closed ({error})"))

    async def _handle_frame(self, frame: bytes) -> None:
        try:
            message = decode(frame)
        except UnknownMessageType as error:
            logger.info(
                "ignoring message of unknown type", extra={"channel": self.name, "type": error.message_type}
            )
            return
        except FrameError as error:
            # Not acknowledged, so the sender resends it: the same recovery as a lost message.
            self.counters.rejected += 1
            logger.warning("rejected frame", extra={"channel": self.name, "error": str(error)})
            return
        if message.message_type is MessageType.ACKNOWLEDGE:
            await self._acknowledged(message)
        elif message.message_type is self._receives:
            await self._sequenced(message)
        elif message.message_type is MessageType.CHANNEL_CLOSED:
            await self._inbox.put(message)
        else:
            logger.debug("ignoring message", extra={"channel": self.name, "type": message.message_type.value})

    async def _acknowledged(self, ack: ClientMessage) -> None:
        try:
            sequence = acknowledged_sequence_number(ack)
        except FrameError as error:
            logger.warning("rejected acknowledge", extra={"channel": self.name, "error": str(error)})
            return
        entry = self._unacknowledged.pop(sequence, None)
        if entry is None:
            return  # an ack for something already acknowledged: both AWS implementations ignore it
        if not entry.resent:  # Karn: a resent message's ack cannot say which copy it answers
            self.rto.observe(time.monotonic() - entry.last_sent)
        # Waiters want room in a full window, or an empty one (drain): wake them only on those transitions,
        # not for each of the thousands of acks a second that change neither.
        if len(self._unacknowledged) in (0, self.limits.window - 1):
            async with self._room:
                self._room.notify_all()

    async def _sequenced(self, message: ClientMessage) -> None:
        sequence = message.sequence_number
        if sequence < self._expected:
            self.counters.duplicates += 1
            await self._acknowledge(message)  # our earlier ack was lost
            return
        if sequence > self._expected:
            if sequence in self._early or (
                len(self._early) < self.limits.reorder_capacity
                and sequence - self._expected <= self.limits.reorder_capacity
            ):
                self._early[sequence] = message
                await self._acknowledge(message)
            return  # no room: not acknowledged, so it comes again once the gap is filled
        await self._deliver(message)
        while (early := self._early.pop(self._expected, None)) is not None:
            await self._deliver(early, acknowledged=True)

    async def _deliver(self, message: ClientMessage, *, acknowledged: bool = False) -> None:
        await self._inbox.put(message)
        self.counters.received += 1
        self._expected += 1
        if not acknowledged:
            await self._acknowledge(message)

    async def _acknowledge(self, message: ClientMessage) -> None:
        await self._transmit(encode(acknowledgement(message)))

    async def _resend_loop(self) -> None:
        while self._failure is None:
            await asyncio.sleep(self.limits.resend_tick)
            now = time.monotonic()
            due = [
                entry
                for entry in list(self._unacknowledged.values())[: self.limits.resends_per_tick]
                if now - entry.last_sent > self.rto.rto
            ]
            if not due:
                continue
            oldest = next(iter(self._unacknowledged.values()))
            give_up = self.limits.give_up_after
            if give_up is not None and now - oldest.first_sent > give_up:
                logger.warning(
                    "far end stopped acknowledging",
                    extra={
                        "channel": self.name,
                        "sequence": oldest.message.sequence_number,
                        "seconds": give_up,
                    },
                )
                await self._abandon()
                return
            for entry in due:
                entry.last_sent = now
                entry.resent = True
                self.counters.resent += 1
                await self._transmit(entry.frame)

    async def _abandon(self) -> None:
        failure = ChannelStalled(f"{self.name}: no acknowledgement for {self.limits.give_up_after:.0f} s")
        await self._fail(failure)
        with contextlib.suppress(ConnectionClosed, OSError, TimeoutError):
            await asyncio.wait_for(self._transport.close(1011, "no acknowledgement"), 2.0)
