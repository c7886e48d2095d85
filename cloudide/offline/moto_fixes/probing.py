"""What the corrections' probes share: clients in the probe's account, a workflow run, a stack deploy.

A probe runs inside `mock_aws` (started by `cloudide.offline.moto_fixes.proof`), on plain moto or on
corrected moto, so it uses only boto3 and moto's own state, never the offline stack.
"""

from __future__ import annotations

import json
import time
from typing import Any

import boto3

from cloudide.offline.waiting import eventually

REGION = "us-east-1"
ACCOUNT = "123456789012"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/probe"
SFN_CONFIG: Any = {"stepfunctions": {"execute_state_machine": True}}
"""moto's configuration for a probe: the Step Functions interpreter runs executions."""


def client(service: str) -> Any:
    return boto3.client(service, region_name=REGION)  # type: ignore[call-overload]


def start(definition: dict[str, Any], payload: Any = None, *, name: str | None = None) -> str:
    """Start an execution of a new state machine with `definition`; its ARN."""
    sfn = client("stepfunctions")
    machine = sfn.create_state_machine(
        name=f"probe{time.time_ns()}", definition=json.dumps(definition), roleArn=ROLE_ARN
    )["stateMachineArn"]
    named = {"name": name} if name else {}
    started = sfn.start_execution(stateMachineArn=machine, input=json.dumps(payload or {}), **named)
    return str(started["executionArn"])


def finished(execution_arn: str, timeout: float = 10.0) -> dict[str, Any]:
    """The execution's description once it has left RUNNING."""
    sfn = client("stepfunctions")
    return eventually(
        lambda: (d := sfn.describe_execution(executionArn=execution_arn))["status"] != "RUNNING" and d,
        timeout,
    )


def run(definition: dict[str, Any], payload: Any = None, timeout: float = 10.0) -> dict[str, Any]:
    return finished(start(definition, payload), timeout)


def task_state(resource: str, parameters: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A definition of one Task state."""
    task = {"Type": "Task", "Resource": resource, "Parameters": parameters, "End": True, **fields}
    return {"StartAt": "T", "States": {"T": task}}


def deploy(resources: dict[str, Any], outputs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Create a stack of `resources`; its description (moto creates stacks synchronously)."""
    cfn = client("cloudformation")
    name = f"probe{time.time_ns()}"
    template = {"Resources": resources, "Outputs": outputs or {}}
    cfn.create_stack(StackName=name, TemplateBody=json.dumps(template))
    return dict(cfn.describe_stacks(StackName=name)["Stacks"][0])


def ecs_cluster_with_task_definition(**definition: Any) -> Any:
    """An ECS client, with cluster `probe` and task definition family `probe` (512 MiB container)."""
    ecs = client("ecs")
    ecs.create_cluster(clusterName="probe")
    ecs.register_task_definition(
        family="probe",
        containerDefinitions=[{"name": "shell", "image": "image", "memory": 512}],
        **definition,
    )
    return ecs
