# mypy: disable-error-code="method-assign,attr-defined,assignment,union-attr"
# mypy: disable-error-code="typeddict-item,arg-type,var-annotated,unused-ignore"
# (this module patches moto classes in place; moto's own annotations cannot describe that)
"""Correction of moto's DynamoDB: item writes are atomic, as on AWS."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

_DYNAMODB_LOCK = threading.RLock()
_DYNAMODB_OPERATIONS = (
    "get_item", "put_item", "update_item", "delete_item", "query", "scan",
    "batch_get_item", "batch_write_item", "transact_get_items", "transact_write_items",
)  # fmt: skip


def fix_dynamodb_atomic_items() -> None:
    """moto applies an item write as read, check the condition, modify in place, with no lock: two
    concurrent conditional writes to one item can both pass their condition, or one can undo the other
    (a lost update), and a read can see a half-applied update. On AWS every item write is atomic and
    conditions are checked atomically with it, which is what the session record's conditional writes
    rely on. This serialises the backend's item operations. Delete when moto locks item writes."""
    from moto.dynamodb.models import DynamoDBBackend

    for name in _DYNAMODB_OPERATIONS:
        original = getattr(DynamoDBBackend, name)
        if getattr(original, "_cloudide_fix", False):
            continue

        def locked(*args: Any, __original: Callable[..., Any] = original, **kwargs: Any) -> Any:
            with _DYNAMODB_LOCK:
                return __original(*args, **kwargs)

        locked._cloudide_fix = True  # type: ignore[attr-defined]
        setattr(DynamoDBBackend, name, locked)
