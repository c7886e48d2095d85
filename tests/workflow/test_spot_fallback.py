"""UseFargateSpot: the workflow starts each session on Fargate Spot, and on on-demand Fargate when Spot
has no capacity, within the same provisioning attempt (sessions.lifecycle.Lifecycle._start_task)."""

from __future__ import annotations

import pytest
from sessions.record import Status

from tests.workflow.conftest import Offline


@pytest.fixture(scope="module")
def stack_parameters() -> dict[str, str]:
    # Fargate Spot runs only X86_64 tasks (the template's SpotRunsOnlyX86 rule).
    return {
        "TerminalImageUri": "local/terminal:dev",
        "ReconcilerGraceSeconds": "1",
        "UseFargateSpot": "true",
        "TaskArchitecture": "X86_64",
    }


def _capacity_provider(offline: Offline, task_arn: str) -> str:
    ecs = offline.aws.client("ecs")
    return str(
        ecs.describe_tasks(cluster=offline.cluster, tasks=[task_arn])["tasks"][0]["capacityProviderName"]
    )


def test_sessions_start_on_spot(offline: Offline) -> None:
    session = offline.new_session()
    execution = offline.start(session)

    ready = offline.wait_status(session.session_id, Status.READY)

    assert ready.capacity_provider == "FARGATE_SPOT" and ready.task_arn
    assert _capacity_provider(offline, ready.task_arn) == "FARGATE_SPOT"
    offline.lifecycle.request_stop(session.session_id, "user")
    assert offline.wait_execution(execution)["status"] == "SUCCEEDED"
    offline.assert_invariants(session.session_id)


def test_no_spot_capacity_falls_back_to_on_demand_in_the_same_attempt(offline: Offline) -> None:
    offline.aws.ecs.fail_next_run_tasks(1)  # Spot: "Capacity is unavailable at this time..."
    session = offline.new_session()
    execution = offline.start(session)

    ready = offline.wait_status(session.session_id, Status.READY)

    assert ready.capacity_provider == "FARGATE" and ready.task_arn
    assert _capacity_provider(offline, ready.task_arn) == "FARGATE"
    assert ready.provision_attempts == 0, "the fallback is part of the first attempt"
    assert not [e for e in offline.history(execution) if e["type"] == "TaskFailed"], "no workflow retry"
    offline.lifecycle.request_stop(session.session_id, "user")
    assert offline.wait_execution(execution)["status"] == "SUCCEEDED"
    offline.assert_invariants(session.session_id)
