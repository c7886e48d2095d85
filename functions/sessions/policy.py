"""Per-group limits: which images and tiers a caller may start, how many sessions at once, which idle
timeouts and how long a session may live, and what counts as use (sessions/usage.py).

The admin writes one JSON document (the template's `AccessPolicy` parameter, reaching the API as
`ACCESS_POLICY`): a rule per Cognito group and a `default` rule for callers in none of them. A field a
rule leaves out takes the deployment-wide value (the template's AllowedTiers, SessionsPerUser, idle
bounds and MaxLifetimeHours; every deployed image), so an empty document means "the deployment's
settings for everyone", which is how a deployment without a policy behaves.

A caller in several listed groups gets the most generous value of each field across them: groups
grant, they never take away. A deploy-time parameter rather than a Parameter Store document because the
policy is then reviewed and versioned with the deployment (samconfig.toml), validated at cold start,
read with no call on the request path and no extra IAM permission, and identical in the offline stack.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sessions.tiers import TIERS
from sessions.usage import IdlePolicy

# Grants every image the deployment offers, present and future.
ALL_IMAGES = "*"


class IdleBounds(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min: int = Field(ge=1)
    max: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> IdleBounds:
        if self.min > self.max:
            raise ValueError(f"idleTimeoutMinutes: min {self.min} is above max {self.max}")
        return self


class Rule(BaseModel):
    """One group's limits; a field left out takes the deployment-wide value."""

    model_config = ConfigDict(extra="forbid")

    images: list[str] | None = None
    tiers: list[str] | None = None
    maxSessions: int | None = Field(None, ge=0)
    idleTimeoutMinutes: IdleBounds | None = None
    maxLifetimeHours: float | None = Field(None, gt=0, le=8760)
    idlePolicy: IdlePolicy | None = None
    disconnectGraceMinutes: int | None = Field(None, ge=0, le=24 * 60)

    @model_validator(mode="after")
    def _known_tiers(self) -> Rule:
        unknown = sorted(set(self.tiers or ()) - set(TIERS))
        if unknown:
            raise ValueError(f"tiers {unknown} are not tiers; known: {sorted(TIERS)}")
        return self


@dataclass(frozen=True)
class Limits:
    """What a caller may do. The deployment's settings are one too: the values rules fall back to."""

    images: frozenset[str]
    tiers: frozenset[str]
    max_sessions: int
    idle_min_minutes: int
    idle_max_minutes: int
    max_lifetime_hours: float
    idle_policy: IdlePolicy
    disconnect_grace_minutes: int
    granted_by: str = "the deployment's settings"  # named in error messages

    @property
    def max_lifetime_seconds(self) -> int:
        return int(self.max_lifetime_hours * 3600)

    def idle_minutes(self, preferred: int) -> int:
        """The deployment's default idle timeout, moved into these bounds."""
        return min(max(preferred, self.idle_min_minutes), self.idle_max_minutes)


class AccessPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    groups: dict[str, Rule] = Field(default_factory=dict)
    default: Rule = Field(default_factory=Rule)

    @classmethod
    def parse(cls, value: object) -> object:
        """The environment carries JSON; empty means no policy beyond the deployment's settings."""
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value

    def limits_for(self, groups: Iterable[str], baseline: Limits) -> Limits:
        matched = sorted(set(groups) & set(self.groups))
        resolved = [_resolve(self.groups[name], baseline) for name in matched] or [
            _resolve(self.default, baseline)
        ]
        return Limits(
            images=frozenset().union(*(r.images for r in resolved)),
            tiers=frozenset().union(*(r.tiers for r in resolved)),
            max_sessions=max(r.max_sessions for r in resolved),
            idle_min_minutes=min(r.idle_min_minutes for r in resolved),
            idle_max_minutes=max(r.idle_max_minutes for r in resolved),
            max_lifetime_hours=max(r.max_lifetime_hours for r in resolved),
            idle_policy=max((r.idle_policy for r in resolved), key=lambda p: p.generosity),
            disconnect_grace_minutes=max(r.disconnect_grace_minutes for r in resolved),
            granted_by=", ".join(f"group {name!r}" for name in matched) or "the default rule",
        )


def _resolve(rule: Rule, baseline: Limits) -> Limits:
    images = baseline.images if rule.images is None or ALL_IMAGES in rule.images else frozenset(rule.images)
    idle = rule.idleTimeoutMinutes
    return Limits(
        images=images & baseline.images,
        tiers=frozenset(rule.tiers) if rule.tiers is not None else baseline.tiers,
        max_sessions=rule.maxSessions if rule.maxSessions is not None else baseline.max_sessions,
        idle_min_minutes=idle.min if idle else baseline.idle_min_minutes,
        idle_max_minutes=idle.max if idle else baseline.idle_max_minutes,
        max_lifetime_hours=rule.maxLifetimeHours or baseline.max_lifetime_hours,
        idle_policy=rule.idlePolicy or baseline.idle_policy,
        disconnect_grace_minutes=(
            rule.disconnectGraceMinutes
            if rule.disconnectGraceMinutes is not None
            else baseline.disconnect_grace_minutes
        ),
    )
