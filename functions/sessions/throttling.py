"""AWS throttling, as one error the workflow's Retry rules know by name.

A throttled call inside a workflow step would otherwise surface as a generic `ClientError` and send the
session down the failure path. Raised as :class:`ThrottlingException` instead, it matches the
`ThrottlingException` Retry rule of every step in statemachines/session_lifecycle.asl.json, which backs
off with full jitter so a throttling storm spreads out instead of synchronising its retries.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from botocore.exceptions import ClientError

# ECS, DynamoDB (on-demand and provisioned), Step Functions and the generic AWS query-protocol codes.
THROTTLING_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ProvisionedThroughputExceededException",
    }
)


class ThrottlingException(Exception):
    """An AWS API kept throttling the step after the SDK's own retries; the workflow retries later."""


def is_throttling(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") in THROTTLING_CODES


@contextmanager
def throttling_is_retryable() -> Iterator[None]:
    """Turn a throttled AWS call into :class:`ThrottlingException`; every other error passes unchanged."""
    try:
        yield
    except ClientError as error:
        if is_throttling(error):
            raise ThrottlingException(str(error)) from error
        raise
