"""The ECS side of a session: start, inspect, stop and open a shell in its Fargate task.

Only this module speaks ECS; the lifecycle sees tasks as small value objects and two exceptions that
say whether trying again can help.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from sessions.config import Settings
from sessions.observability import logger
from sessions.record import Session
from sessions.throttling import THROTTLING_CODES
from sessions.tiers import TIERS

# Marks this product's tasks in the cluster (task-state events carry `group`, not tags).
TASK_GROUP = "cloudide-terminals"
EXEC_AGENT = "ExecuteCommandAgent"
_DESCRIBE_BATCH = 100  # DescribeTasks' limit per call
_TRANSIENT_FAILURES = ("capacity is unavailable", "resource:", "throttl", "rate exceeded")


class CapacityUnavailable(Exception):
    """RunTask found no capacity (or was throttled): the workflow retries with backoff."""


class ProvisioningFailed(Exception):
    """RunTask refused the task for a reason retrying cannot fix (bad task definition, subnets...)."""


@dataclass(frozen=True)
class TaskView:
    task_arn: str
    last_status: str
    agent_status: str | None
    stop_code: str | None
    stopped_reason: str | None
    exit_code: int | None
    session_id: str | None = None  # startedBy
    group: str | None = None
    created_at: datetime | None = None
    stopped_at: datetime | None = None
    version: int | None = None


def workspace_prefix(session: Session) -> str:
    """Each owner's project has its own prefix; credentials are scoped to it (SECURITY.md)."""
    return f"workspaces/{session.owner_id}/{session.project_id}/"


