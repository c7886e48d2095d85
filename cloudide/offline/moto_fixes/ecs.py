# mypy: disable-error-code="method-assign,attr-defined,assignment,union-attr"
# mypy: disable-error-code="typeddict-item,arg-type,var-annotated,unused-ignore"
# (this module patches moto classes in place; moto's own annotations cannot describe that)
"""Corrections of moto's ECS: task status, RunTask, StopTask and ExecuteCommand as AWS answers them."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from cloudide.offline.moto_fixes.settings import SETTINGS


def fix_ecs_task_status() -> None:
    """moto advances a task's status one step on every read (RUNNING -> DEACTIVATING -> ... as you
    DescribeTasks). On AWS the status follows the task. The `ecs::task` transition is set to manual
    with a huge count; `cloudide.offline.ecs.EcsDriver.set_task_status` moves it instead. moto also
    starts tasks in RUNNING: new tasks start in PROVISIONING here, as on AWS. Delete when moto's
    default transition is manual."""
    from moto.ecs.models import Task
    from moto.moto_api import state_manager

    state_manager.set_transition("ecs::task", {"progression": "manual", "times": 10**12})
    original_init = Task.__dict__.get("_cloudide_original_init", Task.__init__)
    Task._cloudide_original_init = original_init

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self.status = "PROVISIONING"
        self.version = 1
        self.created_at = dt.datetime.now(dt.UTC)
        self.enable_execute_command = False
        self.stop_code = None
        for container in self.containers:
            container.managed_agents = []

    Task.__init__ = __init__


def _ecs_error(code: str, message: str) -> Exception:
    from moto.ecs.exceptions import ECSException

    return ECSException(code, message)


def fix_ecs_run_task() -> None:
    """moto's RunTask ignores `clientToken` (the same token twice starts two tasks), does not echo
    `enableExecuteCommand`, never returns `failures[]`, crashes on awsvpc tasks without
    `securityGroups`, and StopTask moves `lastStatus` straight to STOPPED. On AWS the same token with
    the same parameters returns the original tasks (other parameters -> ClientException), the task
    echoes enableExecuteCommand and carries an ExecuteCommandAgent, and StopTask only sets
    desiredStatus (the task reports STOPPED once its containers exit). `SETTINGS.run_task_faults` lets a
    test make the next calls return failures or raise. Delete the parts moto fixes."""
    from moto.ecs.responses import EC2ContainerServiceResponse

    tokens: dict[tuple[str, str, str], tuple[str, list[str]]] = {}

    def run_task(self: Any) -> Any:
        from moto.core.responses import ActionResult

        if SETTINGS.run_task_faults:
            fault = SETTINGS.run_task_faults.popleft()
            if fault.error:
                raise _ecs_error(*fault.error)
            return ActionResult({"tasks": [], "failures": fault.failures or []})
        params = {k: v for k, v in self._get_params().items() if k != "clientToken"}
        cluster = self._get_param("cluster", "default")
        token = self._get_param("clientToken")
        fingerprint = json.dumps(params, sort_keys=True, default=str)
        key = (self.current_account, self.region, f"{cluster.split('/')[-1]}|{token}")
        if token and key in tokens:
            seen_fingerprint, arns = tokens[key]
            if seen_fingerprint != fingerprint:
                raise _ecs_error("ClientException", "The clientToken was used with different parameters.")
            return ActionResult({"tasks": self.ecs_backend.describe_tasks(cluster, arns), "failures": []})
        network = self._get_param("networkConfiguration")
        if network and "awsvpcConfiguration" in network:
            network["awsvpcConfiguration"].setdefault("securityGroups", [])
        tasks = self.ecs_backend.run_task(
            cluster,
            self._get_param("taskDefinition"),
            self._get_int_param("count", 1),
            self._get_param("overrides"),
            self._get_param("startedBy"),
            self._get_param("tags"),
            self._get_param("launchType"),
            network,
            self._get_param("group"),
            self._get_param("platformVersion"),
            self._get_param("capacityProviderStrategy"),
        )
        for task in tasks:
            task.enable_execute_command = bool(self._get_param("enableExecuteCommand", False))
            if task.enable_execute_command:
                for container in task.containers:
                    container.managed_agents = [{"name": "ExecuteCommandAgent", "lastStatus": "PENDING"}]
        if token:
            tokens[key] = (fingerprint, [task.task_arn for task in tasks])
        return ActionResult({"tasks": tasks, "failures": []})

    def stop_task(self: Any) -> Any:
        from moto.core.responses import ActionResult

        task = find_task(self.ecs_backend, self._get_param("cluster", "default"), self._get_param("task"))
        if task.desired_status != "STOPPED":
            task.desired_status = "STOPPED"
            task.stop_code = "UserInitiated"
            task.stopped_reason = self._get_param("reason") or "Task stopped by user"
            task.version += 1
            for listener in list(SETTINGS.stop_task_listeners):
                listener(task)
        return ActionResult({"task": task})

    EC2ContainerServiceResponse.run_task = run_task
    _fix_task_level_resources()
    # awsvpc RunTask reads the ENI's private DNS name, which moto sets only in VPCs with DNS hostnames.
    from moto.ec2.models.elastic_network_interfaces import NetworkInterface

    if not hasattr(NetworkInterface, "private_dns_name"):
        NetworkInterface.private_dns_name = ""
    EC2ContainerServiceResponse.stop_task = stop_task


def _fix_task_level_resources() -> None:
    """moto sums container-level memory and crashes (`int += None`) on Fargate task definitions that
    set memory only at task level, as AWS allows; the task-level values count when containers have none."""
    from moto.ecs.models import EC2ContainerServiceBackend

    original = EC2ContainerServiceBackend.__dict__["_calculate_task_resource_requirements"].__func__

    def calculate(task_definition: Any) -> dict[str, Any]:
        definitions = task_definition.container_definitions
        patched = [
            {"memory": 0, **d}
            if not any(k in d for k in ("memory", "Memory", "memoryReservation", "MemoryReservation"))
            else d
            for d in definitions
        ]
        task_definition.container_definitions = patched
        try:
            needs = dict(original(task_definition))
        finally:
            task_definition.container_definitions = definitions
        needs["MEMORY"] = needs["MEMORY"] or int(task_definition.memory or 0)
        needs["CPU"] = needs["CPU"] or int(task_definition.cpu or 0)
        return needs

    EC2ContainerServiceBackend._calculate_task_resource_requirements = staticmethod(calculate)


def find_task(backend: Any, cluster: str, task: str) -> Any:
    """The moto task `task` (ARN or id) in `cluster`, or InvalidParameterException as AWS answers."""
    cluster_name = backend._get_cluster(cluster).name
    task_id = task.split("/")[-1]
    for arn, candidate in backend.tasks.get(cluster_name, {}).items():
        if arn.split("/")[-1] == task_id:
            return candidate
    raise _ecs_error("InvalidParameterException", "The referenced task was not found.")


def fix_ecs_execute_command() -> None:
    """moto has no ExecuteCommand (NotImplementedError). This returns a session whose `streamUrl`
    comes from `SETTINGS.exec_session_factory`; the peer behind it treats the token as single-use.
    AWS refuses when the task was started without enableExecuteCommand, when it is not RUNNING, or when
    its ExecuteCommandAgent is not RUNNING. Delete when moto implements ExecuteCommand."""
    from moto.core.responses import ActionResult
    from moto.ecs.responses import EC2ContainerServiceResponse

    def execute_command(self: Any) -> Any:
        cluster = self.ecs_backend._get_cluster(self._get_param("cluster", "default"))
        task = find_task(self.ecs_backend, cluster.arn, self._get_param("task"))
        if not self._get_param("interactive"):
            raise _ecs_error("InvalidParameterException", "Interactive is the only mode supported currently.")
        if not task.enable_execute_command:
            raise _ecs_error(
                "InvalidParameterException",
                "The execute command failed because execute command was not enabled when the task was run"
                " or the execute command agent isn't running. Wait and try again or run a new task with"
                " execute command enabled and try again.",
            )
        container_name = self._get_param("container") or task.containers[0].name
        container = next((c for c in task.containers if c.name == container_name), None)
        agent = next((a for a in (container.managed_agents if container else [])), {})
        if task.last_status != "RUNNING" or agent.get("lastStatus") != "RUNNING":
            raise _ecs_error(
                "TargetNotConnectedException",
                "The execute command failed due to an internal error. Try again later.",
            )
        session = SETTINGS.exec_session_factory(cluster.arn, task.task_arn, self._get_param("command"))
        return ActionResult(
            {
                "clusterArn": cluster.arn,
                "containerArn": container.container_arn if container else None,
                "containerName": container_name,
                "interactive": True,
                "taskArn": task.task_arn,
                "session": session,
            }
        )

    EC2ContainerServiceResponse.execute_command = execute_command
