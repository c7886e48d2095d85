"""The one way the offline harness and its tests wait: on the condition itself, never a fixed sleep.

A fixed sleep is either too short on a loaded machine (the test flakes) or too long everywhere (the
suite crawls); polling the condition with a deadline is neither.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(
    check: Callable[[], T],
    timeout: float = 20.0,
    interval: float = 0.05,
    *,
    explain: Callable[[], object] | None = None,
) -> T:
    """Poll until `check` returns something truthy and return it; fail with the last value otherwise,
    and with what `explain` says about the state then (the failure is all a flaky run leaves behind)."""
    deadline = time.monotonic() + timeout
    value = check()
    while not value:
        if time.monotonic() >= deadline:
            why = f": {explain()}" if explain else ""
            raise AssertionError(f"condition not met within {timeout}s (last value: {value!r}){why}")
        time.sleep(interval)
        value = check()
    return value
