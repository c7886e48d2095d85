"""Waiting on raw file descriptors from asyncio, for the PTY master in the peer and the user's terminal.

Neither is a socket or a pipe asyncio can wrap in a stream, and a PTY master reports a hang-up as EIO, so
both callers read and write the descriptor themselves and only borrow the event loop's readiness
notifications -- which also means nothing is read that the far side has not made room for.
"""

from __future__ import annotations

import asyncio


async def wait_readable(fd: int) -> None:
    await _wait(fd, writable=False)


async def wait_writable(fd: int) -> None:
    await _wait(fd, writable=True)


async def _wait(fd: int, *, writable: bool) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    if writable:
        loop.add_writer(fd, wake)
    else:
        loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        if writable:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)
