"""Who may do what, route by route: every route template.yaml exposes, called by the owner, by another
user, by an admin and by nobody. Another user's session answers exactly like a missing one (no
existence oracle); an unauthenticated call is refused; an admin lists and stops anyone's session and
can do nothing else to it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sessions.record import Status

from tests.api import cfn
from tests.api.conftest import ApiCall, ApiResponse, Deployment
from tests.api.generate_openapi import render

OWNER, OTHER, ADMIN = "owner-1", "other-2", "admin-3"
ADMIN_GROUPS = "[cloudide-admins dev]"  # the bracketed form API Gateway flattens a list claim to
MISSING = "00000000-0000-4000-8000-000000000000"
BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/sessions"): {"projectId": "hello-world"},
    ("POST", "/sessions/{session_id}/connect"): {"readOnly": False},
}


def template_routes() -> list[tuple[str, str]]:
    """(METHOD, path) of every API event of the API function, as API Gateway would route them."""
    events = cfn.resource("ApiFunction")["Properties"]["Events"]
    return sorted(
        (event["Properties"]["Method"].upper(), event["Properties"]["Path"])
        for event in events.values()
        if event["Type"] == "Api"
    )


ROUTES = template_routes()
SESSION_ROUTES = [route for route in ROUTES if "{session_id}" in route[1]]
# What an admin may do to a session that is not theirs; every other session route must stay closed.
ADMIN_MAY = {("DELETE", "/sessions/{session_id}")}


def call(api: ApiCall, route: tuple[str, str], session_id: str, **request: Any) -> ApiResponse:
    method, path = route
    return api(method, path.format(session_id=session_id), body=BODIES.get(route), **request)


@pytest.fixture
def owned(deployment: Deployment) -> str:
    """A READY session of OWNER with a running task: any route that leaked would really act on it."""
    session_id = "8c0e7a52-3f1b-4d6e-9a27-5b4c1d2e3f60"
    deployment.seed(session_id, OWNER)
    deployment.make_ready(session_id)
    return session_id


def test_the_matrix_covers_every_route_the_handler_serves() -> None:
    # The handler's own routes, as its generated OpenAPI document lists them.
    paths = json.loads(render())["paths"]
    served = {(method.upper(), path) for path, operations in paths.items() for method in operations}
    assert served == set(ROUTES)


@pytest.mark.parametrize("route", SESSION_ROUTES, ids="{0[0]} {0[1]}".format)
def test_another_users_session_answers_exactly_like_a_missing_one(
    route: tuple[str, str], owned: str, call_api: ApiCall, deployment: Deployment
) -> None:
    before = deployment.store.require(owned)

    foreign = call(call_api, route, owned, sub=OTHER)
    missing = call(call_api, route, MISSING, sub=OTHER)

    assert (foreign.status, missing.status) == (404, 404)
    assert foreign.body == {**missing.body, "message": missing.body["message"].replace(MISSING, owned)}
    assert foreign.headers == missing.headers
    assert deployment.store.require(owned) == before  # nothing happened to it


@pytest.mark.parametrize("route", ROUTES, ids="{0[0]} {0[1]}".format)
def test_an_unauthenticated_call_is_refused_before_anything_happens(
    route: tuple[str, str], owned: str, call_api: ApiCall, deployment: Deployment
) -> None:
    before = (deployment.store.require(owned), len(deployment.executions()))

    response = call(call_api, route, owned, sub=None)

    assert response.status == 401, response
    assert response.body["code"] == "Unauthorized"
    assert (deployment.store.require(owned), len(deployment.executions())) == before


@pytest.mark.parametrize("route", SESSION_ROUTES, ids="{0[0]} {0[1]}".format)
def test_the_owner_reaches_their_session_on_every_route(
    route: tuple[str, str], owned: str, call_api: ApiCall
) -> None:
    assert call(call_api, route, owned, sub=OWNER).status in (200, 202)


@pytest.mark.parametrize("route", sorted(set(SESSION_ROUTES) - ADMIN_MAY), ids="{0[0]} {0[1]}".format)
def test_an_admin_can_do_nothing_else_to_someone_elses_session(
    route: tuple[str, str], owned: str, call_api: ApiCall, deployment: Deployment
) -> None:
    before = deployment.store.require(owned)

    response = call(call_api, route, owned, sub=ADMIN, groups=ADMIN_GROUPS)

    assert response.status == 404, response
    assert deployment.store.require(owned) == before


def test_an_admin_stops_someone_elses_session(owned: str, call_api: ApiCall, deployment: Deployment) -> None:
    response = call_api("DELETE", f"/sessions/{owned}", sub=ADMIN, groups=ADMIN_GROUPS)

    assert response.status == 202, response
    assert deployment.store.require(owned).stop_requested_at is not None
    # The parked watch step is released with the reason, so the workflow stops the task now.
    _, released = deployment.callbacks[-1]
    assert released["taskToken"] == f"watch-{owned}"
    assert f"admin {ADMIN}" in released["output"]


def test_an_admin_stopping_a_missing_session_gets_404(call_api: ApiCall) -> None:
    response = call_api("DELETE", f"/sessions/{MISSING}", sub=ADMIN, groups=ADMIN_GROUPS)

    assert response.status == 404
    assert response.body["field"] == "sessionId"


def test_an_admin_lists_every_users_sessions(owned: str, call_api: ApiCall, deployment: Deployment) -> None:
    deployment.seed("1c0e7a52-3f1b-4d6e-9a27-5b4c1d2e3f61", OTHER)

    everyone = call_api("GET", "/sessions", query={"all": "true"}, sub=ADMIN, groups=ADMIN_GROUPS)
    own = call_api("GET", "/sessions", sub=ADMIN, groups=ADMIN_GROUPS)

    assert everyone.status == 200
    assert {s["ownerId"] for s in everyone.body["sessions"]} == {OWNER, OTHER}
    assert own.body["sessions"] == []  # without all=true an admin sees their own, like anyone


@pytest.mark.parametrize("groups", [None, "dev", "[dev cloudide-admins-x]", "cloudide-admin"])
def test_listing_everyone_is_forbidden_outside_the_admin_group(
    groups: str | None, owned: str, call_api: ApiCall
) -> None:
    response = call_api("GET", "/sessions", query={"all": "true"}, sub=OTHER, groups=groups)

    assert response.status == 403, response
    assert response.body == {
        "code": "Forbidden",
        "message": "listing every user's sessions needs the admin group",
        "field": "all",
    }


def test_a_non_admin_cannot_stop_someone_elses_session(
    owned: str, call_api: ApiCall, deployment: Deployment
) -> None:
    response = call_api("DELETE", f"/sessions/{owned}", sub=OTHER, groups="dev")

    assert response.status == 404
    assert deployment.store.require(owned).status is Status.READY


def authz_cases() -> int:
    """How many (route, caller) cases this module checks: reported by bench/security.py."""
    return (
        len(SESSION_ROUTES) * 2  # another user, the owner
        + len(ROUTES)  # unauthenticated
        + len(set(SESSION_ROUTES) - ADMIN_MAY)  # admin denied
        + 3  # admin stop, admin stop missing, admin list
        + 4  # list-all forbidden per group form
        + 1  # non-admin stop
    )
