"""Every route of the REST API through the real handler: what the IDE back end relies on."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sessions import clock, wiring
from sessions.record import Status, WaitingFor

from tests.api import gateway
from tests.api.conftest import API_FUNCTION, ApiCall, ApiResponse, Deployment, parse_api_response

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

MISSING = "00000000-0000-4000-8000-000000000000"
ROUTES_ON_A_SESSION = (
    ("GET", "/sessions/{}"),
    ("POST", "/sessions/{}/activity"),
    ("DELETE", "/sessions/{}"),
    ("POST", "/sessions/{}/connect"),
)


def start(call_api: ApiCall, sub: str = "user-1", **body: Any) -> dict[str, Any]:
    response = call_api("POST", "/sessions", body={"projectId": "hello-world", **body}, sub=sub)
    assert response.status == 202, response
    return dict(response.body)


def assert_error(response: ApiResponse, status: int, *, field: str | None = None) -> None:
    """Every error is JSON with a code and a message, and names the field at fault when there is one."""
    assert response.status == status, response
    assert isinstance(response.body, dict), response
    assert isinstance(response.body.get("code"), str) and response.body["code"], response
    assert isinstance(response.body.get("message"), str) and response.body["message"], response
    if field is not None:
        assert response.body.get("field") == field, response


def ago(seconds: int) -> str:
    return clock.later(clock.now(), -seconds)


# Start ---------------------------------------------------------------------------------------------


def test_start_accepts_and_records_a_provisioning_session(call_api: ApiCall, deployment: Deployment) -> None:
    body = start(call_api, tier="medium", idleTimeoutMinutes=45)

    assert body["status"] == "PROVISIONING"
    assert (body["ownerId"], body["projectId"], body["image"], body["tier"]) == (
        "user-1",
        "hello-world",
        "base",
        "medium",
    )
    assert body["idleTimeoutSeconds"] == 45 * 60
    assert "waitToken" not in body and "expiresAt" not in body
    session = deployment.store.require(body["sessionId"])
    assert session.status is Status.PROVISIONING


def test_start_runs_one_workflow_named_after_the_session(call_api: ApiCall, deployment: Deployment) -> None:
    body = start(call_api)

    [execution] = deployment.executions()
    assert execution["name"] == body["sessionId"]
    assert deployment.store.require(body["sessionId"]).execution_arn == execution["executionArn"]


def test_start_uses_the_deployment_defaults(call_api: ApiCall) -> None:
    body = start(call_api)

    assert (body["image"], body["tier"], body["idleTimeoutSeconds"]) == ("base", "small", 30 * 60)
    assert body["maxLifetimeSeconds"] == 12 * 3600


# List and get ---------------------------------------------------------------------------------------


def test_list_shows_only_the_callers_sessions(call_api: ApiCall) -> None:
    mine = {start(call_api)["sessionId"], start(call_api)["sessionId"]}
    start(call_api, sub="user-2")

    response = call_api("GET", "/sessions")

    assert response.status == 200
    assert {s["sessionId"] for s in response.body["sessions"]} == mine
    assert call_api("GET", "/sessions", sub="user-3").body == {"sessions": []}


def test_get_returns_the_session(call_api: ApiCall) -> None:
    body = start(call_api)

    response = call_api("GET", f"/sessions/{body['sessionId']}")

    assert response.status == 200
    assert response.body == body


# Activity -------------------------------------------------------------------------------------------


def test_activity_moves_the_idle_deadline_and_beats_the_watch_step(
    call_api: ApiCall, deployment: Deployment
) -> None:
    # Given a READY session being watched, last active five minutes ago
    deployment.seed(
        MISSING,
        "user-1",
        Status.READY,
        lastActivityAt=ago(300),
        idleDeadline=clock.later(clock.now(), 1500),
        waitToken="watch-token",
        waitingFor=WaitingFor.STOP.value,
    )
    before = deployment.store.require(MISSING)

    # When the IDE reports activity
    response = call_api("POST", f"/sessions/{MISSING}/activity")

    # Then the idle deadline moves a full idle timeout ahead and the watch step's heartbeat timer resets
    assert response.status == 202
    assert response.body["lastActivityAt"] > before.last_activity_at
    assert response.body["idleDeadline"] == clock.later(clock.parse(response.body["lastActivityAt"]), 1800)
    assert deployment.tokens_answered("send_task_heartbeat") == ["watch-token"]


def test_activity_within_20_seconds_is_coalesced(call_api: ApiCall, deployment: Deployment) -> None:
    deployment.seed(
        MISSING,
        "user-1",
        Status.READY,
        lastActivityAt=ago(300),
        waitToken="watch-token",
        waitingFor=WaitingFor.STOP.value,
    )
    first = call_api("POST", f"/sessions/{MISSING}/activity")

    again = call_api("POST", f"/sessions/{MISSING}/activity")

    assert again.status == 202
    assert again.body["idleDeadline"] == first.body["idleDeadline"]
    assert deployment.tokens_answered("send_task_heartbeat") == ["watch-token"], "one heartbeat, not two"


def test_activity_on_an_ended_session_is_a_conflict(call_api: ApiCall, deployment: Deployment) -> None:
    deployment.seed(MISSING, "user-1", Status.READY)
    deployment.store.transition(MISSING, Status.STOPPED, reason="idle for 30 min")

    assert_error(call_api("POST", f"/sessions/{MISSING}/activity"), 409, field="sessionId")


# Stop -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [Status.PROVISIONING, Status.STARTING, Status.READY, Status.STOPPING])
def test_delete_requests_a_stop_in_every_live_status_and_is_idempotent(
    status: Status, call_api: ApiCall, deployment: Deployment
) -> None:
    deployment.seed(MISSING, "user-1", status)

    first = call_api("DELETE", f"/sessions/{MISSING}")
    second = call_api("DELETE", f"/sessions/{MISSING}")

    assert (first.status, second.status) == (202, 202)
    assert first.body["stopRequestedAt"]
    assert second.body == first.body
    assert deployment.store.require(MISSING).stop_requested_by == "user"


@pytest.mark.parametrize("ended", [Status.STOPPED, Status.FAILED])
def test_delete_of_an_ended_session_returns_it_unchanged(
    ended: Status, call_api: ApiCall, deployment: Deployment
) -> None:
    deployment.seed(MISSING, "user-1", Status.READY)
    deployment.store.transition(MISSING, ended, reason="over")

    responses = [call_api("DELETE", f"/sessions/{MISSING}") for _ in range(2)]

    assert [r.status for r in responses] == [202, 202]
    assert responses[0].body == responses[1].body
    assert (responses[0].body["status"], responses[0].body.get("stopRequestedAt")) == (ended.value, None)


def test_delete_of_a_watched_session_releases_the_watch_step(
    call_api: ApiCall, deployment: Deployment
) -> None:
    deployment.seed(
        MISSING, "user-1", Status.READY, waitToken="watch-token", waitingFor=WaitingFor.STOP.value
    )

    call_api("DELETE", f"/sessions/{MISSING}")
    call_api("DELETE", f"/sessions/{MISSING}")

    assert deployment.tokens_answered("send_task_success")[0] == "watch-token"


# Connect --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [Status.PROVISIONING, Status.STARTING, Status.STOPPING])
def test_connect_is_a_conflict_unless_ready(
    status: Status, call_api: ApiCall, deployment: Deployment
) -> None:
    deployment.seed(MISSING, "user-1", status)

    response = call_api("POST", f"/sessions/{MISSING}/connect")

    assert_error(response, 409, field="sessionId")
    assert status.value in response.body["message"]


def test_connect_to_an_ended_session_is_a_conflict(call_api: ApiCall, deployment: Deployment) -> None:
    deployment.seed(MISSING, "user-1", Status.READY)
    deployment.store.transition(MISSING, Status.FAILED, reason="out of memory")

    assert_error(call_api("POST", f"/sessions/{MISSING}/connect"), 409, field="sessionId")


@pytest.mark.parametrize(("body", "command"), [(None, ""), ({"readOnly": True}, " --read-only")])
def test_connect_execs_only_the_fixed_shell_wrapper(
    body: dict[str, Any] | None, command: str, call_api: ApiCall, deployment: Deployment
) -> None:
    # Given a READY session (its task running with the exec agent up: ExecuteCommand via moto_fixes)
    session_id = start(call_api)["sessionId"]
    deployment.make_ready(session_id)
    deployment.use("ApiFunction")
    calls: list[dict[str, Any]] = []
    wiring.components().tasks._client.meta.events.register(
        "provide-client-params.ecs.ExecuteCommand", lambda params, **_: calls.append(dict(params))
    )

    # When the IDE asks for a terminal
    response = call_api("POST", f"/sessions/{session_id}/connect", body=body)

    # Then it gets the data channel, and the only command ever run is the wrapper in the terminal container
    assert response.status == 200, response
    assert set(response.body) == {"sessionId", "streamUrl", "tokenValue"}
    assert response.body["tokenValue"]
    [call] = calls
    assert call["command"] == "/usr/local/bin/cloudide-shell" + command
    assert (call["container"], call["interactive"]) == ("terminal", True)
    assert call["task"] == deployment.store.require(session_id).task_arn


# Unknown ids (other users' sessions: tests/security/test_authz_matrix.py) --------------------------


@pytest.mark.parametrize(("method", "route"), ROUTES_ON_A_SESSION)
@pytest.mark.parametrize("bad_id", ["not-a-uuid", "8C0E7A52-3F1B-4D6E-9A27-5B4C1D2E3F60", "1" * 36])
def test_malformed_session_ids_are_refused(method: str, route: str, bad_id: str, call_api: ApiCall) -> None:
    assert_error(call_api(method, route.format(bad_id)), 422, field="path.session_id")


def test_unknown_routes_answer_404_in_the_api_error_shape(call_api: ApiCall) -> None:
    assert_error(call_api("GET", "/nothing-here"), 404)
    assert_error(call_api("PUT", "/sessions"), 404)


# Authentication ------------------------------------------------------------------------------------


def test_a_request_that_bypassed_the_authorizer_is_refused(deployment: Deployment) -> None:
    event = gateway.api_event("GET", "/sessions")
    del event["requestContext"]["authorizer"]

    assert_error(parse_api_response(deployment.invoke(API_FUNCTION, event)), 401)


# Quotas --------------------------------------------------------------------------------------------


def test_per_user_quota_counts_live_sessions_only(call_api: ApiCall, deployment: Deployment) -> None:
    sessions = [start(call_api)["sessionId"] for _ in range(3)]  # SessionsPerUser defaults to 3

    over = call_api("POST", "/sessions", body={"projectId": "hello-world"})

    assert_error(over, 429)
    assert "3" in over.body["message"]
    start(call_api, sub="user-2")  # others are not affected
    deployment.store.transition(sessions[0], Status.STOPPED, reason="stopped by user")
    start(call_api)  # an ended session frees its slot


def test_global_cap_refuses_everyone_once_reached(call_api: ApiCall, deployment: Deployment) -> None:
    deployment.stack.parameters["GlobalSessionCap"] = "2"
    start(call_api, sub="user-1")
    start(call_api, sub="user-2")

    assert_error(call_api("POST", "/sessions", body={"projectId": "hello-world"}, sub="user-3"), 429)
    assert len(deployment.executions()) == 2


# Idempotency-Key ------------------------------------------------------------------------------------


def test_retry_with_the_same_key_and_body_returns_the_same_session(
    call_api: ApiCall, deployment: Deployment
) -> None:
    request = {"body": {"projectId": "hello-world"}, "headers": {"Idempotency-Key": "retry-1"}}

    first = call_api("POST", "/sessions", **request)
    retry = call_api("POST", "/sessions", **request)

    assert (first.status, retry.status) == (202, 202)
    assert retry.body == first.body
    assert len(deployment.store.list_by_owner("user-1")) == 1
    assert len(deployment.executions()) == 1


def test_same_key_with_a_different_body_is_a_conflict(call_api: ApiCall, deployment: Deployment) -> None:
    call_api("POST", "/sessions", body={"projectId": "one"}, headers={"Idempotency-Key": "k"})

    response = call_api("POST", "/sessions", body={"projectId": "two"}, headers={"Idempotency-Key": "k"})

    assert_error(response, 409, field="Idempotency-Key")
    assert len(deployment.store.list_by_owner("user-1")) == 1


def test_keys_belong_to_their_user(call_api: ApiCall) -> None:
    request = {"body": {"projectId": "hello-world"}, "headers": {"Idempotency-Key": "shared"}}

    mine = call_api("POST", "/sessions", **request)
    theirs = call_api("POST", "/sessions", sub="user-2", **request)

    assert (mine.status, theirs.status) == (202, 202)
    assert mine.body["sessionId"] != theirs.body["sessionId"]


# Bad input ------------------------------------------------------------------------------------------

BAD_STARTS = [
    pytest.param({}, 422, "projectId", id="missing-projectId"),
    pytest.param({"projectId": "p", "color": "red"}, 422, "color", id="extra-field"),
    pytest.param({"projectId": 7}, 422, "projectId", id="projectId-not-a-string"),
    pytest.param(
        {"projectId": "p", "idleTimeoutMinutes": "30"}, 422, "idleTimeoutMinutes", id="minutes-as-string"
    ),
    pytest.param(
        {"projectId": "p", "idleTimeoutMinutes": True}, 422, "idleTimeoutMinutes", id="minutes-as-bool"
    ),
    pytest.param(
        {"projectId": "p", "idleTimeoutMinutes": 2.5}, 422, "idleTimeoutMinutes", id="minutes-fraction"
    ),
    pytest.param({"projectId": "../etc"}, 422, "projectId", id="projectId-pattern"),
    pytest.param([], 422, "body", id="array-body"),
    pytest.param("null", 422, "body", id="null-body"),
    pytest.param(None, 422, "body", id="no-body"),
    pytest.param("{not json", 400, "body", id="invalid-json"),
    pytest.param({"projectId": "p", "image": "windows"}, 400, "image", id="unknown-image"),
    pytest.param({"projectId": "p", "tier": "gigantic"}, 400, "tier", id="unknown-tier"),
    pytest.param({"projectId": "p", "tier": "xlarge"}, 403, "tier", id="tier-not-offered-here"),
    pytest.param(
        {"projectId": "p", "idleTimeoutMinutes": 4}, 403, "idleTimeoutMinutes", id="minutes-below-min"
    ),
    pytest.param(
        {"projectId": "p", "idleTimeoutMinutes": 241}, 403, "idleTimeoutMinutes", id="minutes-above-max"
    ),
    pytest.param(
        {"projectId": "p", "idleTimeoutMinutes": 10**9}, 422, "idleTimeoutMinutes", id="minutes-huge"
    ),
]


@pytest.mark.parametrize(("body", "status", "field"), BAD_STARTS)
def test_bad_start_requests_are_refused_naming_the_field(
    body: Any, status: int, field: str, call_api: ApiCall, deployment: Deployment
) -> None:
    response = call_api("POST", "/sessions", body=body)

    assert_error(response, status, field=field)
    assert deployment.executions() == [] and deployment.store.list_by_owner("user-1") == []


def test_oversize_bodies_are_refused_before_parsing(call_api: ApiCall) -> None:
    response = call_api("POST", "/sessions", body=json.dumps({"projectId": "p", "pad": "x" * 20_000}))

    assert_error(response, 413, field="body")


@pytest.mark.parametrize(
    ("body", "field"),
    [({"readOnly": "yes"}, "readOnly"), ({"readOnly": False, "x": 1}, "x"), ("{", "body")],
)
def test_bad_connect_requests_are_refused(
    body: Any, field: str, call_api: ApiCall, deployment: Deployment
) -> None:
    deployment.seed(MISSING, "user-1", Status.READY)

    response = call_api("POST", f"/sessions/{MISSING}/connect", body=body)

    assert 400 <= response.status < 500
    assert_error(response, response.status, field=field)


@pytest.mark.parametrize("key", ["", "k" * 129])
def test_bad_idempotency_keys_are_refused(key: str, call_api: ApiCall) -> None:
    response = call_api("POST", "/sessions", body={"projectId": "p"}, headers={"Idempotency-Key": key})

    assert_error(response, 422, field="header.idempotency-key")


def test_a_reconnect_terminates_the_exec_session_it_replaces_and_only_one_of_its_own(
    call_api: ApiCall, deployment: Deployment
) -> None:
    from cloudide.offline import ssm_sessions

    # Given a READY session with one exec session handed out, and another user's session with one too
    session_id = start(call_api)["sessionId"]
    deployment.make_ready(session_id)
    other_id = start(call_api, sub="user-2")["sessionId"]
    deployment.make_ready(other_id)
    first = call_api("POST", f"/sessions/{session_id}/connect").body["sessionId"]
    foreign = call_api("POST", f"/sessions/{other_id}/connect", sub="user-2").body["sessionId"]
    already = len(ssm_sessions.terminated)

    # When the client reconnects naming the exec session its dropped channel had
    second = call_api("POST", f"/sessions/{session_id}/connect", body={"replaces": first})

    # Then that exec session is terminated (ssm:TerminateSession) before the new one is opened
    assert second.status == 200, second
    assert ssm_sessions.terminated[already:] == [first]

    # And naming it again, or another user's exec session, terminates nothing and still connects
    for replaces in (first, foreign):
        again = call_api("POST", f"/sessions/{session_id}/connect", body={"replaces": replaces})
        assert again.status == 200, again
    assert ssm_sessions.terminated[already:] == [first]


@pytest.mark.parametrize("replaces", ["", "session-1", "ecs-execute-command-" + "a" * 200, 7])
def test_a_malformed_replaces_is_refused_naming_the_field(
    replaces: Any, call_api: ApiCall, deployment: Deployment
) -> None:
    deployment.seed(MISSING, "user-1", Status.READY)

    response = call_api("POST", f"/sessions/{MISSING}/connect", body={"replaces": replaces})

    assert_error(response, 422, field="replaces")
