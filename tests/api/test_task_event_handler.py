"""The task-event handler's answers, logs and metrics for events it does not apply: duplicates, stale
versions and stray tasks. Operators count on the metrics (a redelivered event must not count twice) and
read the logs to tell a stale event from a lost one."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from sessions.config import Settings
from sessions.ecs_tasks import EcsTasks
from sessions.record import Status, WaitingFor

from tests.api.conftest import TASK_EVENTS_FUNCTION, WORKFLOW_FUNCTION, Deployment
from tests.api.test_sample_events import OWNER, SESSION_ID, TASK_ARN, load

STRAY_ARN = TASK_ARN.rsplit("/", 1)[0] + "/9a8b7c6d5e4f40312a1b2c3d4e5f6071"


def start_stray_task(deployment: Deployment) -> str:
    """A second task carrying the session's id, started as the workflow starts the session's own."""
    deployment.use(WORKFLOW_FUNCTION)
    tasks = EcsTasks(Settings.model_validate(dict(os.environ)))
    return tasks.run(deployment.store.require(SESSION_ID), client_token="a-second-run-task", spot=False)


def deliver(deployment: Deployment, sample: str, **detail: Any) -> dict[str, Any]:
    event = load(sample)
    event["detail"] |= detail
    return dict(deployment.invoke(TASK_EVENTS_FUNCTION, event))


def output(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    """The JSON lines the handler printed: the EMF documents Powertools Metrics publishes."""
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


def metric_count(lines: list[dict[str, Any]], name: str) -> int:
    return sum(int(sum(line[name])) for line in lines if "_aws" in line and name in line)


def test_a_redelivered_stopped_event_counts_once(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    deployment.seed(
        SESSION_ID, OWNER, Status.READY, taskArn=TASK_ARN, waitToken="t", waitingFor=WaitingFor.STOP
    )

    first = deliver(deployment, "task_events_oom")
    again = deliver(deployment, "task_events_oom")

    assert (first, again) == (
        {"result": "applied", "status": "FAILED"},
        {"result": "duplicate", "status": "FAILED"},
    )
    lines = output(capsys)
    assert metric_count(lines, "TasksStopped") == 1
    assert metric_count(lines, "TasksOutOfMemory") == 1


def test_a_stale_event_is_logged_as_stale(deployment: Deployment, caplog: pytest.LogCaptureFixture) -> None:
    deployment.seed(SESSION_ID, OWNER, Status.READY, taskArn=TASK_ARN, lastEventVersion=5)

    answer = deliver(deployment, "task_events_running", version=3)

    assert answer == {"result": "stale", "status": "READY"}
    stale = [r for r in caplog.records if r.getMessage().startswith("stale task event")]
    assert [r.applied_version for r in stale] == [5]  # type: ignore[attr-defined]
    assert deployment.store.require(SESSION_ID).last_event_version == 5


def test_a_stray_task_is_stopped_counted_once_and_never_applied(
    deployment: Deployment, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    deployment.seed(SESSION_ID, OWNER)
    own = deployment.make_ready(SESSION_ID)
    stray = start_stray_task(deployment)

    first = deliver(deployment, "task_events_running", taskArn=stray, version=9)
    again = deliver(deployment, "task_events_running", taskArn=stray, version=9)

    assert (first["result"], again["result"]) == ("stray task stopped", "stray task")
    task = deployment.ecs.task(deployment.cluster_arn, stray)
    assert task.desired_status == "STOPPED"
    assert task.stopped_reason == f"not the task of session {SESSION_ID}, which runs on {own.task_arn}"
    session = deployment.store.require(SESSION_ID)
    assert (session.status, session.task_arn, session.last_event_version) == (
        Status.READY,
        own.task_arn,
        own.last_event_version,
    )
    assert session.stray_task_arns == {stray}
    assert metric_count(output(capsys), "StrayTasksStopped") == 1
    stopped = [r for r in caplog.records if r.getMessage().startswith("stopped a stray task")]
    assert [r.session_task_arn for r in stopped] == [own.task_arn]  # type: ignore[attr-defined]
