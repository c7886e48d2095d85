"""Who is calling: the authenticated user and the groups they belong to, from the token's claims.

API Gateway's Cognito user pool authorizer (REST API, payload v1) verifies the token and hands its
claims to the function under `requestContext.authorizer.claims`, every value flattened to a string.
`cognito:groups` then arrives in one of the forms AWS has been seen to send: a single name
(`admins`), a comma-separated list (`admins,dev`), or a bracketed, space-separated list
(`[admins dev]`); a direct invocation or another authorizer may pass a real JSON list. All of them
parse to the same set, so a group policy can never silently miss a member because of the encoding.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sessions.errors import Unauthorized

GROUPS_CLAIM = "cognito:groups"
_SEPARATORS = re.compile(r"[,\s]+")


@dataclass(frozen=True)
class Caller:
    """The authenticated user behind one request; small and immutable so any policy can use it."""

    user_id: str
    groups: frozenset[str] = frozenset()

    def in_group(self, group: str) -> bool:
        return bool(group) and group in self.groups

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any] | None) -> Caller:
        """The caller the authorizer vouched for; a request without a subject is refused (401)."""
        subject = (claims or {}).get("sub")
        if not isinstance(subject, str) or not subject.strip():
            # API Gateway's authorizer rejects such calls first; this guards against misconfiguration.
            raise Unauthorized("the request carries no authenticated user")
        return cls(user_id=subject, groups=parse_groups((claims or {}).get(GROUPS_CLAIM)))


def parse_groups(value: object) -> frozenset[str]:
    """Every encoding of `cognito:groups` (see the module docstring) as one set of names."""
    if isinstance(value, list | tuple | set | frozenset):
        return frozenset(str(item).strip() for item in value if str(item).strip())
    if not isinstance(value, str):
        return frozenset()
    text = value.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return frozenset(name for name in _SEPARATORS.split(text) if name)
