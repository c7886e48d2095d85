import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloudide.offline.stack import OfflineAws
from tests.support import eventually

FIXTURE_TEMPLATE = Path(__file__).parent / "fixtures" / "template.yaml"


@pytest.fixture
def aws() -> Iterator[OfflineAws]:
    with OfflineAws(FIXTURE_TEMPLATE, wait_scale=0.01) as offline:
        yield offline


def finished(sfn: Any, execution_arn: str) -> dict[str, Any]:
    return eventually(
        lambda: (d := sfn.describe_execution(executionArn=execution_arn))["status"] != "RUNNING" and d
    )


def run_definition(
    aws: OfflineAws, definition: dict[str, Any], payload: dict[str, Any] | None = None
) -> dict:
    sfn = aws.client("stepfunctions")
    arn = sfn.create_state_machine(
        name=f"probe{time.time_ns()}",
        definition=json.dumps(definition),
        roleArn="arn:aws:iam::123456789012:role/r",
    )["stateMachineArn"]
    return finished(
        sfn, sfn.start_execution(stateMachineArn=arn, input=json.dumps(payload or {}))["executionArn"]
    )
