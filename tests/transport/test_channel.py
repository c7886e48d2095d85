"""Sequencing rules of one data channel, driven frame by frame from the far end."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.exceptions import ConnectionClosedOK

from cloudide.transport.channel import (
    ChannelDropped,
    ChannelLimits,
    ChannelStalled,
    DataChannel,
    RetransmissionTimeout,
)
from cloudide.transport.protocol import (
    ClientMessage,
    MessageType,
    PayloadType,
    acknowledged_sequence_number,
    acknowledgement,
    channel_closed,
    decode,
    encode,
)

pytestmark = pytest.mark.timeout(30)
WAIT = 5.0


class FarEnd:
    """The other side of a channel's WebSocket: the test sends and inspects raw frames."""

    def __init__(self) -> None:
        self.to_channel: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.from_channel: asyncio.Queue[bytes] = asyncio.Queue()

    # Transport, as seen by the channel
    async def send(self, message: bytes | str) -> None:
        await self.from_channel.put(message if isinstance(message, bytes) else message.encode())

    async def recv(self) -> bytes | str:
        frame = await self.to_channel.get()
        if frame is None:
            raise ConnectionClosedOK(None, None)
        return frame

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.to_channel.put_nowait(None)

    # test side
    def output(self, sequence: int, payload: bytes) -> ClientMessage:
        message = ClientMessage(MessageType.OUTPUT_STREAM_DATA, sequence, payload, PayloadType.OUTPUT)
        self.to_channel.put_nowait(encode(message))
        return message

    async def next_frame(self, timeout: float = WAIT) -> ClientMessage:
        return decode(await asyncio.wait_for(self.from_channel.get(), timeout))

    async def acks(self, count: int) -> list[int]:
        numbers = []
        for _ in range(count):
            frame = await self.next_frame()
            assert frame.message_type is MessageType.ACKNOWLEDGE
            numbers.append(acknowledged_sequence_number(frame))
        return numbers


async def _client(far: FarEnd, **limits: float) -> DataChannel:
    channel = DataChannel(far, sends=MessageType.INPUT_STREAM_DATA, limits=ChannelLimits(**limits))  # type: ignore[arg-type]
    channel.start()
    return channel


async def test_out_of_order_output_is_acknowledged_at_once_and_delivered_in_order() -> None:
    far = FarEnd()
    channel = await _client(far)
    for sequence in (2, 0, 3, 1):
        far.output(sequence, f"chunk{sequence}".encode())

    delivered = [await asyncio.wait_for(channel.receive(), WAIT) for _ in range(4)]

    assert [m.payload for m in delivered] == [b"chunk0", b"chunk1", b"chunk2", b"chunk3"]
    assert sorted(await far.acks(4)) == [0, 1, 2, 3]
    await channel.close()


async def test_duplicates_are_reacknowledged_but_delivered_once() -> None:
    far = FarEnd()
    channel = await _client(far)
    far.output(0, b"once")
    far.output(0, b"once")
    far.output(1, b"next")

    first, second = [await asyncio.wait_for(channel.receive(), WAIT) for _ in range(2)]

    assert (first.payload, second.payload) == (b"once", b"next")
    assert await far.acks(3) == [0, 0, 1]
    assert channel.counters.duplicates == 1
    await channel.close()


async def test_unacknowledged_input_is_resent_byte_for_byte_until_acknowledged() -> None:
    far = FarEnd()
    channel = await _client(far, resend_tick=0.02)

    sent = await channel.send(PayloadType.OUTPUT, b"ls\r")
    original = await far.next_frame()
    resent = await far.next_frame(timeout=2.0)  # RTO starts at 200 ms

    assert resent == original == decode(encode(sent))
    far.to_channel.put_nowait(encode(acknowledgement(resent)))
    assert await channel.drain(WAIT)
    while not far.from_channel.empty():  # resends already in flight when the ack arrived
        far.from_channel.get_nowait()
    await asyncio.sleep(0.5)
    assert far.from_channel.empty()
    await channel.close()


