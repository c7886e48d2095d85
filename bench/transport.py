"""Terminal transport on loopback: keystroke echo latency and output throughput through the gateway.

The measured path is the browser's: a WebSocket client speaking the gateway's browser format, the
gateway, the SSM-style data channel (protocol, acks, window) to a ``LocalPeer``, and a PTY. The peer
stands in for the SSM agent, which runs on the task and not beside the gateway, so it runs in a process
of its own (``bench/_agent.py``): the gateway's process pays for its half of the protocol only. The
baseline, measured in the same run on the same machine, is the ttyd-style lower bound: one WebSocket
relaying raw bytes to and from a PTY with no protocol at all. The remote program is the same on both:
``cat`` in raw mode, which echoes each keystroke the way a shell's line editor does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from cloudide.transport.client import Connector, ExecCredentials, TerminalConnection, TransportError
from cloudide.transport.gateway import Gateway

ECHO_COMMAND = ("sh", "-c", "stty raw -echo && exec cat")
KEYSTROKES = 500
WARMUP_KEYSTROKES = 30
FLOOD_BYTES = 32 * 1024 * 1024
T = TypeVar("T")
LINE = (bytes(range(0x21, 0x7F)) * 2)[:79] + b"\n"


def run() -> dict[str, float]:
    return asyncio.run(asyncio.wait_for(_run(), timeout=150))


async def _run() -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-transport-") as tmp:
        flood_file = Path(tmp) / "flood.txt"
        flood_file.write_bytes(LINE * (FLOOD_BYTES // len(LINE)))
        flood_command = ("cat", str(flood_file))
        baseline_echo = await _baseline(ECHO_COMMAND, _echo_round_trips)
        baseline_flood = await _baseline(flood_command, _throughput)
        echo = await _through_gateway(ECHO_COMMAND, _echo_round_trips)
        flood = await _through_gateway(flood_command, _throughput)
        client_only = await _client_throughput(flood_command)
    result = {
        "echo_p50_ms": _percentile(echo, 50),
        "echo_p99_ms": _percentile(echo, 99),
        "baseline_echo_p50_ms": _percentile(baseline_echo, 50),
        "baseline_echo_p99_ms": _percentile(baseline_echo, 99),
        "throughput_mb_s": flood[0],
        "baseline_throughput_mb_s": baseline_flood[0],
        # The same flood read by a TerminalConnection with no gateway: what the protocol alone allows.
        "client_throughput_mb_s": client_only,
        "throughput_resyncs": flood[1],
        "keystrokes": KEYSTROKES,
        "flood_mb": FLOOD_BYTES / 1e6,
    }
    result["throughput_ratio"] = result["throughput_mb_s"] / result["baseline_throughput_mb_s"]
    return {key: round(value, 3) for key, value in result.items()}


# --- the two paths -----------------------------------------------------------------------------------


async def _through_gateway(command: Sequence[str], measure: Callable[[ClientConnection], Awaitable[T]]) -> T:
    async with _agent(command) as credentials:

        def factory(session_id: str, token: str) -> Connector:
            async def connector() -> ExecCredentials:
                return credentials

            return connector

        gateway = await Gateway(factory).start()
        try:
            url = f"ws://127.0.0.1:{gateway.port}/sessions/bench/terminal"
            async with connect(url, max_size=None, compression=None) as browser:
                await browser.send(json.dumps({"type": "auth", "token": "bench", "rows": 50, "cols": 200}))
                return await measure(browser)
        finally:
            await gateway.close()


async def _client_throughput(command: Sequence[str]) -> float:
    async with _agent(command) as credentials:

        async def connector() -> ExecCredentials:
            return credentials

        received = 0
        first: float | None = None
        async with TerminalConnection(connector, rows=50, cols=200) as terminal:
            with contextlib.suppress(TransportError):
                async with asyncio.timeout(120):
                    while True:
                        chunk = await terminal.recv()
                        first = first or time.perf_counter()
                        received += len(chunk)
        assert first is not None
        return received / 1e6 / (time.perf_counter() - first)


@contextlib.asynccontextmanager
async def _agent(command: Sequence[str]) -> AsyncIterator[ExecCredentials]:
    """One exec session served by the agent stand-in in its own process (see ``bench/_agent.py``)."""
    agent = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench._agent",
        *command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=Path(__file__).parents[1],
    )
    assert agent.stdin is not None and agent.stdout is not None
    try:
        line = await asyncio.wait_for(agent.stdout.readline(), 30)
        if not line:
            raise RuntimeError("the agent stand-in exited before offering a session")
        yield ExecCredentials.from_json(json.loads(line))
    finally:
        agent.stdin.close()
        try:
            await asyncio.wait_for(agent.wait(), 10)
        except TimeoutError:
            agent.kill()
            await agent.wait()


async def _baseline(command: Sequence[str], measure: Callable[[ClientConnection], Awaitable[T]]) -> T:
    async def relay(websocket: ServerConnection) -> None:
        await _relay_pty(websocket, command)

    async with serve(relay, "127.0.0.1", 0, compression=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}", max_size=None, compression=None) as browser:
            return await measure(browser)


async def _relay_pty(websocket: ServerConnection, command: Sequence[str]) -> None:
    """The ttyd-style relay: PTY bytes to binary frames and back, nothing else."""
    master, slave = pty.openpty()
    process = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    loop = asyncio.get_running_loop()
    # A StreamReader pauses reading the PTY when the socket falls behind: bounded, like the gateway.
    pty_output = asyncio.StreamReader(limit=256 * 1024)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(pty_output), os.fdopen(master, "rb", buffering=0, closefd=False)
    )

    async def pump_out() -> None:
        with contextlib.suppress(OSError):  # EIO: the program exited and the PTY closed
            while chunk := await pty_output.read(65536):
                await websocket.send(chunk)
        await websocket.close()

    async def pump_in() -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in websocket:
                os.write(master, message if isinstance(message, bytes) else message.encode())

    tasks = {asyncio.create_task(pump_out()), asyncio.create_task(pump_in())}
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        transport.close()
        os.close(master)
        process.kill()
        process.wait()


# --- the two measurements ----------------------------------------------------------------------------


async def _echo_round_trips(browser: ClientConnection) -> list[float]:
    """Milliseconds from sending one keystroke to receiving its echo."""
    await _wait_for_output(browser, probe=b"!")
    samples = []
    for index in range(WARMUP_KEYSTROKES + KEYSTROKES):
        key = bytes([0x61 + index % 26])
        started = time.perf_counter()
        await browser.send(key)
        await _wait_for_output(browser, expect=key)
        if index >= WARMUP_KEYSTROKES:
            samples.append((time.perf_counter() - started) * 1000)
    return samples


async def _throughput(browser: ClientConnection) -> tuple[float, int]:
    """MB/s of terminal output from the first byte to the end of the session, and resyncs seen."""
    received = 0
    resyncs = 0
    first: float | None = None
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(120):
            async for message in browser:
                if isinstance(message, str):
                    resyncs += json.loads(message)["type"] == "resync"
                    continue
                first = first or time.perf_counter()
                received += len(message)
    if first is None or received < FLOOD_BYTES:
        raise RuntimeError(f"flood incomplete: {received} of at least {FLOOD_BYTES} bytes")
    return received / 1e6 / (time.perf_counter() - first), max(resyncs - 1, 0)  # joining is one resync


async def _wait_for_output(browser: ClientConnection, *, expect: bytes = b"", probe: bytes = b"") -> None:
    """Skip control messages and output until ``expect`` (or, with ``probe``, until an echo works)."""
    async with asyncio.timeout(20):
        if probe:
            await browser.send(probe)
            expect = probe
        buffer = b""
        while expect not in buffer:
            message = await browser.recv()
            if isinstance(message, bytes):
                buffer = (buffer + message)[-256:]


def _percentile(samples: list[float], percent: int) -> float:
    return (
        statistics.quantiles(samples, n=100, method="inclusive")[percent - 1]
        if percent < 100
        else max(samples)
    )
