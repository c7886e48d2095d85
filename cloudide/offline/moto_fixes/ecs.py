# mypy: disable-error-code="method-assign,attr-defined,assignment,union-attr"
# mypy: disable-error-code="typeddict-item,arg-type,var-annotated,unused-ignore"
# (this module patches moto classes in place; moto's own annotations cannot describe that)
"""Corrections of moto's ECS: task status, RunTask, StopTask and ExecuteCommand as AWS answers them."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from botocore.exceptions import ClientError

from cloudide.offline.moto_fixes import probing
from cloudide.offline.moto_fixes.correction import Correction
from cloudide.offline.moto_fixes.settings import SETTINGS

SPOT_NEEDS_X86 = "FARGATE_SPOT capacity provider is not supported when using ARM architecture."


def fix_ecs_task_status() -> None:
    """Sets the `ecs::task` transition to manual with a huge count (`cloudide.offline.ecs.EcsDriver.
    set_task_status` moves tasks instead) and starts new tasks in PROVISIONING. Delete when moto's
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
    """Replaces RunTask and StopTask. `SETTINGS.run_task_faults` lets a test make the next RunTask calls
    return failures or raise. Delete the parts moto fixes."""
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
    """Returns a session whose `streamUrl` comes from `SETTINGS.exec_session_factory`; the peer behind it
    treats the token as single-use. Delete when moto implements ExecuteCommand."""
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


def fix_ecs_spot_architecture() -> None:
    """Wraps moto's ECS backend RunTask, under whichever RunTask response the other corrections install;
    idempotent. Delete if Fargate Spot on ARM64 is confirmed (README, first-deploy checks)."""
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


def _probe_ecs_task_status() -> None:
    ecs = probing.ecs_cluster_with_task_definition()
    task = ecs.run_task(cluster="probe", taskDefinition="probe", launchType="FARGATE")["tasks"][0]
    seen = [
        ecs.describe_tasks(cluster="probe", tasks=[task["taskArn"]])["tasks"][0]["lastStatus"]
        for _ in range(3)
    ]
    assert seen == ["PROVISIONING"] * 3, seen


def _probe_ecs_run_task() -> None:
    ecs = probing.ecs_cluster_with_task_definition()
    once = {"cluster": "probe", "taskDefinition": "probe", "launchType": "FARGATE", "clientToken": "probe-1"}
    first, again = (ecs.run_task(**once, enableExecuteCommand=True)["tasks"][0] for _ in range(2))
    assert first["taskArn"] == again["taskArn"], "the same clientToken started a second task"
    assert first.get("enableExecuteCommand") is True, first.get("enableExecuteCommand")


def _probe_ecs_execute_command() -> None:
    ecs = probing.ecs_cluster_with_task_definition()
    task = ecs.run_task(cluster="probe", taskDefinition="probe", launchType="FARGATE")["tasks"][0]
    try:
        ecs.execute_command(cluster="probe", task=task["taskArn"], command="/bin/sh", interactive=True)
    except ClientError as error:
        assert error.response["Error"]["Code"] == "InvalidParameterException", error.response["Error"]
    else:
        raise AssertionError("ExecuteCommand reached a task started without enableExecuteCommand")


def _probe_ecs_spot_architecture() -> None:
    ecs = probing.ecs_cluster_with_task_definition(runtimePlatform={"cpuArchitecture": "ARM64"})
    spot = [{"capacityProvider": "FARGATE_SPOT", "weight": 1}]
    try:
        ecs.run_task(cluster="probe", taskDefinition="probe", capacityProviderStrategy=spot)
    except ClientError as error:
        assert error.response["Error"]["Message"] == SPOT_NEEDS_X86, error.response["Error"]
    else:
        raise AssertionError("an ARM64 task started on FARGATE_SPOT")


ECS_TASK_STATUS = Correction(
    name="ecs-task-status",
    moto="starts tasks RUNNING and advances a task's status one step on every DescribeTasks",
    aws="a task starts PROVISIONING and its status follows the task, however often it is read",
    install=fix_ecs_task_status,
    probe=_probe_ecs_task_status,
)
ECS_RUN_TASK = Correction(
    name="ecs-run-task",
    moto="RunTask ignores clientToken (the same token twice starts two tasks), does not echo"
    " enableExecuteCommand, never returns failures[], crashes on awsvpc tasks without securityGroups and"
    " on task-level-only memory; StopTask moves lastStatus straight to STOPPED",
    aws="the same token with the same parameters returns the original tasks (other parameters:"
    " ClientException); the task echoes enableExecuteCommand and carries an ExecuteCommandAgent;"
    " StopTask only sets desiredStatus, the task reports STOPPED once its containers exit",
    install=fix_ecs_run_task,
    probe=_probe_ecs_run_task,
)
ECS_EXECUTE_COMMAND = Correction(
    name="ecs-execute-command",
    moto="has no ExecuteCommand (NotImplementedError)",
    aws="returns a session (sessionId, streamUrl, tokenValue); refuses a task started without"
    " enableExecuteCommand, one not RUNNING, or one whose ExecuteCommandAgent is not RUNNING",
    install=fix_ecs_execute_command,
    probe=_probe_ecs_execute_command,
)
ECS_SPOT_ARCHITECTURE = Correction(
    name="ecs-spot-architecture",
    moto="starts an ARM64 task on FARGATE_SPOT",
    aws="refuses it: the Fargate capacity providers guide says Spot runs X86_64 tasks only (the current"
    " API reference says ARM64 on platform 1.4.0; the stricter reading is kept until a deploy shows it)",
    install=fix_ecs_spot_architecture,
    probe=_probe_ecs_spot_architecture,
)
