"""Operator commands on a deployment: `sessions`, `describe`, `tasks`, `logs`, `stop`.

They find everything through the stack's outputs (table, cluster, log groups), so they work the same
against a real deployment (`--stack --profile --region`) and the local stack (`--local`, or
`--endpoint-url`). `stop` goes the way `DELETE /sessions/{id}` goes (record the request, let the
workflow stop the task and flush the workspace); `--force` also calls StopTask for a session whose
workflow is stuck.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from sessions.callbacks import WorkflowCallbacks
from sessions.config import Settings
from sessions.ecs_tasks import EcsTasks
from sessions.lifecycle import Lifecycle
from sessions.record import Session
from sessions.store import RecordNotFound, SessionStore

from cloudide.deployment import OperatorError, Target, add_target_arguments, target_from

CONTAINER = "terminal"
LOG_STREAM_PREFIX = "terminal"  # the task definition's awslogs-stream-prefix
FOLLOW_POLL_SECONDS = 2.0
_DESCRIBE_BATCH = 100  # DescribeTasks takes at most 100 tasks


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


# The command line ---------------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sessions = subparsers.add_parser("sessions", help="list sessions (live ones of every user by default)")
    sessions.add_argument("--owner", help="only this user's sessions (their Cognito sub)")
    sessions.add_argument("--all", action="store_true", help="ended sessions too")
    _common(sessions, _list_sessions)

    describe = subparsers.add_parser("describe", help="one session: its record, task and workflow")
    describe.add_argument("session_id", metavar="SESSION")
    _common(describe, _describe)

    tasks = subparsers.add_parser("tasks", help="the cluster's terminal tasks, with their sessions")
    tasks.add_argument(
        "--stopped", action="store_true", help="recently stopped tasks instead of running ones"
    )
    _common(tasks, _list_tasks)

    logs = subparsers.add_parser("logs", help="a session's terminal container log")
    logs.add_argument("session_id", metavar="SESSION")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing until the session ends")
    _common(logs, _print_logs)

    stop = subparsers.add_parser("stop", help="stop a session (as its user's DELETE would)")
    stop.add_argument("session_id", metavar="SESSION")
    stop.add_argument("--force", action="store_true", help="also StopTask now, for a stuck workflow")
    _common(stop, _stop)


def _common(
    parser: argparse.ArgumentParser, command: Callable[[Operations, argparse.Namespace], int]
) -> None:
    add_target_arguments(parser)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=lambda args: command(Operations(target_from(args)), args))


def _list_sessions(ops: Operations, args: argparse.Namespace) -> int:
    sessions = ops.sessions(owner=args.owner, include_ended=args.all)
    if args.json:
        return _dump([s.public() for s in sessions])
    rows = [
        (s.session_id, s.owner_id, s.image, s.tier, s.status.value, s.created_at, _short(s.task_arn))
        for s in sessions
    ]
    _table(("SESSION", "OWNER", "IMAGE", "TIER", "STATUS", "CREATED", "TASK"), rows)
    return 0


def _describe(ops: Operations, args: argparse.Namespace) -> int:
    session = ops.session(args.session_id)
    task = ops.task(session.task_arn) if session.task_arn else None
    summary = session.public() | {"task": _task_summary(task) if task else None}
    return _dump(summary)


def _list_tasks(ops: Operations, args: argparse.Namespace) -> int:
    tasks = [_task_summary(task) for task in ops.tasks(stopped=args.stopped)]
    if args.json:
        return _dump(tasks)
    rows = [
        (_short(t["taskArn"]), t["lastStatus"], f"{t['cpu']}/{t['memory']}", t["sessionId"] or "-",
         t["ownerId"] or "-", t["startedAt"] or "-", t["execAgent"] or "-")
        for t in tasks
    ]  # fmt: skip
    _table(("TASK", "STATUS", "CPU/MEM", "SESSION", "OWNER", "STARTED", "EXEC AGENT"), rows)
    return 0


def _print_logs(ops: Operations, args: argparse.Namespace) -> int:
    try:
        for line in ops.log_lines(ops.session(args.session_id), follow=args.follow):
            print(line, flush=True)
    except KeyboardInterrupt:
        return 130
    return 0


def _stop(ops: Operations, args: argparse.Namespace) -> int:
    session = ops.stop(args.session_id, force=args.force)
    if args.json:
        return _dump(session.public())
    if session.status.is_live:
        print(
            f"stop requested for {session.session_id} ({session.status.value}); the workflow stops its task"
        )
    else:
        print(f"{session.session_id} has already ended: {session.status.value} ({session.status_reason})")
    return 0


def _task_summary(task: dict[str, Any]) -> dict[str, Any]:
    tags = {tag["key"]: tag["value"] for tag in task.get("tags", [])}
    agents = [a for c in task.get("containers", []) for a in c.get("managedAgents", [])]
    started = task.get("startedAt")
    return {
        "taskArn": task["taskArn"],
        "lastStatus": task.get("lastStatus"),
        "cpu": task.get("overrides", {}).get("cpu") or task.get("cpu"),
        "memory": task.get("overrides", {}).get("memory") or task.get("memory"),
        "sessionId": tags.get("session-id"),
        "ownerId": tags.get("owner-id"),
        "startedAt": started.isoformat() if isinstance(started, dt.datetime) else started,
        "execAgent": next(
            (a.get("lastStatus") for a in agents if a.get("name") == "ExecuteCommandAgent"), None
        ),
        "stopCode": task.get("stopCode"),
        "stoppedReason": task.get("stoppedReason"),
    }


def _short(arn: str | None) -> str:
    return arn.rsplit("/", 1)[-1] if arn else "-"


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    cells = [header, *[tuple(str(cell) for cell in row) for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    if not rows:
        print("(none)")


def _dump(document: Any) -> int:
    json.dump(document, sys.stdout, indent=2, default=str)
    print()
    return 0
