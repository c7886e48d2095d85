"""A small IAM evaluator for the identity and session policies here, where moto does not evaluate
(moto ignores session policies, and treats any Condition it cannot resolve as a deny).

It implements what the policies use: Allow/Deny, Action and Resource with `*`/`?` wildcards, and the
StringEquals, StringLike and ArnEquals condition operators; anything else raises instead of guessing.
Effective access through an assumed role with a session policy is the intersection of both.
"""

from __future__ import annotations

from collections.abc import Mapping
from fnmatch import fnmatchcase
from typing import Any


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _matches(patterns: Any, value: str) -> bool:
    return any(fnmatchcase(value, str(pattern)) for pattern in _as_list(patterns))


def _condition_holds(condition: Mapping[str, Any], context: Mapping[str, str]) -> bool:
    for operator, tests in condition.items():
        for key, expected in tests.items():
            if key not in context:
                return False
            actual = context[key]
            if operator in ("StringEquals", "ArnEquals"):
                ok = actual in [str(e) for e in _as_list(expected)]
            elif operator == "StringLike":
                ok = _matches(expected, actual)
            else:
                raise NotImplementedError(f"condition operator {operator}")
            if not ok:
                return False
    return True


def allows(
    document: Mapping[str, Any], action: str, resource: str, context: Mapping[str, str] | None = None
) -> bool:
    allowed = False
    for statement in _as_list(document["Statement"]):
        if not (_matches(statement["Action"], action) and _matches(statement["Resource"], resource)):
            continue
        if not _condition_holds(statement.get("Condition", {}), context or {}):
            continue
        if statement["Effect"] == "Deny":
            return False
        allowed = True
    return allowed


def allows_all(
    documents: list[Mapping[str, Any]], action: str, resource: str, context: Mapping[str, str] | None = None
) -> bool:
    """Access through several policies that must all allow (role policy and session policy)."""
    return all(allows(document, action, resource, context) for document in documents)
