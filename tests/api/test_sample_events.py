"""Every file in events/ fed to its function's handler, as `sam local invoke -e events/<file>` would.

The prefix names the function (api_, task_events_, workflow_, reconciler_, workspace_credentials_,
usage_report). Each case seeds the session record the
event presupposes, invokes the handler with the template's environment, and checks the answer and the
record; workflow tokens cannot be answered to a real execution here, so the checks name which token
the handler answered and how.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
import urllib3
from sessions import clock
from sessions.record import LIVE, Status, WaitingFor

from tests.api.conftest import (
    API_FUNCTION,
    RECONCILER_FUNCTION,
    TASK_EVENTS_FUNCTION,
    WORKFLOW_FUNCTION,
    Deployment,
    parse_api_response,
)

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

EVENTS = Path(__file__).resolve().parents[2] / "events"
# Every sample speaks about this one session of this one user, in this account and region.
SESSION_ID = "8c0e7a52-3f1b-4d6e-9a27-5b4c1d2e3f60"
OWNER = "4f8e2b1a-9c3d-4e5f-8a7b-6c5d4e3f2a1b"
ACCOUNT_ID, REGION = "123456789012", "us-east-1"
TASK_ARN = f"arn:aws:ecs:{REGION}:{ACCOUNT_ID}:task/cloudide-dev-Cluster-7QW2K9XJ4MZB/0f9e8d7c6b5a49382716a5b4c3d2e1f0"
PARKED = "parked-by-an-earlier-step"
WORKSPACE_CREDENTIALS_FUNCTION = "WorkspaceCredentialsFunction"
USAGE_REPORT_FUNCTION = "UsageReportFunction"


def load(name: str) -> dict[str, Any]:
    return dict(json.loads((EVENTS / f"{name}.json").read_text()))


PREFIXES = {
    "api_": API_FUNCTION,
    "task_events_": TASK_EVENTS_FUNCTION,
    "workflow_": WORKFLOW_FUNCTION,
    "reconciler_": RECONCILER_FUNCTION,
    "workspace_credentials_": WORKSPACE_CREDENTIALS_FUNCTION,
    "usage_report": USAGE_REPORT_FUNCTION,
}


def function_of(name: str) -> str:
    for prefix, function in PREFIXES.items():
        if name.startswith(prefix):
            return function
    raise AssertionError(f"events/{name}.json: the prefix names no function ({', '.join(PREFIXES)})")


def answered(deployment: Deployment) -> list[tuple[str, str]]:
    """(method, token) of every callback the handlers sent, in order."""
    return [(method, arguments["taskToken"]) for method, arguments in deployment.callbacks]


# API ----------------------------------------------------------------------------------------------


def api(deployment: Deployment, name: str) -> Any:
    return parse_api_response(deployment.invoke(API_FUNCTION, load(name)))


def check_api_start_session(deployment: Deployment) -> None:
    response = api(deployment, "api_start_session")

    assert response.status == 202, response
    assert response.body["ownerId"] == OWNER
    assert response.body["status"] == "PROVISIONING"
    assert [e["name"] for e in deployment.executions()] == [response.body["sessionId"]]


def check_api_start_session_idempotent(deployment: Deployment) -> None:
    first = api(deployment, "api_start_session_idempotent")
    retry = api(deployment, "api_start_session_idempotent")

    assert (first.status, retry.status) == (202, 202)
    assert retry.body == first.body
    assert [s.session_id for s in deployment.store.list_by_owner(OWNER)] == [first.body["sessionId"]]


def check_api_list_sessions(deployment: Deployment) -> None:
    deployment.seed(SESSION_ID, OWNER)
    deployment.seed("00000000-0000-4000-8000-000000000000", "someone-else")

    response = api(deployment, "api_list_sessions")

    assert response.status == 200
    assert [s["sessionId"] for s in response.body["sessions"]] == [SESSION_ID]


def check_api_get_session(deployment: Deployment) -> None:
    deployment.seed(SESSION_ID, OWNER, Status.READY)

    response = api(deployment, "api_get_session")

    assert response.status == 200
    assert (response.body["sessionId"], response.body["status"]) == (SESSION_ID, "READY")


def check_api_report_activity(deployment: Deployment) -> None:
    earlier = clock.now().replace(year=clock.now().year - 1)
    deployment.seed(
        SESSION_ID,
        OWNER,
        Status.READY,
        lastActivityAt=clock.rfc3339(earlier),
        idleDeadline=clock.later(earlier, 1800),
    )

    response = api(deployment, "api_report_activity")

    assert response.status == 202
    assert clock.parse(response.body["idleDeadline"]) > clock.now()


def check_api_stop_session(deployment: Deployment) -> None:
    deployment.seed(SESSION_ID, OWNER, Status.READY)

    response = api(deployment, "api_stop_session")

    assert response.status == 202
    assert response.body["stopRequestedAt"]
    assert deployment.store.require(SESSION_ID).stop_requested_by == "user"


def check_api_connect(deployment: Deployment) -> None:
    deployment.seed(SESSION_ID, OWNER)
    deployment.make_ready(SESSION_ID)

    response = api(deployment, "api_connect")

    assert response.status == 200, response
    assert set(response.body) == {"sessionId", "streamUrl", "tokenValue"}
    assert response.body["streamUrl"].startswith("ws")


# Task-state events ---------------------------------------------------------------------------------


def task_event(deployment: Deployment, name: str) -> dict[str, Any]:
    event = load(name)
    assert event["detail"]["startedBy"] == SESSION_ID and event["detail"]["taskArn"] == TASK_ARN
    return dict(deployment.invoke(TASK_EVENTS_FUNCTION, event))


def seed_waiting(deployment: Deployment, status: Status, waiting_for: WaitingFor, **fields: Any) -> None:
    deployment.seed(
        SESSION_ID,
        OWNER,
        status,
        taskArn=TASK_ARN,
        waitToken=PARKED,
        waitingFor=waiting_for.value,
        **fields,
    )


def check_task_events_pending(deployment: Deployment) -> None:
    seed_waiting(deployment, Status.STARTING, WaitingFor.RUNNING)

    assert task_event(deployment, "task_events_pending") == {"result": "applied", "status": "STARTING"}
    assert deployment.store.require(SESSION_ID).task_status == "PENDING"
    assert answered(deployment) == [], "PENDING is not what the provision step waits for"


def check_task_events_running(deployment: Deployment) -> None:
    seed_waiting(deployment, Status.STARTING, WaitingFor.RUNNING)

    assert task_event(deployment, "task_events_running") == {"result": "applied", "status": "STARTING"}
    assert answered(deployment) == [("send_task_success", PARKED)]


def check_task_events_stopped_by_user(deployment: Deployment) -> None:
    seed_waiting(
        deployment,
        Status.STOPPING,
        WaitingFor.STOPPED,
        statusReason="stopped by user",
        endStatus="STOPPED",
        stopRequestedAt=clock.rfc3339(clock.now()),
    )

    assert task_event(deployment, "task_events_stopped_by_user") == {"result": "applied", "status": "STOPPED"}
    session = deployment.store.require(SESSION_ID)
    assert (session.status_reason, session.stop_code) == ("stopped by user", "UserInitiated")
    assert answered(deployment) == [("send_task_success", PARKED)]


def check_task_events_oom(deployment: Deployment) -> None:
    seed_waiting(deployment, Status.READY, WaitingFor.STOP)

    assert task_event(deployment, "task_events_oom") == {"result": "applied", "status": "FAILED"}
    session = deployment.store.require(SESSION_ID)
    assert session.exit_code == 137
    assert "out of memory" in (session.status_reason or "")
    assert answered(deployment) == [("send_task_failure", PARKED)]


def check_task_events_spot_interruption(deployment: Deployment) -> None:
    seed_waiting(deployment, Status.READY, WaitingFor.STOP, capacityProvider="FARGATE_SPOT")

    assert task_event(deployment, "task_events_spot_interruption") == {
        "result": "applied",
        "status": "STOPPED",
    }
    assert "SpotInterruption" in (deployment.store.require(SESSION_ID).status_reason or "")
    assert answered(deployment) == [("send_task_failure", PARKED)]


def check_task_events_failed_to_start(deployment: Deployment) -> None:
    seed_waiting(deployment, Status.STARTING, WaitingFor.RUNNING)

    assert task_event(deployment, "task_events_failed_to_start") == {"result": "applied", "status": "FAILED"}
    assert "CannotPullContainerError" in (deployment.store.require(SESSION_ID).status_reason or "")
    assert answered(deployment) == [("send_task_failure", PARKED)]


# Workflow steps ------------------------------------------------------------------------------------


def step(deployment: Deployment, name: str) -> Any:
    event = load(name)
    assert event["sessionId"] == SESSION_ID
    return deployment.invoke(WORKFLOW_FUNCTION, event)


def ecs_task(deployment: Deployment, task_arn: str) -> dict[str, Any]:
    described = boto3.client("ecs").describe_tasks(cluster=deployment.cluster_arn, tasks=[task_arn])
    return dict(described["tasks"][0])


def check_workflow_provision(deployment: Deployment) -> None:
    deployment.seed(SESSION_ID, OWNER)

    assert step(deployment, "workflow_provision") == {}

    session = deployment.store.require(SESSION_ID)
    assert session.status is Status.STARTING
    assert (session.wait_token, session.waiting_for) == (
        load("workflow_provision")["token"],
        WaitingFor.RUNNING,
    )
    task = ecs_task(deployment, session.task_arn or "")
    assert (task["startedBy"], task["group"]) == (SESSION_ID, "cloudide-terminals")


def check_workflow_watch(deployment: Deployment) -> None:
    deployment.seed(SESSION_ID, OWNER)
    deployment.report_task(deployment.provision(SESSION_ID), "RUNNING", agent_status="RUNNING")

    assert step(deployment, "workflow_watch") == {}

    session = deployment.store.require(SESSION_ID)
    assert session.status is Status.READY and session.ready_at
    assert (session.wait_token, session.waiting_for) == (load("workflow_watch")["token"], WaitingFor.STOP)


def check_workflow_evaluate(deployment: Deployment) -> None:
    deployment.seed(SESSION_ID, OWNER, Status.READY, idleDeadline="2020-01-01T00:00:00Z")

    decision = step(deployment, "workflow_evaluate")

    assert (decision["decision"], decision["reason"]) == ("stop", "idle for 30 min")
    assert decision["lifetimeRemainingSeconds"] > decision["idleTimeoutSeconds"] > 0


def check_workflow_stop(deployment: Deployment) -> None:
    deployment.seed(SESSION_ID, OWNER)
    task_arn = deployment.provision(SESSION_ID)
    deployment.report_task(task_arn, "RUNNING", agent_status="RUNNING")
    deployment.store.request_stop(SESSION_ID, requested_by="user")

    assert step(deployment, "workflow_stop") == {}

    session = deployment.store.require(SESSION_ID)
    assert (session.status, session.end_status, session.waiting_for) == (
        Status.STOPPING,
        Status.STOPPED,
        WaitingFor.STOPPED,
    )
    assert ecs_task(deployment, task_arn)["desiredStatus"] == "STOPPED"
    deployment.report_task(task_arn, "STOPPED", stop_code="UserInitiated", exit_code=0)
    assert deployment.store.require(SESSION_ID).status is Status.STOPPED
    assert answered(deployment)[-1] == ("send_task_success", load("workflow_stop")["token"])


def check_workflow_cleanup(deployment: Deployment) -> None:
    deployment.seed(SESSION_ID, OWNER)
    task_arn = deployment.provision(SESSION_ID)
    deployment.report_task(task_arn, "RUNNING")  # the exec agent never comes up

    assert step(deployment, "workflow_cleanup") == {}

    assert ecs_task(deployment, task_arn)["desiredStatus"] == "STOPPED"
    deployment.report_task(task_arn, "STOPPED", stop_code="UserInitiated", exit_code=0)
    session = deployment.store.require(SESSION_ID)
    assert (session.status, session.status_reason) == (
        Status.FAILED,
        "the ECS Exec agent did not become ready in time",
    )
    assert answered(deployment)[-1] == ("send_task_success", load("workflow_cleanup")["token"])


# Workspace credentials ---------------------------------------------------------------------------------


def task_role_session(deployment: Deployment) -> list[tuple[str, str]]:
    """The session's task running, and STS (played here, no network) answering a presigned
    sts:GetCallerIdentity URL with the task-role session ECS named after that task; returns the
    requests STS got."""
    deployment.seed(SESSION_ID, OWNER)
    task_id = deployment.provision(SESSION_ID).rsplit("/", 1)[-1]
    deployment.stack.attributes["TaskRole.Arn"] = f"arn:aws:iam::{ACCOUNT_ID}:role/{TASK_ROLE}"
    asked: list[tuple[str, str]] = []

    def sts(pool: Any, method: str, requested: str, **options: Any) -> urllib3.HTTPResponse:
        asked.append((method, requested))
        assert options.get("redirect") is False, "a redirect could lead the proof to another server"
        arn = f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/{TASK_ROLE}/{task_id}"
        return urllib3.HTTPResponse(body=STS_IDENTITY.format(arn=arn).encode(), status=200)

    deployment.monkeypatch.setattr(urllib3.PoolManager, "request", sts)
    return asked


TASK_ROLE = "cloudide-dev-TaskRole-1A2B3C4D5E6F"


def check_workspace_credentials_vend(deployment: Deployment) -> None:
    asked = task_role_session(deployment)
    deployment.stack.refs["WorkspaceBucket"] = "cloudide-dev-workspacebucket-1a2b3c4d5e6f"
    deployment.stack.attributes["WorkspaceAccessRole.Arn"] = (
        f"arn:aws:iam::{ACCOUNT_ID}:role/workspace-access"
    )

    answer = deployment.invoke(WORKSPACE_CREDENTIALS_FUNCTION, load("workspace_credentials_vend"))

    url = load("workspace_credentials_vend")["callerIdentityUrl"]
    assert asked == [("GET", url)], "the proof is checked with STS itself, exactly as presented"
    vended = answer["credentials"]
    assert (vended["bucket"], vended["prefix"]) == (
        "cloudide-dev-workspacebucket-1a2b3c4d5e6f",
        f"workspaces/{OWNER}/hello-world/",
    )
    assert vended["accessKeyId"] and vended["sessionToken"] and vended["expiration"]


def check_usage_report(deployment: Deployment) -> None:
    # The usage monitor of the session's READY task reports a keystroke 12.5 s ago, with one client on.
    asked = task_role_session(deployment)
    earlier = clock.rfc3339(clock.now().replace(year=clock.now().year - 1))
    deployment.store.update_fields(
        SESSION_ID, while_status=LIVE, status=Status.READY, last_activity_at=earlier,
        ready_at=earlier, wait_token=PARKED, waiting_for=WaitingFor.STOP,
    )  # fmt: skip

    answer = deployment.invoke(USAGE_REPORT_FUNCTION, load("usage_report"))

    assert asked == [("GET", load("usage_report")["callerIdentityUrl"])]
    assert answer["policy"] == {
        "idlePolicy": "work", "idleTimeoutSeconds": 1800, "disconnectGraceSeconds": 300, "reportSeconds": 300,
    }  # fmt: skip
    session = deployment.store.require(SESSION_ID)
    assert session.clients_attached == 1 and session.last_report_at
    typed = clock.parse(session.last_activity_at)
    assert 11 <= (clock.now() - typed).total_seconds() <= 15, "the last use is the keystroke's time"
    assert answer["idleDeadline"] == session.idle_deadline == clock.later(typed, 1800)
    assert answered(deployment) == [("send_task_heartbeat", PARKED)], "recent use resets the idle timer"


STS_IDENTITY = """<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <GetCallerIdentityResult><Arn>{arn}</Arn><UserId>AROAEXAMPLE:task</UserId><Account>123456789012</Account>
  </GetCallerIdentityResult><ResponseMetadata><RequestId>1</RequestId></ResponseMetadata>
