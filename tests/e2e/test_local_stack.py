"""The whole system on one machine, end to end over the REST API and `cloudide attach`.

One `cloudide local` serves every test of this module (starting it costs seconds), with the control
plane's time compressed 20x so a 1-minute idle timeout passes in 3 s. Each test ends with the same
check: every task the stack started for it is gone, and its record says why.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import re
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pexpect
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.e2e.local_stack import CLOUDIDE, ApiError, RunningStack, local_stack, processes_mentioning
from tests.e2e.scenarios import Shell, first_terminal, ready_session
from tests.localstack.conftest import allow_direct_sync
from tests.support import eventually, require_tool
from tests.transport.browser import Browser, require_xterm, run, run_in_terminal, wait_for_line


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    require_tool("bwrap", "the local stack's task sandbox")
    require_tool("tmux", "the terminal's persistent shell")
    # Shortened timeouts: a 1-minute idle timeout allowed (3 s at the time scale); the reconciler runs
    # every 2 minutes (6 s) and leaves alone what is younger than 20 s (its grace is real time).
    with local_stack(
        tmp_path_factory.mktemp("local-stack"),
        *("--parameter", "IdleTimeoutMinMinutes=1"),
        *("--parameter", "ReconcilerPeriodMinutes=2", "--parameter", "ReconcilerGraceSeconds=20"),
    ) as running:
        yield running
    assert running.process.returncode == 0, running.output
    assert running.sandbox_processes() == [], "cloudide local left task processes behind"


def assert_task_gone(stack: RunningStack, session: dict[str, Any]) -> None:
    task_arn = session["taskArn"]
    assert task_arn not in stack.running_tasks()
    assert processes_mentioning(task_arn.rsplit("/", 1)[-1]) == [], f"processes of {task_arn} are left"


def test_start_connect_work_stop_keeps_the_files(stack: RunningStack) -> None:
    ended = first_terminal(stack, project="start-to-stop")

    assert_task_gone(stack, ended)


def one_session(stack: RunningStack, project: str, command: str, label: str, expected: str) -> dict[str, Any]:
    """Start a session of `project`, check one command in its terminal, stop it; the ended record."""
    session = ready_session(stack, projectId=project)
    shell = Shell(stack, session["sessionId"])
    try:
        shell.check(command, label, expected)
    finally:
        shell.close()
    stack.call("DELETE", f"/sessions/{session['sessionId']}")
    return stack.wait_status(session["sessionId"], "STOPPED")


def test_the_next_session_of_the_project_finds_the_files(stack: RunningStack) -> None:
    one_session(stack, "carry-over", "echo kept > kept.txt && cat kept.txt", "wrote", "kept")

    ended = one_session(stack, "carry-over", "cat kept.txt", "found", "kept")

    assert_task_gone(stack, ended)


def test_an_idle_session_stops_by_itself(stack: RunningStack) -> None:
    session = ready_session(stack, idleTimeoutMinutes=1)  # 3 s at the stack's time scale

    ended = stack.wait_status(session["sessionId"], "STOPPED", timeout_s=60)

    assert "idle" in ended["statusReason"]
    assert_task_gone(stack, ended)


def test_terminals_left_open_without_typing_stop_at_the_idle_timeout_and_say_why(stack: RunningStack) -> None:
    session = ready_session(stack, idleTimeoutMinutes=1)  # 3 s at the stack's time scale
    session_id = session["sessionId"]
    terminal = f"{stack.gateway.replace('http', 'ws', 1)}/sessions/{session_id}/terminal"

    # Given the session open in `cloudide attach` and in the page, and nobody typing: being connected
    # is not use
    shell = Shell(stack, session_id)
    try:
        with connect(terminal) as browser:
            browser.send(json.dumps({"type": "auth", "token": stack.token("me"), "rows": 24, "cols": 80}))
            controls = []
            with contextlib.suppress(ConnectionClosed):
                while True:
                    message = browser.recv(timeout=60)
                    if isinstance(message, str):
                        controls.append(json.loads(message))
            ended = stack.wait_status(session_id, "STOPPED")

            # Then the session stopped for idleness, and the page was told why
            assert "idle" in ended["statusReason"], ended
            fate = [c for c in controls if c["type"] == "ended"]
            assert fate and fate[-1]["reason"] == ended["statusReason"], controls
        # And so was the user of `cloudide attach`
        shell.child.expect(rf"Session {session_id} is STOPP\w+: {re.escape(ended['statusReason'])}")
        shell.child.expect(pexpect.EOF)
    finally:
        shell.close()
    assert_task_gone(stack, ended)


def test_a_killed_task_ends_the_session_with_the_reason(stack: RunningStack) -> None:
    session = ready_session(stack)
    task_id = session["taskArn"].rsplit("/", 1)[-1]
    for pid in processes_mentioning(task_id):
        os.kill(pid, signal.SIGKILL)

    ended = stack.wait_status(session["sessionId"], "FAILED", "STOPPED")

    assert "137" in ended["statusReason"] or ended.get("exitCode") == 137, ended
    assert_task_gone(stack, ended)


def test_allocating_past_the_memory_limit_ends_the_session_as_oom(stack: RunningStack) -> None:
    session = ready_session(stack)  # the small tier: 512 MB
    shell = Shell(stack, session["sessionId"])
    try:
        shell.type("tail /dev/zero")  # keeps one ever-growing line in memory
        ended = stack.wait_status(session["sessionId"], "FAILED", "STOPPED", timeout_s=60)
    finally:
        shell.close()

    assert "out of memory" in ended["statusReason"], ended
    assert_task_gone(stack, ended)


def test_twenty_concurrent_sessions_all_reach_ready_and_stop(stack: RunningStack) -> None:
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        started = list(pool.map(lambda n: stack.start_session(user=f"crowd-{n}"), range(20)))
        ready = list(
            pool.map(
                lambda s: stack.wait_status(s["sessionId"], "READY", user=s["ownerId"], timeout_s=120),
                started,
            )
        )
        assert [s["status"] for s in ready] == ["READY"] * 20
        for session in ready:
            stack.call("DELETE", f"/sessions/{session['sessionId']}", user=session["ownerId"])
        ended = list(
            pool.map(
                lambda s: stack.wait_status(s["sessionId"], "STOPPED", user=s["ownerId"], timeout_s=120),
                ready,
            )
        )

    for session in ended:
        assert_task_gone(stack, session)


def test_other_users_cannot_see_or_stop_my_session(stack: RunningStack) -> None:
    session = ready_session(stack)
    for method, path in (("GET", ""), ("DELETE", ""), ("POST", "/connect")):
        with pytest.raises(ApiError) as refused:
            stack.call(
                method,
                f"/sessions/{session['sessionId']}{path}",
                {} if method == "POST" else None,
                user="eve",
            )
        assert refused.value.status == 404
    stack.call("DELETE", f"/sessions/{session['sessionId']}")
    assert_task_gone(stack, stack.wait_status(session["sessionId"], "STOPPED"))


def test_the_stack_refuses_requests_without_a_local_token(stack: RunningStack) -> None:
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(stack.api + "/sessions", timeout=10)
    assert refused.value.code == 401


@pytest.mark.browser
def test_in_chromium_start_type_stop_from_the_page(stack: RunningStack) -> None:
    chromium = require_tool("chromium", "the page is tested in a headless browser")
    require_xterm()
    before = {s["sessionId"] for s in stack.call("GET", "/sessions")["sessions"]}

    async def scenario() -> str:
        async with Browser(chromium) as browser:
            # Given the page the local stack prints, with my local token
            page = await browser.new_page(f"{stack.gateway}/#token=local:me")
            await page.wait_for("!document.getElementById('sessions').hidden")
            # When I start a session and it shows its progress up to READY
            await page.evaluate(
                "document.querySelector('#start input[name=project]').value = 'from-the-page'"
            )
            await page.evaluate("document.querySelector('#start button').click()")
            session_id = await page.wait_for(
                "document.getElementById('message').textContent.split('started ')[1]"
            )
            row = f"document.querySelector('#session-rows tr[data-session-id=\"{session_id}\"]')"
            settled = f"{row} && ['READY', 'FAILED', 'STOPPED'].includes({row}.dataset.status)"
            await page.wait_for(f"!!({settled})", timeout_s=90)
            status = await page.evaluate(
                f"{row}.dataset.status + ': ' + {row}.querySelector('.reason').textContent"
            )
            assert status.startswith("READY"), status
            # And I open its terminal and type
            await page.evaluate(f"{row}.querySelector('button.open').click()")
            await page.wait_for("window.gateway && gateway.state === 'open'", timeout_s=30)
            await run_in_terminal(page, "echo hello > note.txt && cat note.txt")
            await wait_for_line(page, "hello")
            # Then stopping it from the list ends it
            # ("sessions" is a link that reloads the page: wait for the new document, not the one left)
            await page.evaluate("window.leaving = true; document.getElementById('back').click()")
            stop_button = f"!window.leaving && {row} && {row}.querySelector('button.stop')"
            await page.wait_for(f"!!({stop_button})", timeout_s=30)
            await page.evaluate(f"({stop_button}).click()")
            await page.wait_for(f"{row} && {row}.dataset.status === 'STOPPED'", timeout_s=60)
            return str(session_id)

    session_id = run(scenario(), timeout_s=150)

    assert session_id not in before
    ended = stack.session(session_id)
    assert stack.workspace_object(ended, "note.txt") == b"hello\n"
    assert_task_gone(stack, ended)


def test_the_reconciler_stops_a_task_no_session_owns(stack: RunningStack) -> None:
    # Given a terminal task started behind the control plane's back (a leak: no session record)
    workflow = stack.client("lambda").get_function_configuration(
        FunctionName=stack.physical_id("WorkflowFunction")
    )
    variables = workflow["Environment"]["Variables"]
    definition = stack.output_value("TerminalTaskDefinitionArn")
    task_role = stack.client("ecs").describe_task_definition(taskDefinition=definition)["taskDefinition"]
    allow_direct_sync(  # no session to vend credentials against: it syncs on its task role
        stack.client("iam"),
        task_role["taskRoleArn"].rsplit("/", 1)[-1],
        stack.output_value("WorkspaceBucketName"),
    )
    leaked = stack.client("ecs").run_task(
        cluster=stack.output_value("ClusterName"),
        taskDefinition=definition,
        group="cloudide-terminals",
        startedBy="no-such-session",
        launchType="FARGATE",
        # started by hand, so no session to vend credentials against: it syncs on its task role
        overrides={
            "containerOverrides": [
                {
                    "name": "terminal",
                    "environment": [
                        {"name": "WORKSPACE_ACCESS_FUNCTION", "value": ""},
                        {"name": "SESSION_ID", "value": "no-such-session"},
                        {"name": "WORKSPACE_PREFIX", "value": "workspaces/nobody/leak/"},
                    ],
                }
            ]
        },
        enableExecuteCommand=True,
        networkConfiguration={
            "awsvpcConfiguration": {
                "subnets": variables["SUBNETS"].split(","),
                "securityGroups": variables["SECURITY_GROUPS"].split(","),
            }
        },
    )["tasks"][0]["taskArn"]

    # Then the scheduled reconciler stops it once its grace (20 s) has passed, within a period (6 s)
    ecs, cluster = stack.client("ecs"), stack.output_value("ClusterName")
    eventually(
        lambda: ecs.describe_tasks(cluster=cluster, tasks=[leaked])["tasks"][0]["lastStatus"] == "RUNNING"
    )
    eventually(lambda: leaked not in stack.running_tasks(), timeout=60, interval=0.5)
    stopped = ecs.describe_tasks(cluster=cluster, tasks=[leaked])["tasks"][0]
    assert stopped["stopCode"] == "UserInitiated" and "reconciler" in stopped["stoppedReason"], stopped
    eventually(lambda: processes_mentioning(leaked.rsplit("/", 1)[-1]) == [], timeout=30, interval=0.5)


def test_operators_read_a_sessions_logs_and_stop_it_from_the_command_line(stack: RunningStack) -> None:
    session = ready_session(stack, projectId="operated")
    target = [
        "--stack",
        stack.stack_name,
        "--endpoint-url",
        stack.endpoints["endpointUrl"],
        "--region",
        "us-east-1",
    ]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}

    def cloudide(*args: str) -> str:
        done = subprocess.run(
            [str(CLOUDIDE), *args, *target], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    # The container's output reaches CloudWatch Logs as the awslogs driver ships it
    eventually(lambda: session["sessionId"] in cloudide("logs", session["sessionId"]), timeout=30, interval=1)
    assert session["taskArn"].rsplit("/", 1)[-1] in cloudide("tasks")

    cloudide("stop", session["sessionId"])

    ended = stack.wait_status(session["sessionId"], "STOPPED")
    assert ended["statusReason"] == "stopped by operator"
    assert_task_gone(stack, ended)
