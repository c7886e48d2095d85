"""The access policy document: how rules combine, what an admin's mistake looks like, and the shapes the
groups claim arrives in."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from sessions.config import Settings
from sessions.policy import AccessPolicy, Limits
from sessions.usage import IdlePolicy

BASELINE = Limits(
    images=frozenset({"base", "python", "node"}),
    tiers=frozenset({"small", "medium"}),
    max_sessions=3,
    idle_min_minutes=5,
    idle_max_minutes=240,
    max_lifetime_hours=12,
    idle_policy=IdlePolicy.INPUT,
    disconnect_grace_minutes=5,
)


def test_an_empty_policy_is_the_deployment_for_everyone() -> None:
    limits = AccessPolicy.model_validate(AccessPolicy.parse("")).limits_for({"anyone"}, BASELINE)

    assert (limits.images, limits.tiers, limits.max_sessions) == (BASELINE.images, BASELINE.tiers, 3)
    assert (limits.idle_min_minutes, limits.idle_max_minutes, limits.max_lifetime_seconds) == (5, 240, 43200)


def test_groups_combine_to_the_most_generous_value_of_each_field() -> None:
    policy = AccessPolicy.model_validate(
        {
            "groups": {
                "a": {"images": ["base"], "tiers": ["small"], "maxSessions": 1, "idleTimeoutMinutes": {"min": 10, "max": 20}},
                "b": {"images": ["node", "ruby"], "maxSessions": 4, "idleTimeoutMinutes": {"min": 15, "max": 60}},
            }
        }
    )  # fmt: skip

    limits = policy.limits_for({"a", "b", "unlisted"}, BASELINE)

    assert limits.images == {"base", "node"}  # "ruby" is not deployed: nobody can start it
    assert limits.tiers == {"small", "medium"}  # b leaves tiers to the deployment
    assert (limits.max_sessions, limits.idle_min_minutes, limits.idle_max_minutes) == (4, 10, 60)
    assert limits.idle_minutes(30) == 30
    assert limits.granted_by == "group 'a', group 'b'"


def test_groups_grant_the_keeping_idle_policy_and_the_longest_disconnect_grace() -> None:
    policy = AccessPolicy.model_validate(
        {
            "groups": {
                "builders": {"idlePolicy": "work", "disconnectGraceMinutes": 0},
                "students": {"disconnectGraceMinutes": 30},
            }
        }
    )

    builders = policy.limits_for({"builders"}, BASELINE)
    both = policy.limits_for({"builders", "students"}, BASELINE)
    nobody = policy.limits_for(set(), BASELINE)

    assert (builders.idle_policy, builders.disconnect_grace_minutes) == (IdlePolicy.WORK, 0)
    assert (both.idle_policy, both.disconnect_grace_minutes) == (IdlePolicy.WORK, 30)
    assert (nobody.idle_policy, nobody.disconnect_grace_minutes) == (IdlePolicy.INPUT, 5)


def test_the_default_idle_timeout_is_moved_into_a_groups_bounds() -> None:
    policy = AccessPolicy.model_validate({"default": {"idleTimeoutMinutes": {"min": 60, "max": 90}}})

    assert policy.limits_for(set(), BASELINE).idle_minutes(30) == 60


@pytest.mark.parametrize(
    ("document", "complaint"),
    [
        ('{"groups": {"a": {"tiers": ["huge"]}}}', "huge"),
        ('{"default": {"idleTimeoutMinutes": {"min": 30, "max": 10}}}', "min 30 is above max 10"),
        ('{"default": {"maxSesions": 2}}', "maxSesions"),
        ('{"default": {"maxSessions": -1}}', "maxSessions"),
        ("{not json", "ACCESS_POLICY"),
        ('{"default": {"idlePolicy": "cpu"}}', "idlePolicy"),
        ('{"groups": {"a": {"disconnectGraceMinutes": -1}}}', "disconnectGraceMinutes"),
    ],
)
def test_a_broken_policy_fails_at_cold_start_naming_the_mistake(document: str, complaint: str) -> None:
    with pytest.raises((ValidationError, ValueError), match=complaint):
        Settings.model_validate({"SESSIONS_TABLE": "t", "ACCESS_POLICY": document})
