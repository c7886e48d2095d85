"""The sandboxes' only way out to the local AWS: one unix socket per task, bridged to its endpoint."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
from pathlib import Path

from cloudide.localstack.task_init import splice


class EndpointBridge:
    """The host half of the sandboxes' way out: one unix socket per task, each connection forwarded to
    the local AWS's TCP endpoint. One event-loop thread serves every task. The sockets live in a short
    private directory: a unix socket path has at most 107 bytes."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._directory = Path(tempfile.mkdtemp(prefix="cloudide-s3-"))
        self._directory.chmod(0o755)  # the entrypoint's user must reach the sockets
        self._loop = asyncio.new_event_loop()
        self._servers: dict[Path, asyncio.AbstractServer] = {}
        self._thread = threading.Thread(target=self._loop.run_forever, name="s3-bridge", daemon=True)
        self._thread.start()

    def open(self, name: str, timeout: float = 5.0) -> Path:
        """A new socket for task `name`; returns its path (bind it into the sandbox)."""
        path = self._directory / f"{name[:40]}.sock"

        async def serve() -> asyncio.AbstractServer:
            return await asyncio.start_unix_server(
                lambda r, w: splice(r, w, lambda: asyncio.open_connection(*self._target)), path=str(path)
            )

        self._servers[path] = asyncio.run_coroutine_threadsafe(serve(), self._loop).result(timeout)
        path.chmod(0o666)
        return path

    def close(self, path: Path, timeout: float = 5.0) -> None:
        server = self._servers.pop(path, None)
        if server is None:
            return

        async def stop() -> None:
            server.close()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout)
        path.unlink(missing_ok=True)

    def shutdown(self, timeout: float = 5.0) -> None:
        for path in list(self._servers):
            self.close(path, timeout)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        self._loop.close()
        shutil.rmtree(self._directory, ignore_errors=True)
