"""Settings come from the function's environment; a misconfigured deployment fails at the first call,
with a message that names the variable."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError
from sessions.config import Settings

BASE = {"SESSIONS_TABLE": "sessions"}


def settings(**environment: Any) -> Settings:
    return Settings.model_validate(BASE | environment)


def test_defaults_need_only_the_table() -> None:
    parsed = settings()

    assert (parsed.sessions_table, parsed.default_tier, parsed.allowed_tiers) == (
        "sessions",
        "small",
        ["small"],
    )
    assert (
        parsed.idle_timeout_min_minutes
        <= parsed.idle_timeout_default_minutes
        <= parsed.idle_timeout_max_minutes
    )


def test_environment_strings_become_typed_values() -> None:
    parsed = settings(
        ALLOWED_TIERS=" small, medium ,large,",
        DEFAULT_TIER="medium",
        SUBNETS="subnet-a,subnet-b",
        SECURITY_GROUPS="",
        IMAGES='{"base": "arn:aws:ecs:us-east-1:123456789012:task-definition/t:1"}',
        USE_FARGATE_SPOT="true",
        MAX_LIFETIME_HOURS="1.5",
        SESSIONS_PER_USER="7",
    )

    assert parsed.allowed_tiers == ["small", "medium", "large"]
    assert (parsed.subnets, parsed.security_groups) == (["subnet-a", "subnet-b"], [])
    assert parsed.images == {"base": "arn:aws:ecs:us-east-1:123456789012:task-definition/t:1"}
    assert (parsed.use_spot, parsed.max_lifetime_hours, parsed.sessions_per_user) == (True, 1.5, 7)


def test_empty_images_means_none_offered() -> None:
    assert settings(IMAGES="").images == {}


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        ({"ALLOWED_TIERS": "small,huge"}, "ALLOWED_TIERS names unknown tiers ['huge']"),
        ({"ALLOWED_TIERS": "small", "DEFAULT_TIER": "large"}, "DEFAULT_TIER 'large' is not in ALLOWED_TIERS"),
        ({"IDLE_TIMEOUT_DEFAULT_MINUTES": "500"}, "IDLE_TIMEOUT_DEFAULT_MINUTES must lie within"),
        ({"IDLE_TIMEOUT_MIN_MINUTES": "40"}, "IDLE_TIMEOUT_DEFAULT_MINUTES must lie within"),
        ({"IDLE_TIMEOUT_MIN_MINUTES": "0"}, "IDLE_TIMEOUT_MIN_MINUTES"),
        ({"MAX_LIFETIME_HOURS": "0"}, "MAX_LIFETIME_HOURS"),
        ({"SESSIONS_PER_USER": "0"}, "SESSIONS_PER_USER"),
        ({"GLOBAL_SESSION_CAP": "lots"}, "GLOBAL_SESSION_CAP"),
        ({"IMAGES": "{not json"}, "IMAGES"),
        ({"USE_FARGATE_SPOT": "maybe"}, "USE_FARGATE_SPOT"),
    ],
)
def test_bad_configuration_names_the_variable(environment: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError) as raised:
        settings(**environment)

    assert message in str(raised.value)


def test_the_table_is_required() -> None:
    with pytest.raises(ValidationError, match="SESSIONS_TABLE"):
        Settings.model_validate({})
