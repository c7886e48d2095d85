"""The sandboxes' only way out to the local AWS: one unix socket per task, served by moto's application
behind :class:`~cloudide.localstack.task_access.TaskAccess`.

A task never reaches moto's TCP endpoint: each socket is an HTTP server of its own (werkzeug's, the one
moto runs on, so a request is parsed exactly as moto parses it) whose application is moto's dispatcher
wrapped in the gate that lets through only what AWS would serve a task. Bodies are read by moto as it
handles a request, straight from the socket; nothing here buffers one.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server

from cloudide.localstack.task_access import TaskAccess


class EndpointBridge:
    """One HTTP server per task on a unix socket, each in its own thread, all serving the same gated moto
    application. The sockets live in a short private directory: a unix socket path has at most 107 bytes.

    `hosts` are the Host headers the sandboxes' endpoint URL gives (the local AWS's own address)."""

    def __init__(self, hosts: Iterable[str], account: str) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

        self._app = TaskAccess(DomainDispatcherApplication(create_backend_app), hosts=hosts, account=account)
        self._directory = Path(tempfile.mkdtemp(prefix="cloudide-s3-"))
        self._directory.chmod(0o755)  # the entrypoint's user must reach the sockets
        self._servers: dict[Path, tuple[BaseWSGIServer, threading.Thread]] = {}

    def open(self, name: str) -> Path:
        """A new socket for task `name`; returns its path (bind it into the sandbox)."""
        from moto.moto_server.werkzeug_app import MotoRequestHandler

        path = self._directory / f"{name[:40]}.sock"
        server: Any = make_server(
            f"unix://{path}", 0, self._app, threaded=True, request_handler=MotoRequestHandler
        )
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, name=f"bridge-{name[:8]}", daemon=True)
        thread.start()
        self._servers[path] = (server, thread)
        path.chmod(0o666)
        return path

    def close(self, path: Path, timeout: float = 5.0) -> None:
        served = self._servers.pop(path, None)
        if served is None:
            return
        server, thread = served
        server.shutdown()
        server.server_close()
        thread.join(timeout)
        path.unlink(missing_ok=True)

    def shutdown(self, timeout: float = 5.0) -> None:
        for path in list(self._servers):
            self.close(path, timeout)
        shutil.rmtree(self._directory, ignore_errors=True)
