"""The reliability invariants, checked from the outside: raw ECS and DynamoDB reads, no product code.

- no running task without a live session record that names it;
- no live session record without a running task (a session still waiting for its first task excepted);
- every ended record says why, and no workflow callback is left parked on it;
- a session stopped for idleness began stopping at most a minute after its idle deadline;
- every file the user saved is in S3 (for the tests that run the sync agent).

An independent oracle on purpose: it shares nothing with the code it judges (not even the record
model), so a bug there cannot hide itself here. The checks are eventual: ECS and the event path settle
within moments, so `wait_for` polls until they hold or the timeout passes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from cloudide.offline.waiting import eventually

ENDED = ("STOPPED", "FAILED")
TASK_GROUP = "cloudide-terminals"
IDLE_STOP_LATE_SECONDS = 60


def session_violations(ecs: Any, cluster: str, table: Any, session_ids: Iterable[str]) -> list[str]:
    """What is wrong with these sessions and with every task of this product in the cluster."""
    running: dict[str, dict[str, Any]] = {}
    for page in ecs.get_paginator("list_tasks").paginate(cluster=cluster):
        arns = page.get("taskArns", [])
        for start in range(0, len(arns), 100):
            for task in ecs.describe_tasks(cluster=cluster, tasks=arns[start : start + 100])["tasks"]:
                if task.get("group") == TASK_GROUP and task["lastStatus"] != "STOPPED":
                    running[task["taskArn"]] = task
    problems: list[str] = []
    for arn, task in running.items():
        session_id = task.get("startedBy", "")
        item = (
            table.get_item(Key={"sessionId": session_id}, ConsistentRead=True).get("Item")
            if session_id
            else None
        )
        if item is None or item["status"] in ENDED or item.get("taskArn") != arn:
            state = "no record" if item is None else f"record {item['status']} naming {item.get('taskArn')}"
            problems.append(f"task {arn} is {task['lastStatus']} without a live record ({state})")
    for session_id in session_ids:
        item = table.get_item(Key={"sessionId": session_id}, ConsistentRead=True).get("Item")
        if item is None:
            problems.append(f"session {session_id} has no record")
        elif item["status"] in ENDED:
            if not item.get("statusReason"):
                problems.append(f"session {session_id} ended {item['status']} without a reason")
            if item.get("waitToken"):
                problems.append(f"session {session_id} ended with a workflow callback still parked")
            problems += _late_idle_stop(session_id, item)
        elif item["status"] != "PROVISIONING" and item.get("taskArn") not in running:
            problems.append(
                f"session {session_id} is {item['status']} but its task {item.get('taskArn')} is not running"
            )
    return problems


def _late_idle_stop(session_id: str, item: dict[str, Any]) -> list[str]:
    """Paying only while used: a session stopped for idleness began stopping within IDLE_STOP_LATE_SECONDS
    of its idle deadline (which only use moves: sessions/usage.py)."""
    if not str(item.get("statusReason", "")).startswith("idle for") or "stoppingAt" not in item:
        return []
    late = (_time(item["stoppingAt"]) - _time(item["idleDeadline"])).total_seconds()
    if late <= IDLE_STOP_LATE_SECONDS:
        return []
    return [
        f"session {session_id} began stopping {late:.0f} s after its idle deadline {item['idleDeadline']}"
    ]


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def missing_files(s3: Any, bucket: str, prefix: str, saved: dict[str, bytes]) -> list[str]:
    """Saved files (relative path -> content) that are not in S3 under `prefix` with that content."""
    problems = []
    for rel, body in sorted(saved.items()):
        try:
            stored = s3.get_object(Bucket=bucket, Key=f"{prefix.rstrip('/')}/{rel}")["Body"].read()
        except s3.exceptions.NoSuchKey:
            problems.append(f"{rel} is not in S3")
            continue
        if hashlib.sha256(stored).digest() != hashlib.sha256(body).digest():
            problems.append(f"{rel} differs in S3")
    return problems


def saved_files(root: Path) -> dict[str, bytes]:
    """The user's files under a workspace (the sync agent's own state excluded)."""
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in root.rglob("*")
        if path.is_file() and not path.is_symlink() and ".cloudide-sync" not in path.parts
    }


def wait_for(check: Callable[[], list[str]], timeout: float = 15.0) -> list[str]:
    """Poll `check` until it reports nothing or `timeout` passes; return its last report."""
    try:
        eventually(lambda: not check(), timeout, interval=0.1)
    except AssertionError:
        return check()
    return []
