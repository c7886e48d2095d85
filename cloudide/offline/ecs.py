"""Drive offline ECS tasks the way the Fargate control plane would.

moto never moves a task on its own once `moto_fixes` is installed: the local task runner, or a test,
reports each change through `EcsDriver.set_task_status`, which returns the `ECS Task State Change`
event detail AWS would emit, and `put_task_event` puts it on the default bus so rules fire.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

from cloudide.offline import moto_fixes
from cloudide.offline.moto_fixes import RunTaskFault

SPOT_NEEDS_X86 = "FARGATE_SPOT capacity provider is not supported when using ARM architecture."
"""ECS's refusal of an ARM64 task on Fargate Spot (a ClientException, not a capacity failure)."""
CAPACITY_UNAVAILABLE = (
    "Capacity is unavailable at this time. Please try again later or in a different availability zone"
)
TASK_STATUSES = ("PROVISIONING", "PENDING", "ACTIVATING", "RUNNING", "DEACTIVATING", "STOPPING",
                 "DEPROVISIONING", "STOPPED")  # fmt: skip


def refuse_unsupported_capacity() -> None:
    """RunTask as ECS checks it before placing anything: Fargate Spot runs only X86_64 tasks (Fargate
    capacity providers guide; the ECS error above). moto starts whatever it is asked to. Wraps moto's
    ECS backend, under whichever RunTask response the corrections install; idempotent."""
    from moto.ecs.exceptions import EcsClientException
    from moto.ecs.models import EC2ContainerServiceBackend

    original = EC2ContainerServiceBackend.run_task
    if getattr(original, "_cloudide_capacity_rules", False):
        return

    def run_task(self: Any, cluster_str: str, task_definition_str: str, *args: Any, **kwargs: Any) -> Any:
        strategy = kwargs.get("capacity_provider_strategy") or (args[8] if len(args) > 8 else None) or []
        platform = self.describe_task_definition(task_definition_str).runtime_platform or {}
        spot = any(item.get("capacityProvider") == "FARGATE_SPOT" for item in strategy)
        if spot and platform.get("cpuArchitecture") == "ARM64":
            raise EcsClientException(SPOT_NEEDS_X86)
        return original(self, cluster_str, task_definition_str, *args, **kwargs)

    run_task._cloudide_capacity_rules = True  # type: ignore[attr-defined]
    EC2ContainerServiceBackend.run_task = run_task  # type: ignore[method-assign]


def _iso(moment: dt.datetime | None) -> str | None:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z" if moment else None


