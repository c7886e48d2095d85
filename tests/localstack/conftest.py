"""The real template on the offline AWS in server mode (the sandboxes reach its S3 over HTTP), and a
local task runner on its cluster. Tasks are started with the RunTask call the control plane makes."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sessions.ecs_tasks import TASK_GROUP

from cloudide.localstack.runner import LocalTaskRunner
from cloudide.offline.stack import OfflineAws
from tests.support import eventually

ROOT = Path(__file__).resolve().parents[2]
# Fast timers for the sync agent: tests wait on pushes and pulls.
FAST_SYNC = {"SYNC_POLL_SECONDS": "0.3", "SYNC_DEBOUNCE_SECONDS": "0.05", "SYNC_MAX_DELAY_SECONDS": "0.2"}
# These tasks have no session record for the credentials function to vend against: the agent syncs on the
# task role's own session, which DIRECT_SYNC lets reach the workspaces (the bridge enforces IAM, and the
# template's task role has no S3). Vending through the local stack is proven end to end in tests/e2e.
WITHOUT_VENDING = {"WORKSPACE_ACCESS_FUNCTION": ""}
DIRECT_SYNC = "tests-direct-workspace-sync"


def allow_direct_sync(iam: Any, task_role: str, bucket: str) -> None:
    """Let tasks started by hand (no session record to vend against) sync every workspace on the task
    role's own credentials: a test-only grant, since the template's task role has no S3."""
    iam.put_role_policy(
        RoleName=task_role,
        PolicyName=DIRECT_SYNC,
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                                           "s3:AbortMultipartUpload"],
             "Resource": f"arn:aws:s3:::{bucket}/workspaces/*"},
            {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{bucket}",
             "Condition": {"StringLike": {"s3:prefix": ["workspaces/*"]}}},
        ]}),
    )  # fmt: skip


@contextmanager
def direct_sync_stack(stack_name: str = "cloudide") -> Iterator[OfflineAws]:
    """The template deployed into a moto server, its task role allowed DIRECT_SYNC to the workspaces."""
    with OfflineAws(
        ROOT / "template.yaml",
        parameters={"TerminalImageUri": "local/terminal:dev"},
        server=True,
        stack_name=stack_name,
    ) as aws:
        assert aws.stack is not None
        allow_direct_sync(
            aws.client("iam"), aws.stack.physical_id("TaskRole"), aws.stack.outputs["WorkspaceBucketName"]
        )
        yield aws


@pytest.fixture(scope="module")
def offline_server() -> Iterator[OfflineAws]:
    with direct_sync_stack() as aws:
        yield aws


@dataclass
class Cluster:
    """The deployed cluster and the events its tasks emitted (read back from the runner's reports)."""

    aws: OfflineAws
    runner: LocalTaskRunner
    name: str
    bucket: str
    events: list[dict[str, Any]]

    @property
    def ecs(self) -> Any:
        return self.aws.client("ecs")

    @property
    def s3(self) -> Any:
        return self.aws.client("s3")

    def run_task(
        self, session_id: str, *, cpu: int = 256, memory: int = 512, prefix: str | None = None
    ) -> str:
        """RunTask as `sessions.ecs_tasks.EcsTasks.run` sends it (overrides, group, startedBy, tags)."""
        stack = self.aws.stack
        assert stack is not None
        response = self.ecs.run_task(
            cluster=self.name,
            taskDefinition=stack.outputs["TerminalTaskDefinitionArn"],
            count=1,
            enableExecuteCommand=True,
            capacityProviderStrategy=[{"capacityProvider": "FARGATE", "weight": 1}],
            networkConfiguration={
                "awsvpcConfiguration": {
                    "subnets": [stack.physical_id("PrivateSubnetA")],
                    "securityGroups": [stack.physical_id("TaskSecurityGroup")],
                    "assignPublicIp": "DISABLED",
                }
            },
            overrides={
                "cpu": str(cpu),
                "memory": str(memory),
                "containerOverrides": [
                    {
                        "name": "terminal",
                        "environment": [
                            {"name": "SESSION_ID", "value": session_id},
                            {"name": "WORKSPACE_PREFIX", "value": prefix or f"workspaces/u/{session_id}/"},
                        ],
                    }
                ],
            },
            startedBy=session_id,
            group=TASK_GROUP,
        )
        assert not response["failures"], response["failures"]
        return str(response["tasks"][0]["taskArn"])

    def describe(self, task_arn: str) -> dict[str, Any]:
        return dict(self.ecs.describe_tasks(cluster=self.name, tasks=[task_arn])["tasks"][0])

    def task_events(self, task_arn: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["taskArn"] == task_arn]

    def statuses(self, task_arn: str) -> list[str]:
        return [e["lastStatus"] for e in self.task_events(task_arn)]

    def wait_status(self, task_arn: str, status: str, timeout: float = 30) -> dict[str, Any]:
        return dict(
            eventually(
                lambda: next((e for e in self.task_events(task_arn) if e["lastStatus"] == status), None),
                timeout,
            )
        )

    def wait_exec_ready(self, task_arn: str, timeout: float = 30) -> None:
        def ready() -> bool:
            agents = self.describe(task_arn)["containers"][0].get("managedAgents", [])
            return any(a["name"] == "ExecuteCommandAgent" and a["lastStatus"] == "RUNNING" for a in agents)

        eventually(ready, timeout)

    def workspace(self, task_arn: str) -> Path:
        return self.runner.tasks()[task_arn].workspace


def pid_namespace(pid: int | None) -> str:
    assert pid, "the task has no process"
    return os.readlink(f"/proc/{pid}/ns/pid")


def members(namespace: str) -> list[int]:
    """Host pids of the processes in a pid namespace (a sandbox's whole process tree)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.readlink(entry / "ns" / "pid") == namespace:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.fixture
def cluster(offline_server: OfflineAws, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    """A runner on the stack's cluster; every task-state event it reports is recorded in order."""
    stack = offline_server.stack
    assert stack is not None
    events: list[dict[str, Any]] = []
    put = offline_server.ecs.put_task_event

    def record(detail: dict[str, Any]) -> None:
        events.append(detail)
        put(detail)

    monkeypatch.setattr(offline_server.ecs, "put_task_event", record)
    runner = LocalTaskRunner(
        offline_server,
        stack.outputs["ClusterName"],
        state_dir=tmp_path / "tasks",
        time_scale=0.05,
        extra_env=FAST_SYNC | WITHOUT_VENDING,
    )
    runner.start()
    try:
        yield Cluster(
            offline_server, runner, stack.outputs["ClusterName"], stack.outputs["WorkspaceBucketName"], events
        )
    finally:
        runner.close(timeout=30)
