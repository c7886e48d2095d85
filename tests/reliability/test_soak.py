"""The soak: sessions started, used and stopped on a seeded random schedule with faults injected, the
reconciler running as its schedule would, ending with the shared invariant check.

The test soaks SOAK_TEST_SESSIONS sessions to stay within the suite's time budget on two cores;
`python -m bench reliability` soaks bench.reliability.SOAK_SESSIONS (200) with the same code and seed.
"""

from __future__ import annotations

import pytest

from bench.reliability import FAULT_WEIGHTS, SOAK_GRACE_SECONDS, soak
from tests.workflow.conftest import Offline

SOAK_TEST_SESSIONS = 60


@pytest.fixture(scope="module")
def stack_parameters() -> dict[str, str]:
    """The workflow tests' stack with the soak's grace period (bench.reliability.SOAK_GRACE_SECONDS)."""
    return {"TerminalImageUri": "local/terminal:dev", "ReconcilerGraceSeconds": str(SOAK_GRACE_SECONDS)}


def test_soak_with_seeded_faults_leaves_nothing_behind(offline: Offline) -> None:
    result = soak(offline.aws, offline.fargate, sessions=SOAK_TEST_SESSIONS, grace_seconds=SOAK_GRACE_SECONDS)

    assert set(result.faults) == set(FAULT_WEIGHTS), "every kind of fault was injected"
    assert result.repairs["LostSessionsClosed"] >= result.faults["lost STOPPED event"]
    assert result.repairs["AbandonedSessionsStopped"] >= result.faults["workflow aborted externally"]
    assert not result.violations, result.violations
