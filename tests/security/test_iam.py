"""Least privilege, statement by statement, on the template as `sam deploy` would create it.

No action wildcard anywhere. A resource wildcard only where AWS offers no resource to name, each in
WILDCARD_RESOURCES with the reason. The dangerous permissions are pinned to exactly this product's
resources: RunTask to this task-definition family in this cluster, PassRole to the two task roles,
ExecuteCommand to the API function on this cluster's session-tagged terminal containers; every role
is denied ssm:StartSession (a raw Session Manager session would skip the API's fixed wrapper).
"""

from __future__ import annotations

import pytest

from tests.security.iam_policies import Statement, resources, roles, statements

# (owner, Sid) -> why the resource must be "*".
WILDCARD_RESOURCES: dict[tuple[str, str], str] = {
    (
        "WorkflowFunctionRole",
        "FindSessionTasks",
    ): "ListTasks is authorized on container instances; scoped by the ecs:cluster condition",
    (
        "WorkflowFunctionRole",
        "AnswerWorkflowCallbacks",
    ): "task tokens are not resources: SendTask* take no ARN",
    ("ApiFunctionRole", "AnswerWorkflowCallbacks"): "task tokens are not resources: SendTask* take no ARN",
    (
        "UsageReportFunctionRole",
        "AnswerWorkflowCallbacks",
    ): "task tokens are not resources: SendTask* take no ARN",
    (
        "ReconcilerFunctionRole",
        "AnswerWorkflowCallbacks",
    ): "task tokens are not resources: SendTask* take no ARN",
    (
        "ReconcilerFunctionRole",
        "ListTerminalTasks",
    ): "ListTasks is authorized on container instances; scoped by the ecs:cluster condition",
    (
        "TaskEventsFunctionRole",
        "AnswerWorkflowCallbacks",
    ): "task tokens are not resources: SendTask* take no ARN",
    (
        "SessionStateMachineRole",
        "LogDelivery",
    ): "CloudWatch Logs vended-delivery APIs support no resource-level permissions",
    ("TaskRole", "ExecChannels"): "the Session Manager message APIs (ECS Exec's agent) take no resource ARN",
    ("TaskRole", "ExecSessionLogGroups"): "the exec agent's DescribeLogGroups takes no log group ARN",
    (
        "DenyTerminalSessionsPolicy",
        "NoDirectSessions",
    ): "a Deny: an ECS task's SSM target has no documented ARN form, so deny on all",
}
# AWS managed policies (documents AWS maintains, with their own wildcards) and why each is needed.
AWS_MANAGED = {
    "AWSLambdaBasicExecutionRole": "every function writes its own logs (SAM adds it)",
    "AWSXrayWriteOnlyAccess": "Tracing: Active (X-Ray PutTraceSegments takes no ARN)",
    "AmazonECSTaskExecutionRolePolicy": "ECS pulls the image (GetAuthorizationToken takes no ARN) and writes the task's logs",
    "AmazonAPIGatewayPushToCloudWatchLogs": "API Gateway writes the stage's access logs (the account's CloudWatch role)",
}
TASK_ROLES = [{"Fn::GetAtt": ["TaskRole", "Arn"]}, {"Fn::GetAtt": ["TaskExecutionRole", "Arn"]}]
CLUSTER_TASKS = {"Fn::Sub": "arn:${AWS::Partition}:ecs:${AWS::Region}:${AWS::AccountId}:task/${Cluster}/*"}
IN_CLUSTER = {"ArnEquals": {"ecs:cluster": {"Fn::GetAtt": ["Cluster", "Arn"]}}}
ALL = list(statements())


def granting(action: str) -> list[Statement]:
    return [s for s in ALL if s.effect == "Allow" and action in s.actions]


def test_every_policy_is_listed() -> None:
    owners = {s.owner for s in ALL}
    # These roles hold AWS managed policies only (and the shared deny).
    assert set(roles()) - {"TaskExecutionRole", "ApiGatewayCloudWatchRole"} <= owners
    assert len(ALL) >= 20


@pytest.mark.parametrize("statement", ALL, ids=lambda s: f"{s.owner}.{s.sid or s.actions[0]}")
def test_no_action_wildcard(statement: Statement) -> None:
    assert not [action for action in statement.actions if "*" in action], statement


@pytest.mark.parametrize("statement", ALL, ids=lambda s: f"{s.owner}.{s.sid or s.actions[0]}")
def test_a_resource_wildcard_only_where_aws_requires_one(statement: Statement) -> None:
    if statement.wildcard_resource:
        assert (statement.owner, statement.sid) in WILDCARD_RESOURCES, statement


