"""IAM policy evaluation for the policies this project writes, where moto does not evaluate them: moto
ignores session policies, and treats any Condition it cannot resolve as a deny.

It implements what the policies use: Allow/Deny, Action and Resource with `*`/`?` wildcards (actions
match without regard to case, as IAM's do), and the StringEquals, StringLike, ArnEquals and ArnLike
condition operators. Anything else raises :class:`UnsupportedPolicy` instead of guessing: a caller that
enforces access treats that as a refusal.

Access through an assumed role with a session policy is the intersection of the two: the role's
policies (together) and the session policy must each allow, and an explicit Deny anywhere wins
(IAM's policy evaluation logic; SECURITY.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import Enum
from fnmatch import fnmatchcase
from typing import Any

Document = Mapping[str, Any]


class UnsupportedPolicy(NotImplementedError):
    """A policy uses an element or operator this evaluator does not implement."""


class Decision(Enum):
    ALLOW = "allow"
    DENY = "deny"  # an explicit Deny: nothing else can allow
    NONE = "none"  # no statement applies: denied unless another policy allows


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _matches(patterns: Any, value: str, *, fold_case: bool = False) -> bool:
    if fold_case:
        return any(fnmatchcase(value.lower(), str(pattern).lower()) for pattern in _as_list(patterns))
    return any(fnmatchcase(value, str(pattern)) for pattern in _as_list(patterns))


def _condition_holds(condition: Mapping[str, Any], context: Mapping[str, str]) -> bool:
    for operator, tests in condition.items():
        for key, expected in tests.items():
            if key not in context:  # a missing key never satisfies a String or Arn operator
                return False
            actual = context[key]
            if operator in ("StringEquals", "ArnEquals"):
                ok = actual in [str(e) for e in _as_list(expected)]
            elif operator in ("StringLike", "ArnLike"):
                ok = _matches(expected, actual)
            else:
                raise UnsupportedPolicy(f"condition operator {operator}")
            if not ok:
                return False
    return True


def decide(
    document: Document, action: str, resource: str, context: Mapping[str, str] | None = None
) -> Decision:
    """What one policy document says about `action` on `resource`."""
    decision = Decision.NONE
    for statement in _as_list(document["Statement"]):
        unsupported = {"NotAction", "NotResource", "NotPrincipal"} & set(statement)
        if unsupported:
            raise UnsupportedPolicy(f"policy element {sorted(unsupported)[0]}")
        if not (
            _matches(statement["Action"], action, fold_case=True)
            and _matches(statement["Resource"], resource)
        ):
            continue
        if not _condition_holds(statement.get("Condition", {}), context or {}):
            continue
        if statement["Effect"] == "Deny":
            return Decision.DENY
        decision = Decision.ALLOW
    return decision


def allows(document: Document, action: str, resource: str, context: Mapping[str, str] | None = None) -> bool:
    return decide(document, action, resource, context) is Decision.ALLOW


def allows_all(
    documents: list[Document], action: str, resource: str, context: Mapping[str, str] | None = None
) -> bool:
    """Access through several policies that must each allow (a role policy and a session policy)."""
    return all(allows(document, action, resource, context) for document in documents)


def role_session_allows(
    role_policies: Iterable[Document],
    session_policy: Document | None,
    action: str,
    resource: str,
    context: Mapping[str, str] | None = None,
) -> bool:
    """An assumed-role session's access: some role policy allows, the session policy (if the session
    has one) allows too, and no policy denies."""
    decisions = [decide(document, action, resource, context) for document in role_policies]
    if Decision.DENY in decisions or Decision.ALLOW not in decisions:
        return False
    return session_policy is None or allows(session_policy, action, resource, context)