async def test_sequence_numbers_count_up_from_zero_across_payload_types() -> None:
    far = FarEnd()
    channel = await _client(far)

    await channel.send(PayloadType.SIZE, b'{"cols":80,"rows":24}')
    await channel.send(PayloadType.OUTPUT, b"a")
    await channel.send(PayloadType.OUTPUT, b"b")
    frames = [await far.next_frame() for _ in range(3)]

    assert [(f.sequence_number, f.payload_type, f.flags) for f in frames] == [(0, 3, 0), (1, 1, 0), (2, 1, 0)]
    await channel.close()


async def test_a_full_window_makes_send_wait_for_acknowledgements() -> None:
    far = FarEnd()
    channel = await _client(far, window=2)
    await channel.send(PayloadType.OUTPUT, b"1")
    first = await far.next_frame()
    await channel.send(PayloadType.OUTPUT, b"2")

    third = asyncio.create_task(channel.send(PayloadType.OUTPUT, b"3"))
    await asyncio.sleep(0.1)
    assert not third.done()

    far.to_channel.put_nowait(encode(acknowledgement(first)))
    message = await asyncio.wait_for(third, WAIT)
    assert message.sequence_number == 2
    await channel.close()


async def test_a_corrupted_frame_is_not_acknowledged_so_the_sender_resends_it() -> None:
    far = FarEnd()
    channel = await _client(far)
    good = encode(ClientMessage(MessageType.OUTPUT_STREAM_DATA, 0, b"intact", PayloadType.OUTPUT))
    far.to_channel.put_nowait(good[:-1] + b"X")
    far.to_channel.put_nowait(good)

    assert (await asyncio.wait_for(channel.receive(), WAIT)).payload == b"intact"
    assert await far.acks(1) == [0]
    assert far.from_channel.empty()
    assert channel.counters.rejected == 1
    await channel.close()


async def test_unknown_messages_are_ignored_and_channel_closed_is_delivered() -> None:
    far = FarEnd()
    channel = await _client(far)
    unknown = bytearray(encode(ClientMessage(MessageType.OUTPUT_STREAM_DATA, 0, b"?")))
    unknown[4:36] = b"agent_job".ljust(32, b" ")
    far.to_channel.put_nowait(bytes(unknown))
    far.to_channel.put_nowait(encode(channel_closed("sess-1", "bye")))

    message = await asyncio.wait_for(channel.receive(), WAIT)

    assert message.message_type is MessageType.CHANNEL_CLOSED
    assert json.loads(message.payload)["Output"] == "bye"
    await channel.close()


async def test_a_closed_connection_ends_receive_and_send() -> None:
    far = FarEnd()
    channel = await _client(far)
    far.output(0, b"last words")
    far.to_channel.put_nowait(None)

    assert (await asyncio.wait_for(channel.receive(), WAIT)).payload == b"last words"
    with pytest.raises(ChannelDropped):
        await asyncio.wait_for(channel.receive(), WAIT)
    with pytest.raises(ChannelDropped):
        await channel.send(PayloadType.OUTPUT, b"too late")
    await channel.close()


async def test_a_far_end_that_never_acknowledges_is_declared_dead() -> None:
    far = FarEnd()
    channel = await _client(far, resend_tick=0.02, give_up_after=0.3)
    await channel.send(PayloadType.OUTPUT, b"hello?")

    with pytest.raises(ChannelStalled, match="no acknowledgement"):
        await asyncio.wait_for(channel.receive(), WAIT)
    await channel.close()


def test_retransmission_timeout_follows_the_aws_worked_example() -> None:
    timer = RetransmissionTimeout()

    timer.observe(0.140)

    assert (timer.srtt, timer.rttvar, timer.rto) == pytest.approx((0.105, 0.010, 0.145))


def test_retransmission_timeout_is_capped_at_one_second() -> None:
    timer = RetransmissionTimeout()
    for _ in range(20):
        timer.observe(5.0)

    assert timer.rto == 1.0