def test_every_justified_wildcard_still_exists() -> None:
    present = {(s.owner, s.sid) for s in ALL if s.wildcard_resource}
    assert present == set(WILDCARD_RESOURCES)


def test_only_justified_aws_managed_policies() -> None:
    for name, properties in roles().items():
        for arn in properties.get("ManagedPolicyArns", []):
            if isinstance(arn, dict) and arn.get("Ref"):
                continue  # this template's own managed policies are among the statements checked above
            text = arn if isinstance(arn, str) else arn["Fn::Sub"]
            assert text.rsplit("/", 1)[-1] in AWS_MANAGED, (name, arn)


def test_run_task_only_the_catalog_families_only_in_this_cluster() -> None:
    [statement] = granting("ecs:RunTask")
    families = {
        properties["Properties"]["Family"]["Fn::Sub"]
        for properties in resources().values()
        if properties["Type"] == "AWS::ECS::TaskDefinition"
    }
    assert families == {f"${{AWS::StackName}}-terminal{suffix}" for suffix in ("", "-python", "-node")}
    assert set(map(str, statement.resources)) == {
        str(
            {
                "Fn::Sub": f"arn:${{AWS::Partition}}:ecs:${{AWS::Region}}:${{AWS::AccountId}}:task-definition/{family}:*"
            }
        )
        for family in families
    }
    assert statement.condition == IN_CLUSTER


def test_pass_role_only_the_two_task_roles_only_to_ecs() -> None:
    [statement] = granting("iam:PassRole")
    assert sorted(statement.resources, key=str) == sorted(TASK_ROLES, key=str)
    assert statement.condition == {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}


def test_execute_command_only_for_the_api_on_this_clusters_session_tasks() -> None:
    # ExecuteCommand authorizes the task and its cluster: one statement each (tests/security/iam_calls.py).
    statement, cluster = granting("ecs:ExecuteCommand")
    assert statement.owner == cluster.owner == "ApiFunctionRole"
    assert cluster.resources == ({"Fn::GetAtt": ["Cluster", "Arn"]},)
    assert cluster.condition == {"StringEquals": {"ecs:container-name": "terminal"}}
    assert statement.resources == (CLUSTER_TASKS,)
    assert statement.condition["ArnEquals"] == IN_CLUSTER["ArnEquals"]
    assert statement.condition["StringEquals"] == {"ecs:container-name": "terminal"}
    assert statement.condition["Null"] == {"aws:ResourceTag/session-id": "false"}


@pytest.mark.parametrize("role", sorted(roles()))
def test_every_role_is_denied_session_manager_sessions(role: str) -> None:
    [deny] = [s for s in ALL if s.effect == "Deny" and "ssm:StartSession" in s.actions]
    attached = [*roles()[role].get("ManagedPolicyArns", [])]
    assert {"Ref": deny.owner} in attached, role
    assert not granting("ssm:StartSession")


def test_the_task_role_reaches_no_s3_and_only_the_task_functions() -> None:
    task_statements = [s for s in ALL if s.owner in ("TaskRole", "TaskRoleVendingPolicy")]
    assert not [s for s in task_statements if any(a.startswith("s3:") for a in s.actions)]
    [invoke] = [s for s in task_statements if "lambda:InvokeFunction" in s.actions]
    assert invoke.resources == (
        {"Fn::GetAtt": ["WorkspaceCredentialsFunction", "Arn"]},
        {"Fn::GetAtt": ["UsageReportFunction", "Arn"]},
    )
    vending = resources()["TaskRoleVendingPolicy"]["Properties"]
    assert vending["Roles"] == [{"Ref": "TaskRole"}]


def test_only_the_vending_function_may_assume_the_workspace_role() -> None:
    trust = roles()["WorkspaceAccessRole"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust == [
        {
            "Effect": "Allow",
            "Principal": {"AWS": {"Fn::GetAtt": ["WorkspaceCredentialsFunctionRole", "Arn"]}},
            "Action": "sts:AssumeRole",
        }
    ]
    [assume] = granting("sts:AssumeRole")
    assert assume.resources == ({"Fn::GetAtt": ["WorkspaceAccessRole", "Arn"]},)


def test_the_task_role_trusts_only_ecs_tasks() -> None:
    # The vending function identifies a task by its role session name, which only ECS chooses.
    [trust] = roles()["TaskRole"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
