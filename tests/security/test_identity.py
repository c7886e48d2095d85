"""The caller as the Cognito authorizer describes them: every encoding of the groups claim parses alike."""

from __future__ import annotations

from typing import Any

import pytest
from sessions.errors import Unauthorized
from sessions.identity import Caller, parse_groups


@pytest.mark.parametrize(
    ("claim", "groups"),
    [
        ("cloudide-admins", {"cloudide-admins"}),
        ("cloudide-admins,dev", {"cloudide-admins", "dev"}),
        ("[cloudide-admins dev]", {"cloudide-admins", "dev"}),
        ("[cloudide-admins]", {"cloudide-admins"}),
        (["cloudide-admins", "dev"], {"cloudide-admins", "dev"}),
        ("", set()),
        ("[]", set()),
        (None, set()),
        (42, set()),
    ],
)
def test_groups_claim_in_every_form_aws_sends(claim: object, groups: set[str]) -> None:
    assert parse_groups(claim) == frozenset(groups)


def test_caller_from_claims_keeps_the_subject_and_groups() -> None:
    caller = Caller.from_claims({"sub": "u-1", "cognito:groups": "[a b]", "email": "x@example.com"})

    assert caller == Caller("u-1", frozenset({"a", "b"}))
    assert caller.in_group("a") and not caller.in_group("c") and not caller.in_group("")


@pytest.mark.parametrize(
    "claims", [None, {}, {"sub": ""}, {"sub": "  "}, {"sub": 7}, {"cognito:groups": "a"}]
)
def test_no_subject_is_unauthenticated(claims: dict[str, Any] | None) -> None:
    with pytest.raises(Unauthorized):
        Caller.from_claims(claims)
