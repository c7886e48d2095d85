"""What the operator commands do, on a deployment found through its stack outputs (no printing here).

Kept apart from the command line (`cloudide.operate`) because it drives the control plane's own code
(`sessions`): importing that only when an operator command runs keeps the `cloudide` process free of the
Lambda package's module state, which `cloudide local` runs the deployed functions in.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sessions.callbacks import WorkflowCallbacks
from sessions.config import Settings
from sessions.ecs_tasks import EcsTasks, workspace_prefix
from sessions.lifecycle import Lifecycle
from sessions.record import Session
from sessions.store import RecordNotFound, SessionStore

from cloudide.deployment import OperatorError, Target

CONTAINER = "terminal"
LOG_STREAM_PREFIX = "terminal"  # the task definition's awslogs-stream-prefix
FOLLOW_POLL_SECONDS = 2.0
_DESCRIBE_BATCH = 100  # DescribeTasks takes at most 100 tasks


@dataclass(frozen=True)
class StoredFile:
    """One object of a workspace, by its path inside `/workspace`."""

    path: str
    size: int
    modified: str


class Operations:
    """The deployment's session records, tasks and logs, by the names its stack outputs give."""

    def __init__(self, target: Target) -> None:
        self._target = target
        self.cluster = target.output("ClusterName")
        table_name = target.output("SessionsTableName")
        table = target.session.resource("dynamodb", endpoint_url=target.endpoint_url).Table(table_name)
        self._table_name = table_name
        self.store = SessionStore(table_name, table=table)
        self._ecs = target.client("ecs")
        self._logs = target.client("logs")
        self._s3 = target.client("s3")

    def sessions(self, *, owner: str | None = None, include_ended: bool = False) -> list[Session]:
        if owner:
            return self.store.list_by_owner(owner, live_only=not include_ended)
        return self.store.list_all(live_only=not include_ended)

    def session(self, session_id: str) -> Session:
        try:
            return self.store.require(session_id)
        except RecordNotFound:
            raise OperatorError(f"no session {session_id} in {self._target.stack_name}") from None

    def tasks(self, *, stopped: bool = False) -> list[dict[str, Any]]:
        arns: list[str] = []
        paginator = self._ecs.get_paginator("list_tasks")
        for page in paginator.paginate(
            cluster=self.cluster, desiredStatus="STOPPED" if stopped else "RUNNING"
        ):
            arns.extend(page.get("taskArns", []))
        tasks: list[dict[str, Any]] = []
        for start in range(0, len(arns), _DESCRIBE_BATCH):
            batch = arns[start : start + _DESCRIBE_BATCH]
            tasks.extend(
                self._ecs.describe_tasks(cluster=self.cluster, tasks=batch, include=["TAGS"])["tasks"]
            )
        return tasks

    def task(self, task_arn: str) -> dict[str, Any] | None:
        tasks = self._ecs.describe_tasks(cluster=self.cluster, tasks=[task_arn], include=["TAGS"])["tasks"]
        return tasks[0] if tasks else None

    def log_lines(
        self, session: Session, *, follow: bool, sleep: Callable[[float], None] = time.sleep
    ) -> Iterator[str]:
        """The terminal container's log, oldest first; with `follow`, until the session has ended."""
        if session.task_arn is None:
            raise OperatorError(f"session {session.session_id} has no task yet ({session.status.value})")
        group = self._target.output("TerminalLogGroupName")
        stream = f"{LOG_STREAM_PREFIX}/{CONTAINER}/{session.task_arn.rsplit('/', 1)[-1]}"
        request: dict[str, Any] = {"logGroupName": group, "logStreamName": stream, "startFromHead": True}
        while True:
            try:
                page = self._logs.get_log_events(**request)
            except self._logs.exceptions.ResourceNotFoundException:
                page = {"events": [], "nextForwardToken": request.get("nextToken")}
            for event in page["events"]:
                stamp = dt.datetime.fromtimestamp(event["timestamp"] / 1000, dt.UTC).strftime("%H:%M:%S")
                yield f"{stamp} {event['message'].rstrip()}"
            token = page.get("nextForwardToken")
            caught_up = not page["events"] or token == request.get("nextToken")
            if token:
                request["nextToken"] = token
            if caught_up:
                if not follow or not self.session(session.session_id).status.is_live:
                    return
                sleep(FOLLOW_POLL_SECONDS)

    def files(self, session: Session) -> list[StoredFile]:
        """The session's workspace as the bucket holds it: what the sync agent pushed, and so what the
        project's next session pulls (the workspace lives on after its task; see workspace_sync.layout)."""
        bucket = self._target.output("WorkspaceBucketName")
        prefix = workspace_prefix(session)
        stored: list[StoredFile] = []
        for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                modified = item["LastModified"]
                stored.append(
                    StoredFile(
                        path=item["Key"][len(prefix) :],
                        size=int(item["Size"]),
                        modified=modified.isoformat() if isinstance(modified, dt.datetime) else str(modified),
                    )
                )
        return stored

    def stop(self, session_id: str, *, force: bool = False) -> Session:
        """As `DELETE /sessions/{id}`: record the stop and answer the workflow; `force` also stops the task."""
        session = self.session(session_id)
        if not session.status.is_live:
            return session
        settings = Settings.model_validate({"SESSIONS_TABLE": self._table_name, "CLUSTER_ARN": self.cluster})
        tasks = EcsTasks(settings, client=self._ecs)
        lifecycle = Lifecycle(
            settings, self.store, tasks, WorkflowCallbacks(client=self._target.client("stepfunctions"))
        )
        session = lifecycle.request_stop(session_id, "operator")
        if force and session.task_arn:
            tasks.stop(session.task_arn, "stopped by an operator (cloudide stop --force)")
        return session
