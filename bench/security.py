"""The security checks' figures, from actually running them.

Keys: fuzz_cases / fuzz_5xx (schemathesis cases sent to the API handler and server errors among
them, tests/security/test_api_fuzz.py), checkov_failed (failed checkov checks on template.yaml),
wildcard_statements (IAM statements with a "*" resource, each justified in tests/security/test_iam.py),
authz_cases (passing route-by-caller cases of tests/security/test_authz_matrix.py),
sandbox_escape_attempts (tests marked `escape_attempt`: each tries, from inside a real sandbox, to reach
what AWS would not let a task reach) and sandbox_escapes (those that did not pass: an attempt that
failed, errored or was skipped is not one proven refused; the target is 0).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUITES = ["tests/security/test_api_fuzz.py", "tests/security/test_authz_matrix.py"]


class _Outcomes:
    """A pytest plugin counting the passed tests of each module (a failed case is not a covered one)."""

    def __init__(self) -> None:
        self.passed: dict[str, int] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" and report.passed:
            module = report.nodeid.split("::", 1)[0]
            self.passed[module] = self.passed.get(module, 0) + 1


class _EscapeAttempts:
    """A pytest plugin recording the escape attempts it collects and those that passed every phase."""

    def __init__(self) -> None:
        self.collected: set[str] = set()
        self.failed: set[str] = set()
        self.passed: set[str] = set()

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        self.collected = {item.nodeid for item in items if item.get_closest_marker("escape_attempt")}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not report.passed:
            self.failed.add(report.nodeid)
        elif report.when == "call":
            self.passed.add(report.nodeid)

    @property
    def escapes(self) -> int:
        return len(self.collected - (self.passed - self.failed))


def run() -> dict[str, Any]:
    from tests.security import test_api_fuzz
    from tests.security.iam_policies import statements
    from tests.security.scanners import checkov_report

    outcomes = _Outcomes()
    # A server error fails its fuzz test but is counted in STATS first: the figure reports it either way.
    pytest.main(["-q", "-p", "no:cacheprovider", *(str(ROOT / s) for s in SUITES)], plugins=[outcomes])
    attempts = _EscapeAttempts()
    pytest.main(
        ["-q", "-p", "no:cacheprovider", "-m", "escape_attempt and not deployed", str(ROOT / "tests")],
        plugins=[attempts],
    )
    checkov = checkov_report()
    return {
        "fuzz_cases": test_api_fuzz.STATS.cases,
        "fuzz_5xx": len(test_api_fuzz.STATS.server_errors),
        "checkov_failed": int(checkov["summary"]["failed"]),
        "wildcard_statements": sum(1 for s in statements() if s.wildcard_resource),
        "authz_cases": outcomes.passed.get("tests/security/test_authz_matrix.py", 0),
        "sandbox_escape_attempts": len(attempts.collected),
        "sandbox_escapes": attempts.escapes,
    }
