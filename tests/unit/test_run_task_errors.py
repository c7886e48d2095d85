"""RunTask's refusals sorted into "try again" and "give up": the workflow retries and falls back to
on-demand only on the first kind, so a permanent refusal misread as a capacity shortage would hide a
broken deployment behind retries and an on-demand bill."""

from __future__ import annotations

import boto3
import pytest
from botocore.stub import Stubber
from sessions.config import Settings
from sessions.ecs_tasks import CapacityUnavailable, EcsTasks, ProvisioningFailed

from tests.unit.test_lifecycle_rules import session


@pytest.mark.parametrize(
    ("code", "message", "expected"),
    [
        (
            "ClientException",
            "Capacity is unavailable at this time. Please try again later.",
            CapacityUnavailable,
        ),
        ("ThrottlingException", "Rate exceeded", CapacityUnavailable),
        (
            "ClientException",
            "FARGATE_SPOT capacity provider is not supported when using ARM architecture.",
            ProvisioningFailed,
        ),
        (
            "InvalidParameterException",
            "No Fargate configuration exists for given values.",
            ProvisioningFailed,
        ),
    ],
)
def test_only_transient_refusals_are_retried(code: str, message: str, expected: type[Exception]) -> None:
    client = boto3.client("ecs", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    settings = Settings.model_validate({
        "SESSIONS_TABLE": "t", "CLUSTER_ARN": "c", "IMAGES": '{"base": "td:1"}', "SUBNETS": "s", "SECURITY_GROUPS": "g",
    })  # fmt: skip
    with Stubber(client) as stub:
        stub.add_client_error("run_task", service_error_code=code, service_message=message)
        with pytest.raises(expected, match=message.split(".")[0]):
            EcsTasks(settings, client=client).run(session(), client_token="s-1-1", spot=True)
