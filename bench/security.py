"""The security checks' figures, from actually running them.

Keys: fuzz_cases / fuzz_5xx (schemathesis cases sent to the API handler and server errors among
them, tests/security/test_api_fuzz.py), checkov_failed (failed checkov checks on template.yaml),
wildcard_statements (IAM statements with a "*" resource, each justified in tests/security/test_iam.py),
authz_cases (passing route-by-caller cases of tests/security/test_authz_matrix.py).
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


def run() -> dict[str, Any]:
    from tests.security import test_api_fuzz
    from tests.security.iam_policies import statements
    from tests.security.scanners import checkov_report

    outcomes = _Outcomes()
    # A server error fails its fuzz test but is counted in STATS first: the figure reports it either way.
    pytest.main(["-q", "-p", "no:cacheprovider", *(str(ROOT / s) for s in SUITES)], plugins=[outcomes])
    checkov = checkov_report()
    return {
        "fuzz_cases": test_api_fuzz.STATS.cases,
        "fuzz_5xx": len(test_api_fuzz.STATS.server_errors),
        "checkov_failed": int(checkov["summary"]["failed"]),
        "wildcard_statements": sum(1 for s in statements() if s.wildcard_resource),
        "authz_cases": outcomes.passed.get("tests/security/test_authz_matrix.py", 0),
    }
