"""ECS Task State Change events, parsed. Powertools ships no model for them, so this one ignores the
fields it does not use: events gain fields over time and an unknown one must never fail delivery.
"""

from __future__ import annotations

from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from pydantic import BaseModel, ConfigDict, Field

from sessions.ecs_tasks import TaskFacts
from sessions.record import TaskStatus


class EcsContainer(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str | None = None
    exit_code: int | None = Field(None, alias="exitCode")
    reason: str | None = None


class EcsTaskDetail(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    task_arn: str = Field(alias="taskArn")
    cluster_arn: str | None = Field(None, alias="clusterArn")
    last_status: TaskStatus = Field(alias="lastStatus")
    desired_status: TaskStatus | None = Field(None, alias="desiredStatus")
    started_by: str | None = Field(None, alias="startedBy")
    group: str | None = None
    stop_code: str | None = Field(None, alias="stopCode")
    stopped_reason: str | None = Field(None, alias="stoppedReason")
    containers: list[EcsContainer] = Field(default_factory=list)
    version: int | None = None


class EcsTaskStateChange(EventBridgeModel):
    detail: EcsTaskDetail

    def facts(self, container_name: str) -> TaskFacts:
        detail = self.detail
        container = next((c for c in detail.containers if c.name == container_name), None)
        exit_code = container.exit_code if container else None
        # A container's own reason ("OutOfMemoryError: ...") says more than the task's generic one.
        reason = (container.reason if container and container.reason else None) or detail.stopped_reason
        return TaskFacts(
            task_arn=detail.task_arn,
            last_status=detail.last_status,
            desired_status=detail.desired_status,
            stop_code=detail.stop_code,
            stopped_reason=reason,
            exit_code=exit_code,
            version=detail.version,
        )
