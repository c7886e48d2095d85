"""No secret travels in environment variables or RunTask overrides (DescribeTasks shows overrides to
anyone with ecs:DescribeTasks; Lambda and task-definition environments are readable configuration).
The terminal's network: no ingress, egress only towards the VPC endpoints."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sessions.config import Settings
from sessions.ecs_tasks import EcsTasks
from sessions.record import Session

from tests.api import cfn

CREDENTIAL_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|CREDENTIAL|PRIVATE|API_?KEY|ACCESS_?KEY", re.I)
CREDENTIAL_VALUE = [
    re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),  # AWS access key ids
    re.compile(r"(?<![A-Za-z0-9/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])"),  # AWS secret access keys
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\."),  # JWTs
]


def credential_like(name: str, value: str) -> bool:
    return bool(CREDENTIAL_NAME.search(name)) or any(p.search(value) for p in CREDENTIAL_VALUE)


class RecordingEcs:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def run_task(self, **arguments: Any) -> dict[str, Any]:
        self.calls.append(arguments)
        return {
            "tasks": [
                {"taskArn": "arn:aws:ecs:us-east-1:123456789012:task/c/0f9e8d7c6b5a49382716a5b4c3d2e1f0"}
            ]
        }


def test_the_detector_recognises_credentials() -> None:
    assert credential_like("AWS_SECRET_ACCESS_KEY", "x")
    assert credential_like("X", "AKIAIOSFODNN7EXAMPLE")
    assert credential_like("X", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    assert not credential_like(
        "WORKSPACE_PREFIX", "workspaces/4f8e2b1a-9c3d-4e5f-8a7b-6c5d4e3f2a1b/hello-world/"
    )


def test_run_task_overrides_carry_no_credentials() -> None:
    ecs = RecordingEcs()
    settings = Settings(SESSIONS_TABLE="t", IMAGES='{"base": "family"}', CLUSTER_ARN="c", SUBNETS="s")
    session = Session.new(
        owner_id="4f8e2b1a-9c3d-4e5f-8a7b-6c5d4e3f2a1b",
        project_id="hello-world",
        image="base",
        tier="small",
        idle_timeout_seconds=1800,
        max_lifetime_seconds=3600,
        retention_days=1,
    )

    EcsTasks(settings, client=ecs).run(session, client_token="t-1", spot=False)

    [call] = ecs.calls
    overrides = call["overrides"]
    assert set(overrides) == {"cpu", "memory", "containerOverrides"}
    for container in overrides["containerOverrides"]:
        assert set(container) <= {"name", "environment"}  # no secrets, no role or command overrides
        for variable in container["environment"]:
            assert not credential_like(variable["name"], variable["value"]), variable
    assert "taskRoleArn" not in overrides and "executionRoleArn" not in overrides


def test_the_task_definition_holds_no_secret() -> None:
    [container] = cfn.resource("TerminalTaskDefinition")["Properties"]["ContainerDefinitions"]
    assert "Secrets" not in container
    for variable in container["Environment"]:
        assert not credential_like(variable["Name"], str(variable["Value"])), variable


@pytest.mark.parametrize(
    "function",
    [lid for lid, r in cfn.template()["Resources"].items() if r["Type"] == "AWS::Serverless::Function"],
)
def test_function_environments_hold_no_secret(function: str) -> None:
    own = cfn.resource(function)["Properties"].get("Environment", {}).get("Variables", {})
    shared = cfn.template()["Globals"]["Function"]["Environment"]["Variables"]
    for name, value in (shared | own).items():
        assert not credential_like(name, str(value)), (function, name)


def test_terminals_accept_no_connection_and_reach_only_the_endpoints() -> None:
    group = cfn.resource("TaskSecurityGroup")["Properties"]
    assert "SecurityGroupIngress" not in group
    ingress = [
        r for r in cfn.template()["Resources"].values() if r["Type"] == "AWS::EC2::SecurityGroupIngress"
    ]
    assert not ingress
    [inline] = group["SecurityGroupEgress"]  # an inline rule: EC2's default allow-all egress is removed
    assert (inline["IpProtocol"], inline["FromPort"], inline["ToPort"]) == ("tcp", 443, 443)
    assert inline["DestinationPrefixListId"]["Fn::If"][1] == {"Ref": "S3PrefixListId"}
    separate = [
        r["Properties"]
        for r in cfn.template()["Resources"].values()
        if r["Type"] == "AWS::EC2::SecurityGroupEgress"
    ]
    assert separate == [
        {
            "GroupId": {"Fn::GetAtt": ["TaskSecurityGroup", "GroupId"]},
            "IpProtocol": "tcp",
            "FromPort": 443,
            "ToPort": 443,
            "DestinationSecurityGroupId": {"Fn::GetAtt": ["EndpointSecurityGroup", "GroupId"]},
            "Description": "Interface endpoints (ECS Exec, ECR, logs, Lambda)",
        }
    ]
    endpoints = cfn.resource("EndpointSecurityGroup")["Properties"]["SecurityGroupIngress"]
    assert [rule["SourceSecurityGroupId"] for rule in endpoints] == [{"Ref": "TaskSecurityGroup"}]


def test_the_private_subnets_have_no_route_out() -> None:
    kinds = {r["Type"] for r in cfn.template()["Resources"].values()}
    assert not kinds & {
        "AWS::EC2::InternetGateway",
        "AWS::EC2::NatGateway",
        "AWS::EC2::Route",
        "AWS::EC2::EIP",
    }
    tasks = cfn.resource("WorkflowFunction")["Properties"]["Environment"]["Variables"]
    assert tasks["SECURITY_GROUPS"]["Fn::If"][1] == {"Ref": "TaskSecurityGroup"}
