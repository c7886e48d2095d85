"""Every AWS call each role's code makes is allowed by that role, by the Service Authorization Reference's
own account of what the call needs (tests/security/iam_calls.py). The report (`python -m
tests.security.iam_calls`, or `pytest -s` here) lists, per role, each call,
where the code makes it, and the statement that allows each resource it needs."""

from __future__ import annotations

import pytest

from tests.security import iam_calls
from tests.security.iam_calls import Call, CheckedCall

REPORT = iam_calls.report()


def test_every_call_each_role_makes_is_allowed_by_its_statements() -> None:
    print(iam_calls.render(REPORT))  # the listing: pytest -s shows it, a failure shows it anyway
    denied = [item for item in REPORT if item.denied]
    assert not denied, iam_calls.render(denied)


@pytest.mark.parametrize(
    ("role", "action"),
    [
        ("ApiFunctionRole", "ecs:ExecuteCommand"),
        ("ApiFunctionRole", "states:StartExecution"),
        ("ApiFunctionRole", "dynamodb:DeleteItem"),  # only Powertools' idempotency layer deletes
        ("WorkflowFunctionRole", "ecs:RunTask"),
        ("WorkflowFunctionRole", "iam:PassRole"),  # RunTask's dependent action (SAR)
        ("TaskEventsFunctionRole", "states:SendTaskSuccess"),  # dispatched through getattr
        ("ReconcilerFunctionRole", "states:StopExecution"),
        ("WorkspaceCredentialsFunctionRole", "sts:AssumeRole"),
        ("TaskRole", "lambda:InvokeFunction"),
        ("SessionStateMachineRole", "lambda:InvokeFunction"),  # the workflow's Task states
    ],
)
def test_the_calls_are_found_in_the_code(role: str, action: str) -> None:
    assert action in {item.call.action for item in REPORT if item.principal == role}


def test_the_execute_command_cluster_and_task_are_both_required() -> None:
    [item] = [i for i in REPORT if i.principal == "ApiFunctionRole" and i.call.action == "ecs:ExecuteCommand"]
    assert set(item.allowed_by) == {"cluster", "task"}


def _checked(statement: dict, action: str = "ecs:ExecuteCommand") -> CheckedCall:
    policy = [
        iam_calls.Statement(
            owner="Role",
            sid=statement.get("Sid", "S"),
            effect="Allow",
            actions=(action,),
            resources=tuple(statement["Resource"]),
            condition=statement.get("Condition", {}),
        )
    ]
    return iam_calls.check_call("Role", Call(action, "test"), policy)


def test_a_task_only_grant_is_denied_on_the_cluster() -> None:
    checked = _checked({"Resource": ["arn:aws:ecs:us-east-1:123456789012:task/c/*"]})
    assert checked.problems == ["no Allow statement names a cluster"]


def test_a_resource_tag_the_clusters_cannot_carry_is_denied() -> None:
    checked = _checked(
        {
            "Resource": ["arn:aws:ecs:us-east-1:123456789012:*"],
            "Condition": {"Null": {"aws:ResourceTag/session-id": "false"}},
        }
    )
    assert any("aws:ResourceTag/session-id cannot hold for Cluster" in p for p in checked.problems)


def test_a_condition_key_the_action_does_not_support_is_denied() -> None:
    checked = _checked(
        {"Resource": ["*"], "Condition": {"StringEquals": {"ecs:capacity-provider": "FARGATE"}}}
    )
    assert any("ecs:capacity-provider is not one this action supports" in p for p in checked.problems)


def test_the_summary_counts_checked_and_denied_calls() -> None:
    summary = iam_calls.summary(REPORT)
    assert summary["iam_calls_checked"] == len(REPORT) >= 40
    assert summary["iam_calls_denied"] == sum(item.denied for item in REPORT)
