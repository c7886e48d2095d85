"""The agent's counters and the status file the container health check reads.

The status file is the only channel between the long-running agent and ``python -m workspace_sync
health`` (run by Docker's HEALTHCHECK or the task definition's healthCheck): a heartbeat older than the
limit, or a failed phase, makes the container unhealthy.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

STARTING = "starting"
PULLING = "pulling"
RUNNING = "running"
FLUSHING = "flushing"
STOPPED = "stopped"
FAILED = "failed"
LIVE_PHASES = frozenset({STARTING, PULLING, RUNNING, FLUSHING})


@dataclass
class Counters:
    files_up: int = 0
    bytes_up: int = 0
    files_down: int = 0
    bytes_down: int = 0
    deletes_up: int = 0
    deletes_down: int = 0
    conflicts: int = 0
    too_large: int = 0  # files over the maximum size, not uploaded (each counted once per size it had)
    errors: int = 0
    pending: int = 0
    lag_seconds: float = 0.0
    phase: str = STARTING
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **amounts: int) -> None:
        """Thread-safe increments from the transfer workers."""
        with self._lock:
            for name, amount in amounts.items():
                setattr(self, name, getattr(self, name) + amount)

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}

    def write_status(self, path: Path) -> None:
        document = {**self.snapshot(), "pid": os.getpid(), "heartbeat": time.time()}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(document), encoding="utf-8")
        os.replace(tmp, path)


def check_health(status_file: Path, max_age_seconds: float, now: float | None = None) -> tuple[bool, str]:
    """Healthy when the agent wrote a live phase recently; the message says why not."""
    try:
        status = json.loads(status_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return False, f"no status file at {status_file}: the sync agent has not started"
    except ValueError as error:
        return False, f"unreadable status file {status_file}: {error}"
    age = (now if now is not None else time.time()) - float(status.get("heartbeat", 0))
    if status.get("phase") not in LIVE_PHASES:
        return False, f"sync agent phase is {status.get('phase')!r}"
    if age > max_age_seconds:
        return False, f"sync agent heartbeat is {age:.0f}s old (limit {max_age_seconds:.0f}s)"
    return True, (
        f"ok: phase={status['phase']} pending={status.get('pending')} lag={status.get('lag_seconds'):.1f}s "
        f"up={status.get('files_up')} down={status.get('files_down')}"
    )