class EcsTasks:
    def __init__(self, settings: Settings, *, client: Any | None = None, ssm: Any | None = None) -> None:
        self._settings = settings
        self._client = client or boto3.client(
            "ecs", config=Config(retries={"mode": "standard", "max_attempts": 3})
        )
        self._ssm = ssm

    def run(self, session: Session, *, client_token: str, spot: bool) -> str:
        """Start the session's task and return its ARN; the token makes a retried call start none twice."""
        tier = TIERS[session.tier]
        provider = "FARGATE_SPOT" if spot else "FARGATE"
        try:
            response = self._client.run_task(
                cluster=self._settings.cluster,
                taskDefinition=self._settings.images[session.image],
                count=1,
                clientToken=client_token,
                enableExecuteCommand=True,
                capacityProviderStrategy=[{"capacityProvider": provider, "weight": 1}],
                networkConfiguration={
                    "awsvpcConfiguration": {
                        "subnets": self._settings.subnets,
                        "securityGroups": self._settings.security_groups,
                        "assignPublicIp": "DISABLED",
                    }
                },
                overrides={
                    "cpu": str(tier.cpu),
                    "memory": str(tier.memory),
                    "containerOverrides": [
                        {
                            "name": self._settings.container_name,
                            "environment": [
                                {"name": "SESSION_ID", "value": session.session_id},
                                {"name": "WORKSPACE_PREFIX", "value": workspace_prefix(session)},
                            ],
                        }
                    ],
                },
                startedBy=session.session_id,
                group=TASK_GROUP,
                tags=[
                    {"key": "session-id", "value": session.session_id},
                    {"key": "owner-id", "value": session.owner_id},
                ],
                propagateTags="TASK_DEFINITION",
            )
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            message = error.response.get("Error", {}).get("Message", str(error))
            if code in THROTTLING_CODES or "capacity" in message.lower():
                raise CapacityUnavailable(f"{code}: {message}") from error
            raise ProvisioningFailed(f"{code}: {message}") from error
        if response.get("failures"):
            failure = response["failures"][0]
            reason = " ".join(filter(None, (failure.get("reason"), failure.get("detail"))))
            if any(marker in reason.lower() for marker in _TRANSIENT_FAILURES):
                raise CapacityUnavailable(reason)
            raise ProvisioningFailed(reason)
        return str(response["tasks"][0]["taskArn"])

    def find_for_session(self, session_id: str) -> list[str]:
        """Tasks started for this session, for the rare case a task exists that the record missed."""
        arns: list[str] = []
        # ListTasks' default desiredStatus is RUNNING: the tasks that still cost money.
        paginator = self._client.get_paginator("list_tasks")
        for page in paginator.paginate(cluster=self._settings.cluster, startedBy=session_id):
            arns.extend(page.get("taskArns", []))
        return arns

    def describe(self, task_arn: str) -> TaskView | None:
        tasks = self._client.describe_tasks(cluster=self._settings.cluster, tasks=[task_arn]).get("tasks", [])
        return self._view(tasks[0]) if tasks else None

    def running_product_tasks(self) -> Iterator[TaskView]:
        """Every task of this product the cluster still means to run, whoever started it and whenever."""
        # Tasks already asked to stop (desiredStatus STOPPED) are on their way out.
        paginator = self._client.get_paginator("list_tasks")
        for page in paginator.paginate(cluster=self._settings.cluster, desiredStatus="RUNNING"):
            arns = page.get("taskArns", [])
            for start in range(0, len(arns), _DESCRIBE_BATCH):
                described = self._client.describe_tasks(
                    cluster=self._settings.cluster, tasks=arns[start : start + _DESCRIBE_BATCH]
                )
                for task in described.get("tasks", []):
                    if task.get("group") == TASK_GROUP:
                        yield self._view(task)

    def _view(self, task: Any) -> TaskView:
        container = next(
            (c for c in task.get("containers", []) if c.get("name") == self._settings.container_name),
            (task.get("containers") or [{}])[0],
        )
        agent: Any = next((a for a in container.get("managedAgents", []) if a.get("name") == EXEC_AGENT), {})
        return TaskView(
            task_arn=task["taskArn"],
            last_status=task.get("lastStatus", ""),
            agent_status=agent.get("lastStatus"),
            stop_code=task.get("stopCode"),
            stopped_reason=task.get("stoppedReason"),
            exit_code=container.get("exitCode"),
            session_id=task.get("startedBy") or None,
            group=task.get("group"),
            created_at=task.get("createdAt"),
            stopped_at=task.get("stoppedAt"),
            version=task.get("version"),
        )

    def stop(self, task_arn: str, reason: str) -> None:
        try:
            self._client.stop_task(cluster=self._settings.cluster, task=task_arn, reason=reason[:255])
        except ClientError as error:
            # Stopping a task that is already gone is the outcome we wanted.
            if error.response.get("Error", {}).get("Code") not in ("InvalidParameterException",):
                raise

    def open_shell(self, task_arn: str, *, read_only: bool = False) -> dict[str, str]:
        """ECS Exec with the image's fixed wrapper: the only command any user can ever run as root."""
        command = self._settings.shell_command + (" --read-only" if read_only else "")
        response = self._client.execute_command(
            cluster=self._settings.cluster,
            task=task_arn,
            container=self._settings.container_name,
            command=command,
            interactive=True,
        )
        session = response["session"]
        return {
            "sessionId": session["sessionId"],
            "streamUrl": session["streamUrl"],
            "tokenValue": session["tokenValue"],
        }

    def end_shell(self, exec_session_id: str) -> None:
        """End an ECS Exec session (SSM ``TerminateSession``), freeing its place in the exec agent.

        The agent runs two sessions per container at most, and one whose client went away holds its
        place until the 20-minute idle timeout. A failure is logged, not raised: the caller's new
        session is worth opening anyway (it starts once a place frees).
        """
        if self._ssm is None:
            self._ssm = boto3.client("ssm", config=Config(retries={"mode": "standard", "max_attempts": 3}))
        try:
            self._ssm.terminate_session(SessionId=exec_session_id)
        except ClientError as error:
            logger.warning(
                "could not terminate an exec session",
                extra={"exec_session_id": exec_session_id, "error": str(error)},
            )
