"""Faults that put the user's files at risk: the terminal's sync agent runs for real (in this process,
against the offline stack's workspace bucket) as the container of a session, and FakeFargate sends it
SIGTERM where ECS would. The invariant check then also requires every saved file to be in S3.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from sessions.ecs_tasks import workspace_prefix
from sessions.record import Session, Status, WaitingFor

from cloudide.offline.faults import FAULTS
from tests.image.conftest import InProcessAgent
from tests.support import eventually
from tests.workflow.conftest import Offline

FLUSH_DEADLINE_SECONDS = 20


@dataclass(frozen=True)
class Terminal:
    session: Session  # READY, its workflow watching
    execution: str
    root: Path  # the workspace its sync agent keeps


@pytest.fixture
def terminal(offline: Offline, tmp_path: Path) -> Iterator[Terminal]:
    """A watched session with a workspace of its own, whose container's sync agent flushes on SIGTERM."""
    session = offline.new_session(project_id=f"project-{uuid.uuid4().hex[:8]}")
    execution = offline.start(session)
    ready = offline.wait_parked(session.session_id, WaitingFor.STOP)
    root = tmp_path / "workspace"
    prefix = workspace_prefix(ready).rstrip("/")
    env = {
        "WORKSPACE_BUCKET": offline.aws.stack.outputs["WorkspaceBucketName"] if offline.aws.stack else "",
        "WORKSPACE_PREFIX": prefix,
        "SESSION_ID": ready.session_id,
        "WORKSPACE_DIR": str(root),
        "SYNC_POLL_SECONDS": "0.3",
        "SYNC_DEBOUNCE_SECONDS": "0.05",
        "SYNC_FLUSH_DEADLINE_SECONDS": str(FLUSH_DEADLINE_SECONDS),
    }
    agent = InProcessAgent(env, boto3.client("s3")).start()
    offline.workspaces[prefix] = root
    offline.fargate.on_sigterm = lambda _arn: agent.stop()
    yield Terminal(ready, execution, root)
    if agent.exit_code is None:
        agent.stop()


def _save(root: Path, names: range) -> None:
    for i in names:
        (root / "src").mkdir(parents=True, exist_ok=True)
        (root / f"src/file{i}.py").write_text(f"print({i})\n")


def test_spot_interruption_flushes_the_workspace_and_says_spot(offline: Offline, terminal: Terminal) -> None:
    # Given a READY session whose user has saved files
    assert terminal.session.task_arn
    _save(terminal.root, range(40))
    # When Fargate Spot reclaims the capacity (SIGTERM, the flush, then STOPPED)
    offline.fargate.interrupt_spot(terminal.session.task_arn)
    # Then the session ends STOPPED saying Spot, and every saved file is in S3
    assert offline.wait_execution(terminal.execution)["status"] == "SUCCEEDED"
    ended = offline.assert_invariants(terminal.session.session_id)
    assert (ended.status, ended.status_reason) == (
        Status.STOPPED,
        "Fargate Spot reclaimed the capacity (SpotInterruption); the workspace was flushed",
    )
    assert ended.stop_code == "SpotInterruption"


def test_s3_unavailable_during_the_final_flush_for_less_than_the_deadline(
    offline: Offline, terminal: Terminal
) -> None:
    # Given a READY session, and S3 down while the user saves the last files
    _save(terminal.root, range(10))
    outage = FAULTS.inject("s3", code="SlowDown", status=503, times=None)
    _save(terminal.root, range(10, 30))
    # When the user stops the session (SIGTERM: the final flush starts while S3 is still down)
    offline.lifecycle.request_stop(terminal.session.session_id, "user")
    hits_during_flush = eventually(lambda: outage.hits, 30)
    FAULTS.remove(outage)  # S3 comes back, well within the flush deadline
    # Then the flush retries until S3 answers, the session stops normally and nothing is lost
    timeout = FLUSH_DEADLINE_SECONDS + 10
    assert offline.wait_execution(terminal.execution, timeout=timeout)["status"] == "SUCCEEDED"
    assert hits_during_flush > 0, "the flush met the outage"
    ended = offline.assert_invariants(terminal.session.session_id)
    assert (ended.status, ended.status_reason, ended.exit_code) == (Status.STOPPED, "stopped by user", 0)
