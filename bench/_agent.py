"""The agent's end of the transport benchmark, in a process of its own.

In production the SSM agent runs on the Fargate task, not on the gateway's host, so the benchmark
runs its stand-in (a :class:`LocalPeer`) here: the gateway's process then pays only for its own half
of the protocol, as it would in a deployment. Usage: ``python -m bench._agent COMMAND...`` prints one
ExecuteCommand-shaped session (a JSON line) that runs COMMAND, and serves it until stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import sys

from cloudide.transport.peer import LocalPeer


async def _serve(command: list[str]) -> None:
    async with LocalPeer() as peer:
        print(json.dumps(peer.new_session(command).to_json()), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    asyncio.run(_serve(sys.argv[1:]))
