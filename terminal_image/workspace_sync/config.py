"""The agent's configuration, parsed once from the environment the task definition sets.

Every path is configurable so the same code runs in the image (defaults) and in the local stack's
sandbox (overrides); nothing deeper in the package reads the environment.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# S3 bucket naming rules (general purpose buckets); a clear error beats a cryptic ParamValidation later.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_SESSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


MAX_FILE_SIZE = 5 * 1024**3


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names the variable and what is expected."""


@dataclass(frozen=True)
class SyncConfig:
    bucket: str
    prefix: str
    session_id: str
    workspace_dir: Path
    state_dir: Path
    concurrency: int = 16
    debounce_seconds: float = 0.2
    max_delay_seconds: float = 2.0
    poll_seconds: float = 5.0
    rescan_seconds: float = 60.0
    flush_deadline_seconds: float = 100.0
    multipart_threshold: int = 16 * 1024 * 1024
    part_size: int = 8 * 1024 * 1024
    # A file larger than this is not uploaded (and the agent says so): one runaway file must not stall
    # the sync or take the storage's memory. 5 GiB is S3's largest single PUT and a generous workspace file.
    max_file_size: int = MAX_FILE_SIZE
    watcher: str = "auto"
    use_default_ignores: bool = True
    extra_ignores: tuple[str, ...] = ()
    health_max_age_seconds: float = 30.0
    # The control plane's vending function (template.yaml sets it): empty = the default credential
    # chain, for running the agent outside a terminal task.
    credentials_function: str = ""

    @property
    def status_file(self) -> Path:
        return self.state_dir / "status.json"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SyncConfig:
        """Build the configuration, collecting every problem so one run shows them all."""
        problems: list[str] = []

        def required(name: str, pattern: re.Pattern[str], expected: str) -> str:
            value = env.get(name, "").strip()
            if not value:
                problems.append(f"{name} is not set ({expected})")
            elif not pattern.match(value):
                problems.append(f"{name}={value!r} is invalid ({expected})")
            return value

        def number(name: str, default: float, minimum: float) -> float:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                value = float(raw)
            except ValueError:
                problems.append(f"{name}={raw!r} is not a number")
                return default
            if value < minimum:
                problems.append(f"{name}={raw!r} must be >= {minimum}")
            return value

        bucket = required("WORKSPACE_BUCKET", _BUCKET, "an S3 bucket name")
        session_id = required("SESSION_ID", _SESSION_ID, "letters, digits, '.', '_' or '-', max 128")
        prefix = env.get("WORKSPACE_PREFIX", "").strip().strip("/")
        if not prefix:
            problems.append("WORKSPACE_PREFIX is not set (the workspace's key prefix, e.g. projects/p-1)")
        elif "//" in prefix or any(part in {".", ".."} for part in prefix.split("/")):
            problems.append(f"WORKSPACE_PREFIX={prefix!r} has an empty, '.' or '..' segment")
        workspace_dir = Path(env.get("WORKSPACE_DIR", "/workspace"))
        if not workspace_dir.is_absolute():
            problems.append(f"WORKSPACE_DIR={str(workspace_dir)!r} must be an absolute path")
        state_dir = Path(env.get("SYNC_STATE_DIR") or workspace_dir / ".cloudide-sync")
        watcher = env.get("SYNC_WATCHER", "auto").strip() or "auto"
        if watcher not in {"auto", "inotify", "polling"}:
            problems.append(f"SYNC_WATCHER={watcher!r} must be auto, inotify or polling")
        flush_deadline = number("SYNC_FLUSH_DEADLINE_SECONDS", 100.0, 1.0)
        if flush_deadline >= 120:
            problems.append("SYNC_FLUSH_DEADLINE_SECONDS must stay below ECS stopTimeout (max 120 s)")
        part_size = int(number("SYNC_PART_SIZE", 8 * 1024 * 1024, 5 * 1024 * 1024))
        config = cls(
            bucket=bucket,
            prefix=prefix,
            session_id=session_id,
            workspace_dir=workspace_dir,
            state_dir=state_dir,
            concurrency=int(number("SYNC_CONCURRENCY", 16, 1)),
            debounce_seconds=number("SYNC_DEBOUNCE_SECONDS", 0.2, 0.0),
            max_delay_seconds=number("SYNC_MAX_DELAY_SECONDS", 2.0, 0.0),
            poll_seconds=number("SYNC_POLL_SECONDS", 5.0, 0.1),
            rescan_seconds=number("SYNC_RESCAN_SECONDS", 60.0, 1.0),
            flush_deadline_seconds=flush_deadline,
            multipart_threshold=int(number("SYNC_MULTIPART_THRESHOLD", 16 * 1024 * 1024, part_size)),
            part_size=part_size,
            max_file_size=int(number("SYNC_MAX_FILE_SIZE", MAX_FILE_SIZE, 1)),
            watcher=watcher,
            use_default_ignores=env.get("SYNC_DEFAULT_IGNORES", "1").strip() not in {"0", "false", "no"},
            extra_ignores=tuple(p.strip() for p in env.get("SYNC_IGNORE", "").split(",") if p.strip()),
            health_max_age_seconds=number("SYNC_HEALTH_MAX_AGE_SECONDS", 30.0, 1.0),
            credentials_function=env.get("WORKSPACE_ACCESS_FUNCTION", "").strip(),
        )
        if problems:
            raise ConfigError("invalid configuration: " + "; ".join(problems))
        return config
