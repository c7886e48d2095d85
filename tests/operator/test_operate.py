"""The operator commands against the real template deployed into moto (as a server, as `cloudide local`
runs it): a seeded session with its running task and log, found through the stack's outputs."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sessions import clock
from sessions.record import Session, Status, WaitingFor
from sessions.store import SessionStore

from cloudide.catalog import REPO_ROOT
from cloudide.cli import main
from cloudide.deployment import Target
from cloudide.offline.stack import OfflineAws
from cloudide.operations import Operations

STACK = "cloudide-ops"
REGION = "us-east-1"


@dataclass
class Seeded:
    aws: OfflineAws
    store: SessionStore
    cluster_arn: str
    live: Session
    ended: Session

    @property
    def flags(self) -> list[str]:
        return ["--stack", STACK, "--region", REGION, "--endpoint-url", str(self.aws.endpoint_url)]


def record(owner: str, status: Status, **fields: Any) -> Session:
    moment = clock.now()
    return Session.from_item({
        "sessionId": str(uuid.uuid4()), "ownerId": owner, "projectId": "demo", "image": "python", "tier": "medium",
        "status": status.value, "statusReason": "seeded", "createdAt": clock.rfc3339(moment),
        "lastActivityAt": clock.rfc3339(moment), "idleTimeoutSeconds": 1800, "maxLifetimeSeconds": 3600,
        "idleDeadline": clock.later(moment, 1800), "lifetimeDeadline": clock.later(moment, 3600), **fields,
    })  # fmt: skip


@pytest.fixture(scope="module")
def seeded() -> Iterator[Seeded]:
    parameters = {"TerminalImageUri": "local/terminal:dev", "PythonImageUri": "local/python:dev"}
    with OfflineAws(REPO_ROOT / "template.yaml", parameters=parameters, stack_name=STACK, server=True) as aws:
        assert aws.stack is not None
        outputs = aws.stack.outputs
        table = (
            aws.session()
            .resource("dynamodb", endpoint_url=aws.endpoint_url)
            .Table(outputs["SessionsTableName"])
        )
        store = SessionStore(outputs["SessionsTableName"], table=table)
        ecs = aws.client("ecs")
        live = record("alice", Status.READY)
        task_arn = ecs.run_task(
            cluster=outputs["ClusterName"],
            taskDefinition=json.loads(_function_env(aws, "IMAGES"))["python"],
            launchType="FARGATE",
            enableExecuteCommand=True,
            networkConfiguration={
                "awsvpcConfiguration": {"subnets": [aws.stack.physical_id("PrivateSubnetA")]}
            },
            overrides={"cpu": "512", "memory": "1024"},
            startedBy=live.session_id,
            tags=[{"key": "session-id", "value": live.session_id}, {"key": "owner-id", "value": "alice"}],
        )["tasks"][0]["taskArn"]
        cluster_arn = ecs.describe_clusters(clusters=[outputs["ClusterName"]])["clusters"][0]["clusterArn"]
        aws.ecs.set_task_status(cluster_arn, task_arn, "RUNNING", agent_status="RUNNING")
        live = store.create(live.model_copy(update={"task_arn": task_arn}))
        ended = store.create(record("bob", Status.READY))
        ended = store.transition(ended.session_id, Status.STOPPED, reason="stopped by user")
        logs = aws.client("logs")
        stream = f"terminal/terminal/{task_arn.rsplit('/', 1)[-1]}"
        logs.create_log_stream(logGroupName=outputs["TerminalLogGroupName"], logStreamName=stream)
        now_ms = int(clock.now().timestamp() * 1000)
        logs.put_log_events(
            logGroupName=outputs["TerminalLogGroupName"],
            logStreamName=stream,
            logEvents=[{"timestamp": now_ms + i, "message": f"sync line {i}"} for i in range(3)],
        )
        yield Seeded(aws, store, cluster_arn, live, ended)


def _function_env(aws: OfflineAws, name: str) -> str:
    assert aws.stack is not None
    function = aws.client("lambda").get_function(FunctionName=aws.stack.physical_id("ApiFunction"))
    return str(function["Configuration"]["Environment"]["Variables"][name])


def cli(capsys: pytest.CaptureFixture[str], *arguments: str) -> tuple[int, str, str]:
    code = main(list(arguments))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_sessions_lists_live_ones_and_all_with_the_flag(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(capsys, "sessions", *seeded.flags)
    assert code == 0
    assert seeded.live.session_id in out and "READY" in out and "alice" in out
    assert seeded.ended.session_id not in out

    code, out, _ = cli(capsys, "sessions", "--all", "--json", *seeded.flags)
    listed = {s["sessionId"]: s["status"] for s in json.loads(out)}
    assert listed == {seeded.live.session_id: "READY", seeded.ended.session_id: "STOPPED"}

    code, out, _ = cli(capsys, "sessions", "--all", "--owner", "bob", *seeded.flags)
    assert seeded.ended.session_id in out and seeded.live.session_id not in out


def test_describe_joins_the_record_and_its_task(seeded: Seeded, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "describe", seeded.live.session_id, *seeded.flags)

    described = json.loads(out)
    assert code == 0
    assert (described["sessionId"], described["image"], described["tier"]) == (
        seeded.live.session_id,
        "python",
        "medium",
    )
    task = described["task"]
    assert (task["lastStatus"], task["execAgent"], task["cpu"], task["memory"]) == (
        "RUNNING",
        "RUNNING",
        "512",
        "1024",
    )
    assert (task["sessionId"], task["ownerId"]) == (seeded.live.session_id, "alice")


def test_tasks_shows_each_running_task_with_its_session(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(capsys, "tasks", *seeded.flags)

    assert code == 0
    (row,) = [line for line in out.splitlines() if seeded.live.session_id in line]
    assert seeded.live.task_arn is not None and seeded.live.task_arn.rsplit("/", 1)[-1] in row
    assert "RUNNING" in row and "512/1024" in row and "alice" in row


def test_logs_prints_the_task_log_in_order(seeded: Seeded, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "logs", seeded.live.session_id, *seeded.flags)

    assert code == 0
    assert [line.split(" ", 1)[1] for line in out.splitlines()] == [
        "sync line 0",
        "sync line 1",
        "sync line 2",
    ]


def test_logs_follow_prints_new_lines_until_the_session_ends(seeded: Seeded) -> None:
    ops = Operations(Target(seeded.aws.session(), STACK, seeded.aws.endpoint_url))
    session = seeded.store.create(record("dave", Status.READY, taskArn=seeded.live.task_arn))
    assert seeded.aws.stack is not None
    group = seeded.aws.stack.outputs["TerminalLogGroupName"]
    stream = f"terminal/terminal/{str(session.task_arn).rsplit('/', 1)[-1]}"
    logs = seeded.aws.client("logs")
    naps: list[float] = []

    def nap(seconds: float) -> None:  # while the command waits: one more line, then the session ends
        naps.append(seconds)
        if len(naps) == 1:
            stamp = int(clock.now().timestamp() * 1000) + 10
            logs.put_log_events(
                logGroupName=group,
                logStreamName=stream,
                logEvents=[{"timestamp": stamp, "message": "late line"}],
            )
        else:
            seeded.store.transition(session.session_id, Status.STOPPED, reason="stopped by user")

    lines = [line.split(" ", 1)[1] for line in ops.log_lines(session, follow=True, sleep=nap)]

    assert lines == ["sync line 0", "sync line 1", "sync line 2", "late line"]
    assert len(naps) == 2


def test_files_lists_the_sessions_workspace_and_nothing_of_other_projects(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    assert seeded.aws.stack is not None
    bucket = seeded.aws.stack.outputs["WorkspaceBucketName"]
    s3 = seeded.aws.client("s3")
    s3.put_object(Bucket=bucket, Key="workspaces/alice/demo/src/main.py", Body=b"print('hi')\n")
    s3.put_object(Bucket=bucket, Key="workspaces/alice/demo/empty/", Body=b"")
    s3.put_object(Bucket=bucket, Key="workspaces/alice/other/secret.txt", Body=b"not this project")
    s3.put_object(Bucket=bucket, Key="workspaces/bob/demo/notes.txt", Body=b"not this user")

    code, out, _ = cli(capsys, "files", seeded.live.session_id, "--json", *seeded.flags)

    assert code == 0
    assert [(f["path"], f["size"]) for f in json.loads(out)] == [("empty/", 0), ("src/main.py", 12)]
    code, out, _ = cli(capsys, "files", seeded.live.session_id, *seeded.flags)
    assert code == 0 and out.splitlines()[0].split() == ["PATH", "SIZE", "MODIFIED"]
    assert "src/main.py" in out and "secret.txt" not in out and "notes.txt" not in out


def test_stop_requests_the_stop_as_the_api_would_and_force_stops_the_task(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    session = seeded.store.create(record("carol", Status.READY, taskArn=seeded.live.task_arn))
    seeded.store.park_token(session.session_id, "watch-token", WaitingFor.STOP)

    code, out, _ = cli(capsys, "stop", session.session_id, "--force", *seeded.flags)

    assert code == 0 and "stop requested" in out
    stopped = seeded.store.require(session.session_id)
    assert stopped.stop_requested_by == "operator" and stopped.stop_requested_at
    task = seeded.aws.client("ecs").describe_tasks(cluster=seeded.cluster_arn, tasks=[str(session.task_arn)])[
        "tasks"
    ][0]
    assert task["desiredStatus"] == "STOPPED"
    code, out, _ = cli(capsys, "stop", seeded.ended.session_id, *seeded.flags)
    assert code == 0 and "already ended" in out


def test_local_reads_the_local_stacks_state_file(
    seeded: Seeded, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(capsys, "sessions", "--local")
    assert code == 2 and "no local stack found" in err and "cloudide local" in err

    state = {"stackName": STACK, "endpointUrl": seeded.aws.endpoint_url, "region": REGION}
    (tmp_path / ".local-state").mkdir()
    (tmp_path / ".local-state" / "stack.json").write_text(json.dumps(state))
    code, out, _ = cli(capsys, "sessions", "--local")
    assert code == 0 and seeded.live.session_id in out


def test_a_missing_stack_or_session_is_one_clear_message(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = ["--region", REGION, "--endpoint-url", str(seeded.aws.endpoint_url)]
    code, _, err = cli(capsys, "tasks", "--stack", "no-such-stack", *flags)
    assert code == 2 and "stack 'no-such-stack' not found" in err and "Traceback" not in err

    code, _, err = cli(capsys, "describe", str(uuid.uuid4()), *seeded.flags)
    assert code == 2 and "no session" in err
