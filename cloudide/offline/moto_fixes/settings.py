"""The knobs the corrections read at call time; tests change them between calls without reinstalling.

The time scale, the ExecuteCommand stream URL factory, the code folders of Lambda functions, RunTask and
function fault injection, and StopTask listeners live in `SETTINGS`.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ExecSessionFactory = Callable[[str, str, str], dict[str, str]]
"""(cluster ARN, task ARN, command) -> the `session` an ExecuteCommand call returns: `sessionId`,
`streamUrl` and `tokenValue`. The local stack answers with its SSM-protocol peer running `command` inside
the task's sandbox."""


def unreachable_exec_session(cluster_arn: str, task_arn: str, command: str) -> dict[str, str]:
    """Nothing listens here: tests that only check the API's answer need no data channel."""
    session_id = f"ecs-execute-command-{uuid.uuid4().hex}"
    return {
        "sessionId": session_id,
        "streamUrl": f"ws://127.0.0.1:0/v1/data-channel/{session_id}",
        "tokenValue": uuid.uuid4().hex + uuid.uuid4().hex,
    }


@dataclass
class RunTaskFault:
    """One injected RunTask outcome: `failures` returned with HTTP 200, or `error` raised."""

    failures: list[dict[str, str]] | None = None
    error: tuple[str, str] | None = (
        None  # (error code, message), e.g. ("ThrottlingException", "Rate exceeded")
    )


@dataclass
class Settings:
    """Mutable knobs read by the corrections at call time."""

    wait_scale: float = 1.0
    scale_timestamp_waits: bool = False
    exec_session_factory: ExecSessionFactory = unreachable_exec_session
    code_folders: dict[str, Path] = field(default_factory=dict)  # placeholder S3 key -> CodeUri folder
    run_task_faults: deque[RunTaskFault] = field(default_factory=deque)
    # function name -> how many of its next invocations fail before the handler runs
    function_failures: dict[str, int] = field(default_factory=dict)
    stop_task_listeners: list[Callable[[Any], None]] = field(default_factory=list)


SETTINGS = Settings()
CODE_BUCKET = "cloudide-offline-code"
"""The S3 bucket holding the placeholder code objects; the S3 key names the function's CodeUri folder."""
