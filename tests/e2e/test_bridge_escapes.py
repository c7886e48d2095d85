"""From inside a real terminal of `cloudide local`, a user tries to reach what a task on AWS cannot.

Alice ("me") attaches to her session and runs tests/e2e/escape_probe.py, which takes her sync agent's
credentials and endpoint as a user can (same uid), and tries another user's (bob's) workspace with her own
vended credentials, with the task role's, and with a forged key; DynamoDB, another Lambda function, ECS,
SNS and moto's own API. Every attempt must be refused as AWS refuses it, the target left as it was, and
her own workspace must still sync.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.local_stack import RunningStack, local_stack
from tests.e2e.scenarios import Shell, ready_session
from tests.support import eventually, require_tool

PROBE = Path(__file__).with_name("escape_probe.py")
REGION = "us-east-1"
SECRET = b"bob's secret\n"


@dataclass
class Scene:
    stack: RunningStack
    shell: Shell  # alice's terminal, in /workspace where the probe is
    alice: dict[str, Any]
    bob: dict[str, Any]
    bucket: str

    def key(self, session: dict[str, Any], name: str) -> str:
        return f"workspaces/{session['ownerId']}/{session['projectId']}/{name}"

    def probe(self, label: str, *args: str, expected: str) -> None:
        self.shell.check(f"python3 escape_probe.py {shlex.join(args)}", label, expected)

    def probe_bobs_file(self, label: str, operation: str, who: str, name: str, expected: str) -> None:
        """An S3 `operation` on bob's workspace file `name` with `who`'s credentials (see escape_probe)."""
        self.probe(label, operation, who, self.bucket, self.key(self.bob, name), expected=expected)

    def bob_object(self, name: str) -> bytes | None:
        return self.stack.workspace_object(self.bob, name)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    require_tool("bwrap", "the local stack's task sandbox")
    require_tool("tmux", "the terminal's persistent shell")
    with local_stack(tmp_path_factory.mktemp("escapes")) as stack:
        started = stack.start_session(user="bob", projectId="bobs-project")
        bob = stack.wait_status(started["sessionId"], "READY", user="bob", timeout_s=300)
        bucket = stack.output_value("WorkspaceBucketName")
        s3 = stack.client("s3")
        s3.put_object(Bucket=bucket, Key=f"workspaces/{bob['ownerId']}/bobs-project/secret.txt", Body=SECRET)
        alice = ready_session(stack, projectId="alices-project")
        s3.put_object(
            Bucket=bucket,
            Key=f"workspaces/{alice['ownerId']}/alices-project/escape_probe.py",
            Body=PROBE.read_bytes(),
        )
        shell = Shell(stack, alice["sessionId"])
        try:
            # the agent pulls the probe into /workspace within its poll interval
            shell.check("until test -f escape_probe.py; do sleep 0.2; done; echo there", "probe", "there")
            yield Scene(stack, shell, alice, bob, bucket)
        finally:
            shell.close()


REFUSED_S3 = "refused 403 AccessDenied"
UNREACHABLE = "refused 403 AccessDeniedException"


def _rule(name: str) -> pytest.MarkDecorator:
    return pytest.mark.stand_in_rule(name)


@pytest.mark.escape_attempt
@pytest.mark.parametrize(
    ("operation", "who", "name", "expected"),
    [
        pytest.param("s3-list", "vended", "", REFUSED_S3, id="list", marks=_rule("session-policy-scopes-s3")),
        pytest.param("s3-get", "vended", "secret.txt", REFUSED_S3, id="read", marks=_rule("session-policy-scopes-s3")),
        pytest.param("s3-delete", "vended", "secret.txt", REFUSED_S3, id="delete", marks=_rule("session-policy-scopes-s3")),
        pytest.param("s3-put", "vended", "planted.txt", REFUSED_S3, id="plant", marks=_rule("session-policy-scopes-s3")),
        pytest.param("s3-get", "task", "secret.txt", REFUSED_S3, id="task-role", marks=_rule("task-role-has-no-s3")),
        pytest.param("s3-put", "forged", "forged.txt", "refused 403 InvalidAccessKeyId", id="forged-key",
                     marks=_rule("sigv4-key-must-exist")),
    ],
)  # fmt: skip
def test_another_users_workspace_is_out_of_reach(
    scene: Scene, operation: str, who: str, name: str, expected: str
) -> None:
    """With her own vended credentials, the task role's, or a forged key: bob's files stay as they were."""
    scene.probe_bobs_file(operation, operation, who, name, expected=expected)

    assert scene.bob_object(name) == {"secret.txt": SECRET}.get(name)


@pytest.mark.escape_attempt
@pytest.mark.stand_in_rule("task-reaches-only-its-endpoints")
def test_scanning_the_sessions_table_is_refused(scene: Scene) -> None:
    scene.probe("scan", "dynamodb-scan", scene.stack.physical_id("SessionsTable"), expected=UNREACHABLE)


@pytest.mark.escape_attempt
@pytest.mark.stand_in_rule("task-role-invokes-only-vending")
def test_invoking_another_function_is_refused(scene: Scene) -> None:
    functions = scene.stack.client("lambda").list_functions()["Functions"]
    api = next(f["FunctionName"] for f in functions if "ApiFunction" in f["FunctionName"])
    scene.probe("invoke", "lambda-invoke", api, expected=UNREACHABLE)


@pytest.mark.escape_attempt
@pytest.mark.stand_in_rule("task-reaches-only-its-endpoints")
def test_stopping_another_users_task_is_refused(scene: Scene) -> None:
    cluster = scene.stack.output_value("ClusterName")
    scene.probe("stoptask", "ecs-stop", cluster, scene.bob["taskArn"], expected=UNREACHABLE)

    assert scene.bob["taskArn"] in scene.stack.running_tasks()


@pytest.mark.escape_attempt
@pytest.mark.stand_in_rule("task-reaches-only-its-endpoints")
def test_subscribing_the_host_to_sns_is_refused(scene: Scene) -> None:
    topic = f"arn:aws:sns:{REGION}:123456789012:anything"
    scene.probe(
        "subscribe",
        "sns-subscribe",
        topic,
        f"{scene.stack.api}/sessions",
        expected="refused 403 AccessDenied",
    )


@pytest.mark.escape_attempt
@pytest.mark.stand_in_rule("task-reaches-only-its-endpoints")
def test_resetting_the_local_aws_is_refused(scene: Scene) -> None:
    scene.probe("reset", "moto-reset", expected="refused 403 Forbidden")

    assert scene.stack.session(scene.bob["sessionId"], user="bob")["status"] == "READY"
    assert scene.bob_object("secret.txt") == SECRET


def test_the_users_own_workspace_still_syncs(scene: Scene) -> None:
    scene.probe(
        "own", "s3-put", "vended", scene.bucket, scene.key(scene.alice, "by-hand.txt"), expected="allowed"
    )
    scene.shell.check("echo mine > mine.txt && cat mine.txt", "mine", "mine")

    assert eventually(lambda: scene.stack.workspace_object(scene.alice, "mine.txt"), 30) == b"mine\n"
