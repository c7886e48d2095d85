"""How strict the offline stand-ins are, from running the checks that prove it.

Keys:
- corrections / corrections_with_probe: entries in the harness's list of moto corrections, and how
  many of them have a probe that fails on plain moto and passes corrected (tests/offline/test_moto_fixes.py);
- iam_calls_checked / iam_calls_denied: AWS API calls the functions, the workflow and the task make
  (found from the code), and how many of them no Allow statement of the caller's role grants with every
  resource the Service Authorization Reference requires (target 0);
- stand_in_rules: AWS behaviours a stand-in (sandbox, local REST API, FakeFargate, moto, the offline
  deploy) now refuses as AWS does, counted as the distinct `stand_in_rule` names whose tests pass.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


class _RuleOutcomes:
    """A pytest plugin: for each stand_in_rule name, whether every test carrying it passed."""

    def __init__(self) -> None:
        self.rules_of: dict[str, list[str]] = {}
        self.failed: set[str] = set()
        self.passed: dict[str, int] = defaultdict(int)

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            self.rules_of[item.nodeid] = [str(m.args[0]) for m in item.iter_markers("stand_in_rule")]
        items[:] = [item for item in items if self.rules_of[item.nodeid]]

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        rules = self.rules_of.get(report.nodeid, [])
        if report.failed or report.skipped:
            self.failed.update(rules)
        elif report.when == "call" and report.passed:
            for rule in rules:
                self.passed[rule] += 1

    def enforced(self) -> set[str]:
        return {rule for rule in self.passed if rule not in self.failed}


def run() -> dict[str, Any]:
    from cloudide.offline.moto_fixes import proof
    from tests.security import iam_calls

    outcomes = _RuleOutcomes()
    pytest.main(
        ["-q", "-p", "no:cacheprovider", "-m", "not deployed", str(ROOT / "tests")], plugins=[outcomes]
    )
    return {
        **proof.summary(),
        **iam_calls.summary(iam_calls.report()),
        "stand_in_rules": len(outcomes.enforced()),
        "stand_in_rule_names": sorted(outcomes.enforced()),
    }
