"""Answers to the workflow's parked callback tokens.

Several writers may answer the same token (the event handler and the step that parked it both check
the record after writing it, so one of them always sees both halves). Answering twice is harmless:
the second answer is refused by Step Functions and ignored here.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
from botocore.exceptions import ClientError

_ALREADY_ANSWERED = {"TaskTimedOut", "InvalidToken", "TaskDoesNotExist"}


class WorkflowCallbacks:
    def __init__(self, *, client: Any | None = None) -> None:
        self._client = client or boto3.client("stepfunctions")

    def _send(self, method: str, **kwargs: Any) -> bool:
        try:
            getattr(self._client, method)(**kwargs)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in _ALREADY_ANSWERED:
                return False
            raise
        return True

    def succeed(self, token: str, output: dict[str, Any]) -> bool:
        return self._send("send_task_success", taskToken=token, output=json.dumps(output))

    def fail(self, token: str, error: str, cause: str) -> bool:
        return self._send("send_task_failure", taskToken=token, error=error, cause=cause[:32768])

    def heartbeat(self, token: str) -> bool:
        return self._send("send_task_heartbeat", taskToken=token)
