"""Operator commands on a deployment: `sessions`, `describe`, `tasks`, `logs`, `files`, `stop`.

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
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cloudide.deployment import add_target_arguments, target_from

if TYPE_CHECKING:
    from cloudide.operations import Operations


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

    files = subparsers.add_parser(
        "files", help="a session's workspace as stored in S3 (what its next start pulls)"
    )
    files.add_argument("session_id", metavar="SESSION")
    _common(files, _list_files)

    stop = subparsers.add_parser("stop", help="stop a session (as its user's DELETE would)")
    stop.add_argument("session_id", metavar="SESSION")
    stop.add_argument("--force", action="store_true", help="also StopTask now, for a stuck workflow")
    _common(stop, _stop)


def _common(
    parser: argparse.ArgumentParser, command: Callable[[Operations, argparse.Namespace], int]
) -> None:
    add_target_arguments(parser)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=lambda args: command(_operations(args), args))


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


def _list_files(ops: Operations, args: argparse.Namespace) -> int:
    stored = ops.files(ops.session(args.session_id))
    if args.json:
        return _dump([{"path": f.path, "size": f.size, "modified": f.modified} for f in stored])
    _table(("PATH", "SIZE", "MODIFIED"), [(f.path, f.size, f.modified) for f in stored])
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


def _operations(args: argparse.Namespace) -> Operations:
    from cloudide.operations import Operations  # only now: see cloudide.operations

    return Operations(target_from(args))
