"""Wall-clock time in the one format the record and the workflow share: RFC 3339 UTC, second precision.

Step Functions' `TimestampPath` and timestamp Choice rules accept `2026-01-01T00:00:00Z`; keeping every
stored timestamp in exactly that shape lets the workflow compare them without date arithmetic, and
lets DynamoDB condition expressions compare them as strings.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def now() -> datetime:
    return precise_now().replace(microsecond=0)


def precise_now() -> datetime:
    """Below the second, for the reconciler's grace; the one other place the product reads the time
    (the offline harness moves both together)."""
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def later(moment: datetime, seconds: float) -> str:
    return rfc3339(moment + timedelta(seconds=seconds))
