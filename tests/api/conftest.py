"""The control plane's functions called in-process against moto, with resources built from template.yaml.

Each test gets a fresh moto account holding the template's two tables, the cluster and terminal task
definition, the VPC pieces RunTask checks, and a state machine with a trivial definition: moto does not
execute it (no `execute_state_machine`), so an API test sees exactly what the API did and nothing the
workflow would have done next. `cloudide.offline.moto_fixes` supplies what raw moto lacks for ECS
(awsvpc RunTask, the exec agent, ExecuteCommand), as in the local stack.
"""

from __future__ import annotations

import importlib
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import boto3
import pytest
from moto import mock_aws
from sessions import clock, wiring
from sessions.callbacks import WorkflowCallbacks
from sessions.record import Session, Status
from sessions.store import SessionStore

from cloudide.localstack.rest_api import (
    LocalRestApi,
    RestApiServer,
    gateway_responses_from_template,
    routes_from_template,
)
from cloudide.offline import moto_fixes, sam
from cloudide.offline.ecs import EcsDriver
from tests.api import cfn, gateway

STACK_NAME = "cloudide-dev"
REGION = gateway.REGION
# The functions, by the logical id template.yaml gives them, and their handlers.
API_FUNCTION = "ApiFunction"
TASK_EVENTS_FUNCTION = "TaskEventsFunction"
WORKFLOW_FUNCTION = "WorkflowFunction"
RECONCILER_FUNCTION = "ReconcilerFunction"
FUNCTIONS = (API_FUNCTION, TASK_EVENTS_FUNCTION, WORKFLOW_FUNCTION)
TRIVIAL_DEFINITION = {"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}


@dataclass(frozen=True)
class LambdaContext:
    """What Powertools reads from the Lambda context."""

    function_name: str
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 256
    aws_request_id: str = "52fdfc07-2182-454f-963f-5f0f9a621d72"
    log_stream_name: str = "2026/01/01/[$LATEST]0123456789abcdef"

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:{cfn.ACCOUNT_ID}:function:{self.function_name}"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


@dataclass
class Deployment:
    """The template's resources in moto, and how to call the functions the way Lambda would."""

    stack: cfn.Stack
    monkeypatch: pytest.MonkeyPatch
    store: SessionStore
    ecs: EcsDriver
    cluster_arn: str
    state_machine_arn: str
    callbacks: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (method, arguments)

    def use(self, function: str, **overrides: str) -> None:
        """Give this process exactly the environment the template gives `function` (plus overrides)."""
        for other in FUNCTIONS:
            for name in self.stack.function_environment(other):
                self.monkeypatch.delenv(name, raising=False)
        for name, value in (self.stack.function_environment(function) | overrides).items():
            self.monkeypatch.setenv(name, value)

    def invoke(self, function: str, event: dict[str, Any], **overrides: str) -> Any:
        """Call `function`'s handler (as the template names it) in this process, the way Lambda would."""
        self.use(function, **overrides)
        module, _, name = cfn.resource(function)["Properties"]["Handler"].rpartition(".")
        handler = getattr(importlib.import_module(module), name)
        return handler(event, LambdaContext(function_name=f"{STACK_NAME}-{function}"))

    def seed(
        self, session_id: str, owner_id: str, status: Status = Status.PROVISIONING, **fields: Any
    ) -> Session:
        """A live session record as the API writes it, with `fields` (item attribute names) on top."""
        moment = clock.now()
        item = {
            "sessionId": session_id,
            "ownerId": owner_id,
            "projectId": "hello-world",
            "image": "base",
            "tier": "small",
            "status": status.value,
            "statusReason": "seeded by the test",
            "createdAt": clock.rfc3339(moment),
            "lastActivityAt": clock.rfc3339(moment),
            "idleTimeoutSeconds": 1800,
            "maxLifetimeSeconds": 12 * 3600,
            "idleDeadline": clock.later(moment, 1800),
            "lifetimeDeadline": clock.later(moment, 12 * 3600),
        }
        return self.store.create(Session.from_item(item | fields))

    # The workflow's side, played step by step (moto runs no executions here) -----------------------

    def provision(self, session_id: str) -> str:
        """The Provision step: RunTask and park a token; returns the task's ARN."""
        self.invoke(
            WORKFLOW_FUNCTION,
            {"step": "provision", "sessionId": session_id, "token": f"provision-{session_id}"},
        )
        task_arn = self.store.require(session_id).task_arn
        assert task_arn, "provision recorded no task"
        return task_arn

    def report_task(self, task_arn: str, last_status: str, **changes: Any) -> Any:
        """ECS moves the task and emits the task-state event; the rule delivers it to the handler."""
        detail = self.ecs.set_task_status(self.cluster_arn, task_arn, last_status, **changes)
        return self.invoke(TASK_EVENTS_FUNCTION, task_state_event(detail))

    def make_ready(self, session_id: str) -> Session:
        """Provision, the task running with its exec agent, the Watch step: the session is READY."""
        task_arn = self.provision(session_id)
        self.report_task(task_arn, "RUNNING", agent_status="RUNNING")
        self.invoke(
            WORKFLOW_FUNCTION, {"step": "watch", "sessionId": session_id, "token": f"watch-{session_id}"}
        )
        session = self.store.require(session_id)
        assert session.status is Status.READY, session
        return session

    def executions(self) -> list[dict[str, Any]]:
        sfn = boto3.client("stepfunctions")
        return [dict(e) for e in sfn.list_executions(stateMachineArn=self.state_machine_arn)["executions"]]

    def tokens_answered(self, method: str) -> list[str]:
        return [arguments["taskToken"] for called, arguments in self.callbacks if called == method]


def _create_resources(stack: cfn.Stack) -> None:
    dynamodb = boto3.client("dynamodb")
    for logical_id in ("SessionsTable", "IdempotencyTable"):
        name = f"{STACK_NAME}-{logical_id}"
        dynamodb.create_table(**cfn.create_table_arguments(logical_id, name))
        stack.refs[logical_id] = name
        stack.attributes[f"{logical_id}.Arn"] = f"arn:aws:dynamodb:{REGION}:{cfn.ACCOUNT_ID}:table/{name}"

    ec2 = boto3.client("ec2")
    vpc = ec2.create_vpc(CidrBlock=stack.resolve(cfn.resource("Vpc")["Properties"]["CidrBlock"]))["Vpc"]
    stack.refs["Vpc"] = vpc["VpcId"]
    for logical_id in ("PrivateSubnetA", "PrivateSubnetB"):
        cidr = cfn.resource(logical_id)["Properties"]["CidrBlock"]
        stack.refs[logical_id] = ec2.create_subnet(VpcId=vpc["VpcId"], CidrBlock=cidr)["Subnet"]["SubnetId"]
    stack.refs["TaskSecurityGroup"] = ec2.create_security_group(
        GroupName="terminals",
        Description=cfn.resource("TaskSecurityGroup")["Properties"]["GroupDescription"],
        VpcId=vpc["VpcId"],
    )["GroupId"]

    ecs = boto3.client("ecs")
    # CloudFormation suffixes physical names; a fresh suffix per test also keeps RunTask clientTokens
    # (remembered process-wide by moto_fixes, keyed by cluster name) from matching an earlier test's.
    suffix = uuid.uuid4().hex[:12].upper()
    cluster = ecs.create_cluster(clusterName=f"{STACK_NAME}-Cluster-{suffix}")["cluster"]
    stack.refs["Cluster"], stack.attributes["Cluster.Arn"] = cluster["clusterName"], cluster["clusterArn"]
    definition = cfn.resource("TerminalTaskDefinition")["Properties"]
    stack.refs["TerminalTaskDefinition"] = ecs.register_task_definition(
        family=stack.resolve(definition["Family"]),
        requiresCompatibilities=definition["RequiresCompatibilities"],
        networkMode=definition["NetworkMode"],
        cpu=definition["Cpu"],
        memory=definition["Memory"],
        containerDefinitions=[
            {"name": c["Name"], "image": stack.resolve(c["Image"]), "essential": c["Essential"]}
            for c in definition["ContainerDefinitions"]
        ],
    )["taskDefinition"]["taskDefinitionArn"]

    sfn = boto3.client("stepfunctions")
    stack.refs["SessionStateMachine"] = sfn.create_state_machine(
        name=f"{STACK_NAME}-SessionStateMachine",
        definition=json.dumps(TRIVIAL_DEFINITION),
        roleArn=f"arn:aws:iam::{cfn.ACCOUNT_ID}:role/{STACK_NAME}-SessionStateMachineRole",
    )["stateMachineArn"]


@pytest.fixture
def deployment(monkeypatch: pytest.MonkeyPatch) -> Iterator[Deployment]:
    for name, value in {
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        # moto would otherwise load thousands of AMIs into every fresh EC2 backend; no test runs instances.
        "MOTO_EC2_LOAD_DEFAULT_AMIS": "false",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        moto_fixes.install()
        stack = cfn.Stack(
            name=STACK_NAME, region=REGION, parameters={"TerminalImageUri": "local/terminal:dev"}
        )
        _create_resources(stack)
        deployment = Deployment(
            stack=stack,
            monkeypatch=monkeypatch,
            store=SessionStore(stack.refs["SessionsTable"]),
            ecs=EcsDriver(cfn.ACCOUNT_ID, REGION),
            cluster_arn=stack.attributes["Cluster.Arn"],
            state_machine_arn=stack.refs["SessionStateMachine"],
        )
        # moto accepts any task token silently; recording the calls shows which tokens were answered.
        original_send = WorkflowCallbacks._send

        def send(callbacks: WorkflowCallbacks, method: str, **arguments: Any) -> bool:
            deployment.callbacks.append((method, arguments))
            return original_send(callbacks, method, **arguments)

        monkeypatch.setattr(WorkflowCallbacks, "_send", send)
        try:
            yield deployment
        finally:
            # Components hold clients and table handles of this moto account: never reuse them.
            wiring._build.cache_clear()
            moto_fixes.SETTINGS.run_task_faults.clear()


@dataclass(frozen=True)
class ApiResponse:
    status: int
    body: Any
    headers: dict[str, str]


ApiCall = Callable[..., ApiResponse]


@pytest.fixture
def call_api(deployment: Deployment) -> ApiCall:
    """`call_api(method, path, body=..., headers=..., sub=...)` -> the API function's response, parsed."""

    def call(method: str, path: str, **request: Any) -> ApiResponse:
        return parse_api_response(deployment.invoke(API_FUNCTION, gateway.api_event(method, path, **request)))

    return call


def parse_api_response(response: dict[str, Any]) -> ApiResponse:
    body = response.get("body")
    return ApiResponse(
        status=int(response["statusCode"]),
        body=json.loads(body) if body else None,
        headers=dict(response.get("headers") or {}),
    )


def task_state_event(detail: dict[str, Any]) -> dict[str, Any]:
    """The EventBridge envelope ECS puts a task-state change in."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "ECS Task State Change",
        "source": "aws.ecs",
        "account": cfn.ACCOUNT_ID,
        "time": clock.rfc3339(clock.now()),
        "region": REGION,
        "resources": [detail["taskArn"]],
        "detail": detail,
    }


# -- the API behind the local REST API: what a browser or an IDE really receives ----------------------


@cache
def _translated(origin: str) -> dict[str, Any]:
    parameters = {"TerminalImageUri": "local/terminal:dev", "CorsAllowOrigin": f"'{origin}'"}
    return dict(sam.translate(cfn.TEMPLATE, parameters=parameters, region=REGION).template)


@contextmanager
def rest_api_in_front_of(deployment: Deployment, origin: str) -> Iterator[str]:
    """The local REST API (routes, authorizer stand-in, gateway responses of the template) in front of the
    API function, deployed with ``CorsAllowOrigin`` set to ``origin``; yields its URL."""
    deployment.stack.parameters["CorsAllowOrigin"] = f"'{origin}'"
    template, parameters = _translated(origin), {"CorsAllowOrigin": f"'{origin}'"}
    one_at_a_time = threading.Lock()  # the function's environment is this process's

    def invoke(function: str, event: dict[str, Any]) -> tuple[dict[str, Any] | None, bool]:
        with one_at_a_time:
            try:
                return deployment.invoke(API_FUNCTION, event), False
            except Exception as error:  # Lambda's answer to an unhandled exception
                return {"errorType": type(error).__name__, "errorMessage": str(error)}, True

    rest_api = LocalRestApi(
        routes_from_template(template, parameters),
        {API_FUNCTION: API_FUNCTION},
        invoke,
        gateway_responses_from_template(template, parameters),
    )
    rest_api.ready.set()
    with RestApiServer(rest_api, port=0) as server:
        yield server.url
