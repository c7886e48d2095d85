"""The session workflows as the reconciler sees them: which are running, how one ended, stopping one.

Each execution is named after its session (the API starts it with `name=sessionId`), so a session's
execution ARN follows from the state machine's and needs no lookup.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import boto3
from botocore.exceptions import ClientError


@dataclass(frozen=True)
class Execution:
    session_id: str
    execution_arn: str
    started_at: datetime


@dataclass(frozen=True)
class Outcome:
    """How a session's execution stands: RUNNING, or how and when it ended."""

    status: str
    stopped_at: datetime | None


class Workflows:
    def __init__(self, state_machine_arn: str, *, client: Any | None = None) -> None:
        self._state_machine_arn = state_machine_arn
        self._client = client or boto3.client("stepfunctions")

    def execution_arn(self, session_id: str) -> str:
        prefix, _, name = self._state_machine_arn.rpartition(":stateMachine:")
        return f"{prefix}:execution:{name}:{session_id}"

    def running(self) -> dict[str, Execution]:
        """Running executions by session id."""
        running: dict[str, Execution] = {}
        paginator = self._client.get_paginator("list_executions")
        for page in paginator.paginate(stateMachineArn=self._state_machine_arn, statusFilter="RUNNING"):
            for item in page.get("executions", []):
                running[item["name"]] = Execution(item["name"], item["executionArn"], item["startDate"])
        return running

    def outcome(self, session_id: str) -> Outcome | None:
        """How the session's execution stands, or None if it never started."""
        try:
            described = self._client.describe_execution(executionArn=self.execution_arn(session_id))
            return Outcome(str(described["status"]), described.get("stopDate"))
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ExecutionDoesNotExist":
                return None
            raise

    def stop(self, execution: Execution, cause: str) -> None:
        self._client.stop_execution(executionArn=execution.execution_arn, error="SessionEnded", cause=cause)
