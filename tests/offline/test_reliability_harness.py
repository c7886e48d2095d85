"""The harness pieces the fault matrix stands on: Lambda's asynchronous retries, a stopped execution
that is really ABORTED, and AWS API fault injection."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from cloudide.offline import faults, moto_fixes
from cloudide.offline.moto_fixes import runtime
from cloudide.offline.stack import OfflineAws
from tests.support import eventually


@pytest.fixture
def injected(aws: OfflineAws) -> Iterator[faults.AwsFaults]:
    with faults.install().scoped() as injected, moto_fixes.SETTINGS.scoped():
        yield injected


def _recorded(aws: OfflineAws, pk: str) -> bool:
    assert aws.stack
    table = aws.stack.outputs["TableName"]
    return "Item" in aws.client("dynamodb").get_item(TableName=table, Key={"pk": {"S": pk}})


@pytest.mark.parametrize(("failures", "recorded"), [(2, True), (3, False)])
def test_an_async_invocation_is_retried_twice(
    aws: OfflineAws, injected: faults.AwsFaults, failures: int, recorded: bool
) -> None:
    assert aws.stack
    function = aws.stack.physical_id("RecordFunction")
    moto_fixes.SETTINGS.function_failures[function] = failures
    pk = f"async-{failures}"

    response = aws.client("lambda").invoke(
        FunctionName=function, InvocationType="Event", Payload=json.dumps({"pk": pk})
    )

    assert response["StatusCode"] == 202, "an Event invocation is accepted at once"
    # Three attempts in all: each failed one uses up an injected failure. Waiting on that (not on a
    # fixed sleep) keeps the test exact on a busy machine.
    retries_s = sum(moto_fixes.ASYNC_RETRY_DELAYS) * moto_fixes.SETTINGS.wait_scale
    eventually(
        lambda: moto_fixes.SETTINGS.function_failures[function] == max(0, failures - 3), retries_s + 30
    )
    if recorded:
        eventually(lambda: _recorded(aws, pk), 30)
    else:  # the third failure was the last attempt: no fourth one comes
        eventually(lambda: runtime.async_invocations_running() == 0, retries_s + 30)
        assert not _recorded(aws, pk)


def test_stopping_an_execution_that_waits_for_a_callback_aborts_it(aws: OfflineAws) -> None:
    assert aws.stack
    sfn: Any = aws.client("stepfunctions")
    machine = sfn.create_state_machine(
        name="waits",
        roleArn="arn:aws:iam::123456789012:role/r",
        definition=json.dumps(
            {
                "StartAt": "Wait",
                "States": {
                    "Wait": {
                        "Type": "Task",
                        "Resource": "arn:aws:states:::lambda:invoke.waitForTaskToken",
                        "Parameters": {
                            "FunctionName": aws.stack.physical_id("RecordFunction"),
                            "Payload": {"pk": "waiting", "token.$": "$$.Task.Token"},
                        },
                        "TimeoutSeconds": 100000,
                        "End": True,
                    }
                },
            }
        ),
    )["stateMachineArn"]
    execution = sfn.start_execution(stateMachineArn=machine)["executionArn"]
    eventually(lambda: _recorded(aws, "waiting"))  # the task runs and waits for its token

    sfn.stop_execution(executionArn=execution)

    status = eventually(
        lambda: (s := sfn.describe_execution(executionArn=execution)["status"]) != "RUNNING" and s
    )
    assert status == "ABORTED"
    time.sleep(0.3)
    assert sfn.describe_execution(executionArn=execution)["status"] == "ABORTED", "and it stays ABORTED"


def test_injected_faults_answer_like_the_service(aws: OfflineAws, injected: faults.AwsFaults) -> None:
    assert aws.stack
    dynamodb: Any = aws.client("dynamodb")  # two attempts: one throttle is retried away
    table = aws.stack.outputs["TableName"]
    once = injected.inject("dynamodb", "GetItem", code="ProvisionedThroughputExceededException")
    dynamodb.get_item(TableName=table, Key={"pk": {"S": "x"}})
    assert (once.hits, once.times) == (1, 0)

    with injected.outage("s3", code="SlowDown") as outage, pytest.raises(ClientError) as raised:
        aws.client("s3").list_buckets()
    assert raised.value.response["Error"]["Code"] == "SlowDown"
    assert outage.hits > 1, "the SDK retried it, then gave up"
    aws.client("s3").list_buckets()  # the outage is over


def test_conditional_writes_to_one_item_are_atomic(aws: OfflineAws) -> None:
    assert aws.stack
    table = aws.stack.outputs["TableName"]
    dynamodb: Any = aws.client("dynamodb")
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "contended"}})
    winners: list[int] = []

    def claim(writer: int) -> None:
        try:
            dynamodb.update_item(
                TableName=table,
                Key={"pk": {"S": "contended"}},
                UpdateExpression="SET claimedBy = :w",
                ConditionExpression="attribute_not_exists(claimedBy)",
                ExpressionAttributeValues={":w": {"N": str(writer)}},
            )
            winners.append(writer)
        except dynamodb.exceptions.ConditionalCheckFailedException:
            pass

    writers = [threading.Thread(target=claim, args=(i,)) for i in range(20)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(30)

    assert len(winners) == 1
    item = dynamodb.get_item(TableName=table, Key={"pk": {"S": "contended"}})["Item"]
    assert item["claimedBy"] == {"N": str(winners[0])}