class EcsDriver:
    """Status changes, exec-agent status, event emission and RunTask fault injection for one account and
    region of the offline ECS."""

    def __init__(self, account_id: str = "123456789012", region: str = "us-east-1") -> None:
        self.account_id = account_id
        self.region = region

    @property
    def _backend(self) -> Any:
        from moto.ecs.models import ecs_backends

        return ecs_backends[self.account_id][self.region]

    def task(self, cluster: str, task_arn: str) -> Any:
        """The moto task object (for inspection: desired_status, overrides, tags, ...)."""
        return moto_fixes.find_task(self._backend, cluster, task_arn)

    def set_task_status(
        self,
        cluster: str,
        task_arn: str,
        last_status: str,
        *,
        stop_code: str | None = None,
        stopped_reason: str | None = None,
        exit_code: int | None = None,
        container_reason: str | None = None,
        agent_status: str | None = None,
    ) -> dict[str, Any]:
        """Move the task to `last_status` and return the event detail AWS would emit for the change.

        `exit_code` and `container_reason` (e.g. "OutOfMemoryError: Container killed due to memory usage")
        apply to every container; `agent_status` sets the ExecuteCommandAgent's lastStatus (only changed
        when given; a STOPPED task's agent stops too). Each call increases `version`.
        """
        if last_status not in TASK_STATUSES:
            raise ValueError(f"last_status must be one of {TASK_STATUSES}, got {last_status!r}")
        task = self.task(cluster, task_arn)
        now = dt.datetime.now(dt.UTC)
        task.status = last_status
        if last_status == "RUNNING" and not getattr(task, "started_at", None):
            task.started_at = now
        if last_status == "STOPPED":
            task.desired_status = "STOPPED"
            task.stopped_at = now
            task.stop_code = stop_code or task.stop_code or "EssentialContainerExited"
            agent_status = agent_status or "STOPPED"
        elif stop_code:
            task.stop_code = stop_code
        if stopped_reason is not None:
            task.stopped_reason = stopped_reason
        for container in task.containers:
            container.last_status = {"STOPPED": "STOPPED", "RUNNING": "RUNNING"}.get(last_status, "PENDING")
            if exit_code is not None:
                container.exitCode = exit_code
            if container_reason is not None:
                container.reason = container_reason
            if agent_status and container.managed_agents:
                for agent in container.managed_agents:
                    agent["lastStatus"] = agent_status
        task.version += 1
        return self.event_detail(task)

    def set_agent_status(self, cluster: str, task_arn: str, agent_status: str) -> None:
        """Only the exec agent changed: AWS emits no task event for it, so neither does this."""
        for container in self.task(cluster, task_arn).containers:
            for agent in container.managed_agents:
                agent["lastStatus"] = agent_status

    def event_detail(self, task: Any) -> dict[str, Any]:
        """The `detail` of an ECS Task State Change event for `task` (timestamps as ISO strings)."""
        stopped = task.status == "STOPPED"
        detail: dict[str, Any] = {
            "taskArn": task.task_arn,
            "clusterArn": task.cluster_arn,
            "taskDefinitionArn": task.task_definition_arn,
            "lastStatus": task.status,
            "desiredStatus": task.desired_status,
            "group": task.group,
            "startedBy": task.started_by,
            "launchType": task.launch_type or "FARGATE",
            "capacityProviderName": task.capacity_provider_name or "FARGATE",
            "overrides": task.overrides or {"containerOverrides": []},
            "createdAt": _iso(task.created_at),
            "startedAt": _iso(getattr(task, "started_at", None)),
            "updatedAt": _iso(dt.datetime.now(dt.UTC)),
            "version": task.version,
            "containers": [
                {
                    "containerArn": c.container_arn,
                    "name": c.name,
                    "lastStatus": c.last_status,
                    "taskArn": task.task_arn,
                    **({"exitCode": c.exitCode} if stopped else {}),
                    **({"reason": c.reason} if getattr(c, "reason", None) else {}),
                }
                for c in task.containers
            ],
        }
        if task.stop_code:
            detail["stopCode"] = task.stop_code
        if task.stopped_reason:
            detail["stoppedReason"] = task.stopped_reason
        if stopped:
            detail["stoppedAt"] = _iso(getattr(task, "stopped_at", None))
        return detail

    def put_task_event(self, detail: dict[str, Any]) -> None:
        """Put the event on the default bus as ECS does, so rules on aws.ecs fire."""
        from moto.events.models import events_backends

        events_backends[self.account_id][self.region].put_events(
            [
                {
                    "Source": "aws.ecs",
                    "DetailType": "ECS Task State Change",
                    "Detail": json.dumps(detail),
                    "Resources": [detail["taskArn"]],
                    "EventBusName": "default",
                }
            ]
        )

    def report(self, cluster: str, task_arn: str, last_status: str, **changes: Any) -> dict[str, Any]:
        """`set_task_status` then `put_task_event`: what a Fargate task does on every change."""
        detail = self.set_task_status(cluster, task_arn, last_status, **changes)
        self.put_task_event(detail)
        return detail

    def fail_next_run_tasks(
        self, count: int = 1, *, reason: str = CAPACITY_UNAVAILABLE, error: tuple[str, str] | None = None
    ) -> None:
        """Make the next `count` RunTask calls return `failures[{reason}]`, or raise `error` (code, message),
        e.g. ("ThrottlingException", "Rate exceeded")."""
        for _ in range(count):
            moto_fixes.SETTINGS.run_task_faults.append(
                RunTaskFault(error=error) if error else RunTaskFault(failures=[{"arn": "", "reason": reason}])
            )

    def on_stop_task(self, listener: Callable[[Any], None]) -> Callable[[], None]:
        """Call `listener(task)` when StopTask asks a task to stop; returns the unsubscribe function."""
        moto_fixes.SETTINGS.stop_task_listeners.append(listener)
        return lambda: moto_fixes.SETTINGS.stop_task_listeners.remove(listener)
