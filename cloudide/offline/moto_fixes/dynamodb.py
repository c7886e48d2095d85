# mypy: disable-error-code="method-assign,attr-defined,assignment,union-attr"
# mypy: disable-error-code="typeddict-item,arg-type,var-annotated,unused-ignore"
# (this module patches moto classes in place; moto's own annotations cannot describe that)
"""Correction of moto's DynamoDB: item writes are atomic, as on AWS."""

from __future__ import annotations

import contextlib
import copy
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from botocore.exceptions import ClientError

from cloudide.offline.moto_fixes import probing
from cloudide.offline.moto_fixes.correction import Correction

_DYNAMODB_LOCK = threading.RLock()
_DYNAMODB_OPERATIONS = (
    "get_item", "put_item", "update_item", "delete_item", "query", "scan",
    "batch_get_item", "batch_write_item", "transact_get_items", "transact_write_items",
)  # fmt: skip


def fix_dynamodb_atomic_items() -> None:
    """Serialises the backend's item operations, which the session record's conditional writes rely on,
    and answers each with a snapshot, so a read never sees a write half-applied. Delete when moto locks
    item writes."""
    from moto.dynamodb.models import DynamoDBBackend

    for name in _DYNAMODB_OPERATIONS:
        original = getattr(DynamoDBBackend, name)
        if getattr(original, "_cloudide_fix", False):
            continue

        def locked(*args: Any, __original: Callable[..., Any] = original, **kwargs: Any) -> Any:
            with _DYNAMODB_LOCK:
                # A copy: moto serialises the answer after the call returns, and the live item may be
                # changing by then ("dictionary changed size during iteration" under the soak).
                return copy.deepcopy(__original(*args, **kwargs))

        locked._cloudide_fix = True  # type: ignore[attr-defined]
        setattr(DynamoDBBackend, name, locked)


def _probe_dynamodb_atomic_items() -> None:
    """Two writers of one new item, each conditional on its absence: moto's condition check is held
    until both have passed it (or one second has gone), so unserialised writes both succeed."""
    from moto.dynamodb.models import table

    ddb = probing.client("dynamodb")
    ddb.create_table(
        TableName="probe-race",
        KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    both_checked = threading.Barrier(2, timeout=1)
    original = table.get_filter_expression

    def held_check(*args: Any, **kwargs: Any) -> Any:
        condition = original(*args, **kwargs)
        with contextlib.suppress(threading.BrokenBarrierError):  # the other writer is not checking now
            both_checked.wait()
        return condition

    def write(writer: str) -> str:
        try:
            ddb.put_item(
                TableName="probe-race",
                Item={"k": {"S": "one"}, "writer": {"S": writer}},
                ConditionExpression="attribute_not_exists(k)",
            )
        except ClientError as error:
            return str(error.response["Error"]["Code"])
        return "written"

    table.get_filter_expression = held_check
    try:
        with ThreadPoolExecutor(2) as pool:
            outcomes = sorted(pool.map(write, ["a", "b"]))
    finally:
        table.get_filter_expression = original
    assert outcomes == ["ConditionalCheckFailedException", "written"], outcomes


DYNAMODB_ATOMIC_ITEMS = Correction(
    name="dynamodb-atomic-items",
    moto="applies an item write as read, check the condition, modify, with no lock: two concurrent"
    " conditional writes can both pass, one can undo the other, a read can see half an update",
    aws="every item write is atomic, its condition checked atomically with it",
    install=fix_dynamodb_atomic_items,
    probe=_probe_dynamodb_atomic_items,
)
