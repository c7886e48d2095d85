"""What every suite shares: the rule for tests that need a system tool, free ports, polling
(`eventually`, the one way tests wait: on the condition, never a fixed sleep).

A test that needs a tool (bubblewrap, tmux, chromium) calls :func:`require_tool`. On a developer's
machine a missing tool skips the test with the reason; in CI (``CI=true``) `.ci/run` installs every
such tool, so a missing one fails the test instead of hiding behind a skip.
"""

from __future__ import annotations

import os
import shutil
import socket

import pytest

from cloudide.offline.waiting import eventually

__all__ = ["IN_CI", "eventually", "free_port", "require_tool"]

IN_CI = os.environ.get("CI", "").lower() == "true"


def require_tool(name: str, why: str) -> str:
    """Return the tool's path, or skip (locally) / fail (CI) with a reason naming it."""
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} is not installed ({why}); .ci/run installs it"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)
    raise AssertionError("unreachable")  # for type checkers: skip/fail raise


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