</GetCallerIdentityResponse>"""


# Reconciler -----------------------------------------------------------------------------------------


def check_reconciler_scheduled(deployment: Deployment) -> None:
    # A live session from long ago (past the grace period) that no workflow drives and no task serves.
    deployment.seed(SESSION_ID, OWNER, Status.STARTING, createdAt="2026-01-01T10:00:00Z")

    report = deployment.invoke(RECONCILER_FUNCTION, load("reconciler_scheduled"))

    assert report["repairs"] == [{"kind": "AbandonedSessionsStopped", "subject": SESSION_ID}]
    session = deployment.store.require(SESSION_ID)
    assert (session.status, session.status_reason) == (
        Status.FAILED,
        "the session has no workflow; stopped by the reconciler",
    )


CHECKS: dict[str, Callable[[Deployment], None]] = {
    name.removeprefix("check_"): check
    for name, check in globals().items()
    if name.startswith("check_") and callable(check)
}
SAMPLES = sorted(path.stem for path in EVENTS.glob("*.json"))


def test_every_sample_event_has_a_check() -> None:
    assert set(SAMPLES) == set(CHECKS), (
        "each events/*.json needs a check_<name> here, and each check its file"
    )


def test_samples_share_one_session_account_and_region() -> None:
    for name in SAMPLES:
        text = (EVENTS / f"{name}.json").read_text()
        # Workflow steps carry no ARN; a caller-identity proof names only the region (the signer's account
        # is what STS answers).
        if "callerIdentityUrl" in text:
            assert f"/{REGION}/sts/" in urllib.parse.unquote(text), name
        else:
            assert ACCOUNT_ID in text or function_of(name) == WORKFLOW_FUNCTION, name
        if function_of(name) == API_FUNCTION:
            assert load(name)["requestContext"]["authorizer"]["claims"]["sub"] == OWNER, name


@pytest.mark.parametrize("name", SAMPLES)
def test_sample_event(name: str, deployment: Deployment) -> None:
    function_of(name)
    CHECKS[name](deployment)
