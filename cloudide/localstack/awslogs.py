"""The awslogs log driver for local tasks: the container's output, shipped to the local CloudWatch Logs.

ECS writes each container's stdout/stderr to `<awslogs-group>` under the stream
`<awslogs-stream-prefix>/<container name>/<task id>`; shipping the sandbox's `container.log` the same
way lets `cloudide logs --local` (and anything else reading CloudWatch) work on the local stack unchanged.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MAX_BATCH = 1000  # PutLogEvents takes at most 10,000 events; a small batch keeps each call quick


class LogShipper:
    """Ships the lines appended to one file since the last call; call `ship()` as often as wanted."""

    def __init__(self, logs: Any, path: Path, group: str, stream: str) -> None:
        self._logs = logs
        self._path = path
        self._group = group
        self._stream = stream
        self._offset = 0
        self._created = False

    @classmethod
    def for_container(
        cls, logs: Any, path: Path, container: dict[str, Any], task_arn: str
    ) -> LogShipper | None:
        """The container's awslogs destination, if its log configuration names one."""
        configuration = container.get("logConfiguration") or {}
        options = configuration.get("options") or {}
        if configuration.get("logDriver") != "awslogs" or "awslogs-group" not in options:
            return None
        prefix = options.get("awslogs-stream-prefix")
        task_id = task_arn.rsplit("/", 1)[-1]
        stream = f"{prefix}/{container['name']}/{task_id}" if prefix else task_id
        return cls(logs, path, options["awslogs-group"], stream)

    def ship(self) -> int:
        """Send the complete lines written since the last call; returns how many."""
        try:
            with self._path.open("rb") as log:
                log.seek(self._offset)
                data = log.read()
        except FileNotFoundError:
            return 0
        complete = data[: data.rfind(b"\n") + 1]
        if not complete:
            return 0
        lines = complete.decode("utf-8", errors="replace").splitlines()
        try:
            self._ensure_stream()
            now = int(time.time() * 1000)
            for start in range(0, len(lines), MAX_BATCH):
                events = [{"timestamp": now, "message": line} for line in lines[start : start + MAX_BATCH]]
                self._logs.put_log_events(
                    logGroupName=self._group, logStreamName=self._stream, logEvents=events
                )
        except Exception:  # the driver never takes the task down; the lines stay in container.log
            logger.warning("could not ship container logs", extra={"stream": self._stream}, exc_info=True)
            return 0
        self._offset += len(complete)
        return len(lines)

    def _ensure_stream(self) -> None:
        if self._created:
            return
        with contextlib.suppress(self._logs.exceptions.ResourceAlreadyExistsException):
            self._logs.create_log_stream(logGroupName=self._group, logStreamName=self._stream)
        self._created = True
