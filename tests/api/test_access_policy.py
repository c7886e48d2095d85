"""The admin's per-group policy through the real API handler: 403 for what a group may not start,
429 over its session limit, each message naming the field and what the caller may do instead."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.api import gateway
from tests.api.conftest import API_FUNCTION, ApiResponse, Deployment, parse_api_response
from tests.api.test_api import assert_error

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

POLICY = {
    "groups": {
        "students": {
            "images": ["base"],
            "tiers": ["small"],
            "maxSessions": 1,
            "idleTimeoutMinutes": {"min": 5, "max": 30},
            "maxLifetimeHours": 2,
        },
        "staff": {
            "images": ["*"],
            "tiers": ["small", "medium", "large", "xlarge"],
            "maxSessions": 4,
            "idleTimeoutMinutes": {"min": 10, "max": 480},
            "maxLifetimeHours": 24,
        },
        "suspended": {"maxSessions": 0},
    },
    "default": {"images": ["base"], "maxSessions": 2},
}


def start(deployment: Deployment, groups: str | None, sub: str = "user-1", **body: Any) -> ApiResponse:
    event = gateway.api_event("POST", "/sessions", body={"projectId": "p", **body}, sub=sub)
    if groups is not None:
        event["requestContext"]["authorizer"]["claims"]["cognito:groups"] = groups
    images = {"base": deployment.stack.refs["TerminalTaskDefinition"]}
    images["python"] = images["base"]
    return parse_api_response(
        deployment.invoke(API_FUNCTION, event, ACCESS_POLICY=json.dumps(POLICY), IMAGES=json.dumps(images))
    )


def test_students_get_the_base_image_on_the_small_tier_only(deployment: Deployment) -> None:
    python = start(deployment, "students", image="python")
    xlarge = start(deployment, "students", tier="xlarge")
    long_idle = start(deployment, "students", idleTimeoutMinutes=60)

    assert_error(python, 403, field="image")
    assert "'python'" in python.body["message"] and "['base']" in python.body["message"]
    assert "group 'students'" in python.body["message"]
    assert_error(xlarge, 403, field="tier")
    assert "['small']" in xlarge.body["message"]
    assert_error(long_idle, 403, field="idleTimeoutMinutes")
    assert "between 5 and 30" in long_idle.body["message"]


def test_students_have_one_session_with_their_lifetime(deployment: Deployment) -> None:
    first = start(deployment, "students")
    second = start(deployment, "students")

    assert first.status == 202, first
    assert first.body["maxLifetimeSeconds"] == 2 * 3600
    assert first.body["idleTimeoutSeconds"] == 30 * 60  # the deployment's default lies within 5..30
    assert_error(second, 429, field="maxSessions")
    assert "maxSessions is 1" in second.body["message"]
    assert start(deployment, "students", sub="user-2").status == 202  # a limit per user, not per group


def test_staff_may_start_any_image_on_any_tier(deployment: Deployment) -> None:
    response = start(deployment, "staff", image="python", tier="xlarge", idleTimeoutMinutes=480)

    assert response.status == 202, response
    assert (response.body["image"], response.body["tier"]) == ("python", "xlarge")
    assert response.body["maxLifetimeSeconds"] == 24 * 3600
    assert_error(start(deployment, "staff", idleTimeoutMinutes=5), 403, field="idleTimeoutMinutes")


def test_several_groups_grant_the_most_generous_of_each_field(deployment: Deployment) -> None:
    # API Gateway's Cognito authorizer passes several groups as one comma-separated string.
    response = start(deployment, "students,staff", image="python", idleTimeoutMinutes=5)

    assert response.status == 202, response
    assert response.body["maxLifetimeSeconds"] == 24 * 3600


def test_callers_in_no_listed_group_get_the_default_rule(deployment: Deployment) -> None:
    for groups in (None, "visitors"):
        assert_error(start(deployment, groups, image="python"), 403, field="image")
    # The default rule leaves tiers and idle bounds to the deployment: small, medium, large; 5..240.
    assert start(deployment, None, tier="large", idleTimeoutMinutes=240).status == 202
    assert_error(start(deployment, None, tier="xlarge"), 403, field="tier")
    assert start(deployment, "visitors").status == 202
    assert_error(start(deployment, None), 429, field="maxSessions")


def test_a_group_allowed_no_sessions_is_refused_before_anything_is_created(deployment: Deployment) -> None:
    refused = start(deployment, "suspended")

    assert_error(refused, 403)
    assert "maxSessions is 0" in refused.body["message"]
    assert deployment.store.list_by_owner("user-1") == []
