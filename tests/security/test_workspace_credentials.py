"""Per-session S3 isolation: the sync agent's credentials reach its own workspace prefix and nothing
else, and the task role on its own reaches no workspace at all.

Everything runs against a moto server: the agent's real vendor presigns sts:GetCallerIdentity with
the task-role session ECS would create (named after the task id); the real vending handler verifies it
with STS over HTTP, asks ECS which session started the task, reads the record and calls AssumeRole
with the session policy. Only the Lambda Invoke transport is a direct call. moto then enforces the
roles' identity policies on S3 requests (IAM authentication on); it ignores session policies, so the
prefix limit is proven by evaluating the two policy documents together (cloudide/offline/iam_policy.py).
"""

from __future__ import annotations

import io
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError
from moto.core.authorization import enable_iam_authentication
from sessions import clock, wiring
from sessions.handlers import workspace_credentials
from sessions.record import Session, Status
from sessions.store import SessionStore
from sessions.workspace_access import session_policy
from workspace_sync import entrypoint
from workspace_sync.credentials import CredentialVendor, VendingError, refreshing_session

from cloudide.offline import moto_fixes
from cloudide.offline.iam_policy import allows_all
from tests.api import cfn
from tests.image.conftest import InProcessAgent

REGION = "us-east-1"
ACCOUNT = cfn.ACCOUNT_ID
STACK = "cloudide-sec"
ALICE, BOB = "alice", "bob"


@dataclass
class World:
    endpoint: str
    stack: cfn.Stack
    bucket: str
    task_role_arn: str
    workspace_role_arn: str
    workspace_role_policy: dict[str, Any]
    function_env: dict[str, str]
    store: SessionStore
    cluster_arn: str
    network: dict[str, Any]
    task_definition: str

    def client(self, service: str, credentials: dict[str, str] | None = None) -> Any:
        keys = credentials or {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
        return boto3.client(service, region_name=REGION, endpoint_url=self.endpoint, **keys)

    def start_task(self, owner: str, project: str, *, group: str = "cloudide-terminals") -> tuple[str, str]:
        """A live session and the task the workflow started for it: (session id, task id)."""
        session_id = str(uuid.uuid4())
        ecs = self.client("ecs")
        task_arn = ecs.run_task(
            cluster=self.cluster_arn,
            taskDefinition=self.task_definition,
            networkConfiguration=self.network,
            startedBy=session_id,
            group=group,
            launchType="FARGATE",
        )["tasks"][0]["taskArn"]
        moment = clock.now()
        self.store.create(
            Session.from_item(
                {
                    "sessionId": session_id,
                    "ownerId": owner,
                    "projectId": project,
                    "image": "base",
                    "tier": "small",
                    "status": Status.READY.value,
                    "taskArn": task_arn,
                    "createdAt": clock.rfc3339(moment),
                    "lastActivityAt": clock.rfc3339(moment),
                    "idleTimeoutSeconds": 1800,
                    "maxLifetimeSeconds": 3600,
                    "idleDeadline": clock.later(moment, 1800),
                    "lifetimeDeadline": clock.later(moment, 3600),
                }
            )
        )
        return session_id, task_arn.rsplit("/", 1)[-1]

    def task_credentials(self, task_id: str, role_arn: str | None = None) -> dict[str, str]:
        """What ECS hands the task: the task role assumed in a session named after the task id."""
        assumed = self.client("sts").assume_role(
            RoleArn=role_arn or self.task_role_arn, RoleSessionName=task_id
        )
        c = assumed["Credentials"]
        return {
            "aws_access_key_id": c["AccessKeyId"],
            "aws_secret_access_key": c["SecretAccessKey"],
            "aws_session_token": c["SessionToken"],
        }

    def vendor(self, credentials: dict[str, str]) -> CredentialVendor:
        return CredentialVendor(
            "WorkspaceCredentialsFunction",
            lambda_client=InProcessLambda(self.function_env),
            sts_client=self.client("sts", credentials),
        )


class InProcessLambda:
    """lambda.invoke, answered by the real handler with the function's template environment."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def invoke(self, FunctionName: str, Payload: bytes) -> dict[str, Any]:
        with pytest.MonkeyPatch.context() as patch:
            for name, value in self.env.items():
                patch.setenv(name, value)
            answer = workspace_credentials.handler(json.loads(Payload), _Context())
        return {"StatusCode": 200, "Payload": io.BytesIO(json.dumps(answer).encode())}


@dataclass(frozen=True)
class _Context:
    function_name: str = f"{STACK}-WorkspaceCredentialsFunction"
    function_version: str = "$LATEST"
    invoked_function_arn: str = (
        f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{STACK}-WorkspaceCredentialsFunction"
    )
    memory_limit_in_mb: int = 256
    aws_request_id: str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"


def _inline_policy(stack: cfn.Stack, logical_id: str) -> dict[str, Any]:
    document = cfn.resource(logical_id)["Properties"]["Policies"][0]["PolicyDocument"]
    return dict(stack.resolve(document))


@pytest.fixture
def world(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    for name, value in {
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_ENDPOINT_URL": moto_endpoint,
        "MOTO_EC2_LOAD_DEFAULT_AMIS": "false",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    moto_fixes.install()
    suffix = uuid.uuid4().hex[:10]
    stack = cfn.Stack(name=STACK, region=REGION, parameters={"TerminalImageUri": "local/terminal:dev"})
    bucket = f"ws-{suffix}"
    boto3.client("s3", region_name=REGION).create_bucket(Bucket=bucket)
    stack.refs["WorkspaceBucket"] = bucket
    stack.attributes["WorkspaceBucket.Arn"] = f"arn:aws:s3:::{bucket}"

    table = f"{STACK}-SessionsTable-{suffix}"
    boto3.client("dynamodb").create_table(**cfn.create_table_arguments("SessionsTable", table))
    stack.refs["SessionsTable"] = table
    ecs = boto3.client("ecs")
    cluster = ecs.create_cluster(clusterName=f"{STACK}-Cluster-{suffix}")["cluster"]
    stack.refs["Cluster"], stack.attributes["Cluster.Arn"] = cluster["clusterName"], cluster["clusterArn"]
    task_definition = ecs.register_task_definition(
        family=f"{STACK}-terminal",
        requiresCompatibilities=["FARGATE"],
        networkMode="awsvpc",
        cpu="256",
        memory="512",
        containerDefinitions=[{"name": "terminal", "image": "local/terminal:dev", "essential": True}],
    )["taskDefinition"]["taskDefinitionArn"]
    ec2 = boto3.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.42.0.0/20")["Subnet"]["SubnetId"]
    network = {"awsvpcConfiguration": {"subnets": [subnet], "assignPublicIp": "DISABLED"}}

    iam = boto3.client("iam")
    stack.attributes["ExecLogGroup.Arn"] = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:exec-{suffix}:*"
    stack.attributes["WorkspaceCredentialsFunction.Arn"] = _Context.invoked_function_arn
    stack.attributes["UsageReportFunction.Arn"] = (
        f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{STACK}-UsageReportFunction"
    )
    task_role = iam.create_role(
        RoleName=f"{STACK}-TaskRole-{suffix}",
        AssumeRolePolicyDocument=json.dumps(
            stack.resolve(cfn.resource("TaskRole")["Properties"]["AssumeRolePolicyDocument"])
        ),
    )["Role"]
    for policy in cfn.resource("TaskRole")["Properties"]["Policies"]:
        iam.put_role_policy(
            RoleName=task_role["RoleName"],
            PolicyName=policy["PolicyName"],
            PolicyDocument=json.dumps(stack.resolve(policy["PolicyDocument"])),
        )
    vending = cfn.resource("TaskRoleVendingPolicy")["Properties"]
    iam.put_role_policy(
        RoleName=task_role["RoleName"],
        PolicyName=vending["PolicyName"],
        PolicyDocument=json.dumps(stack.resolve(vending["PolicyDocument"])),
    )
    workspace_policy = _inline_policy(stack, "WorkspaceAccessRole")
    workspace_role = iam.create_role(
        RoleName=f"{STACK}-WorkspaceAccessRole-{suffix}",
        AssumeRolePolicyDocument=json.dumps(
            {"Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}]}
        ),
    )["Role"]
    iam.put_role_policy(
        RoleName=workspace_role["RoleName"],
        PolicyName="workspace-sync",
        PolicyDocument=json.dumps(workspace_policy),
    )
    stack.attributes["WorkspaceAccessRole.Arn"] = workspace_role["Arn"]
    stack.attributes["TaskRole.Arn"] = task_role["Arn"]
    function_env = stack.function_environment("WorkspaceCredentialsFunction") | {
        "AWS_ENDPOINT_URL": moto_endpoint,
        "EXTRA_STS_ENDPOINTS": moto_endpoint,
    }
    for name, key in (
        (f"workspaces/{ALICE}/p1/notes.txt", b"alice's"),
        (f"workspaces/{BOB}/p2/secret.txt", b"bob's"),
    ):
        boto3.client("s3", region_name=REGION).put_object(Bucket=bucket, Key=name, Body=key)
    try:
        yield World(
            endpoint=moto_endpoint,
            stack=stack,
            bucket=bucket,
            task_role_arn=task_role["Arn"],
            workspace_role_arn=workspace_role["Arn"],
            workspace_role_policy=workspace_policy,
            function_env=function_env,
            store=SessionStore(table),
            cluster_arn=cluster["clusterArn"],
            network=network,
            task_definition=task_definition,
        )
    finally:
        wiring._build.cache_clear()
        wiring._build_task_calls.cache_clear()


def s3_read(world: World, credentials: dict[str, str], key: str) -> str:
    """'ok' or the S3 error code, with moto enforcing the caller's IAM policies."""
    with enable_iam_authentication():
        try:
            world.client("s3", credentials).get_object(Bucket=world.bucket, Key=key)
            return "ok"
        except ClientError as error:
            return str(error.response["Error"]["Code"])


def test_the_agent_gets_credentials_for_its_own_workspace(world: World) -> None:
    session_id, task_id = world.start_task(ALICE, "p1")
    vendor = world.vendor(world.task_credentials(task_id))

    fetched = vendor.fetch()

    assert vendor.prefix == f"workspaces/{ALICE}/p1/"
    vended = {
        "aws_access_key_id": fetched["access_key"],
        "aws_secret_access_key": fetched["secret_key"],
        "aws_session_token": fetched["token"],
    }
    assert s3_read(world, vended, f"workspaces/{ALICE}/p1/notes.txt") == "ok"
    identity = world.client("sts", vended).get_caller_identity()["Arn"]
    assert identity.endswith(f"/{session_id}")  # the role session is named after the session: CloudTrail


def test_the_task_role_alone_reaches_no_workspace(world: World) -> None:
    _, task_id = world.start_task(ALICE, "p1")
    task = world.task_credentials(task_id)  # what a user who read them from the container would hold

    assert s3_read(world, task, f"workspaces/{ALICE}/p1/notes.txt") == "AccessDenied"
    assert s3_read(world, task, f"workspaces/{BOB}/p2/secret.txt") == "AccessDenied"


@pytest.mark.parametrize(
    ("action", "key", "context", "allowed"),
    [
        ("s3:GetObject", "workspaces/alice/p1/notes.txt", {}, True),
        ("s3:PutObject", "workspaces/alice/p1/src/new.py", {}, True),
        ("s3:DeleteObject", "workspaces/alice/p1/old.txt", {}, True),
        ("s3:GetObject", "workspaces/bob/p2/secret.txt", {}, False),
        ("s3:PutObject", "workspaces/bob/p2/planted.txt", {}, False),
        ("s3:GetObject", "workspaces/alice/p2/other-project.txt", {}, False),
        ("s3:GetObject", "workspaces/alice/p1-evil/x", {}, False),
        ("s3:GetObject", "other/alice/p1/notes.txt", {}, False),
        ("s3:ListBucket", "", {"s3:prefix": "workspaces/alice/p1/"}, True),
        ("s3:ListBucket", "", {"s3:prefix": "workspaces/alice/p1/src/"}, True),
        ("s3:ListBucket", "", {"s3:prefix": "workspaces/bob/"}, False),
        ("s3:ListBucket", "", {"s3:prefix": "workspaces/"}, False),
        ("s3:ListBucket", "", {}, False),
        ("s3:PutBucketPolicy", "", {}, False),
    ],
)
def test_the_session_policy_confines_the_credentials_to_one_prefix(
    world: World, action: str, key: str, context: dict[str, str], allowed: bool
) -> None:
    # The effective permissions of the vended credentials: the workspace role's policy AND the session
    # policy the function attaches (moto does not evaluate session policies; iam_policy does).
    documents = [world.workspace_role_policy, session_policy(world.bucket, f"workspaces/{ALICE}/p1/")]
    resource = f"arn:aws:s3:::{world.bucket}" + (f"/{key}" if key else "")

    assert allows_all(documents, action, resource, context) is allowed


def refused(world: World, vendor: CredentialVendor) -> str:
    with pytest.raises(VendingError) as refusal:
        vendor.fetch()
    return str(refusal.value)


def test_credentials_of_another_role_are_refused(world: World) -> None:
    _, task_id = world.start_task(ALICE, "p1")
    # The right session name (a live task's id) on another role's credentials proves nothing.
    other = world.task_credentials(task_id, role_arn=world.workspace_role_arn)

    assert "is not a session of the terminal task role" in refused(world, world.vendor(other))


def test_a_task_this_product_did_not_start_is_refused(world: World) -> None:
    _, task_id = world.start_task(ALICE, "p1", group="someone-else")

    assert "is not a terminal of this cluster" in refused(
        world, world.vendor(world.task_credentials(task_id))
    )


def test_a_task_of_an_ended_session_is_refused(world: World) -> None:
    session_id, task_id = world.start_task(ALICE, "p1")
    world.store.update_fields(session_id, while_status=tuple(Status), status=Status.STOPPED)

    assert "is not live" in refused(world, world.vendor(world.task_credentials(task_id)))


def test_a_proof_pointing_anywhere_but_sts_is_refused(world: World) -> None:
    _, task_id = world.start_task(ALICE, "p1")
    lambda_client = InProcessLambda(world.function_env)
    for url in (
        "https://attacker.example.com/?Action=GetCallerIdentity",
        "https://sts.amazonaws.com.attacker.example/?Action=GetCallerIdentity",
        "http://sts.amazonaws.com/?Action=GetCallerIdentity",
        f"{world.endpoint}/?Action=AssumeRole",
    ):
        answer = json.loads(
            lambda_client.invoke(FunctionName="f", Payload=json.dumps({"callerIdentityUrl": url}).encode())[
                "Payload"
            ].read()
        )
        assert answer["error"] == "AccessRefused", url
    assert task_id


def test_credentials_are_fetched_again_before_they_expire(world: World) -> None:
    _, task_id = world.start_task(ALICE, "p1")
    vendor = world.vendor(world.task_credentials(task_id))
    fetches: list[str] = []
    original = vendor.fetch

    def nearly_expired() -> dict[str, str]:
        metadata = original()
        fetches.append(metadata["access_key"])
        # Inside botocore's mandatory refresh window (10 minutes): the next use must fetch again.
        return metadata | {"expiry_time": clock.later(clock.now(), 5 * 60)}

    vendor.fetch = nearly_expired  # type: ignore[method-assign]
    session = refreshing_session(vendor, REGION)

    current = session.get_credentials().get_frozen_credentials()  # what the next S3 call would sign with

    assert len(fetches) == 2 and current.access_key == fetches[1] != fetches[0]


def test_the_sync_agent_works_on_vended_credentials_and_leaves_them_nowhere(
    world: World, tmp_path: Any
) -> None:
    _, task_id = world.start_task(ALICE, "p1")
    vendor = world.vendor(world.task_credentials(task_id))
    session = refreshing_session(vendor, REGION)
    secret = session.get_credentials().get_frozen_credentials().secret_key
    env = {
        "WORKSPACE_BUCKET": world.bucket,
        "WORKSPACE_PREFIX": f"workspaces/{ALICE}/p1",
        "SESSION_ID": "s-vended",
        "WORKSPACE_DIR": str(tmp_path / "workspace"),
        "SYNC_POLL_SECONDS": "0.3",
        "SYNC_FLUSH_DEADLINE_SECONDS": "30",
    }
    agent = InProcessAgent(env, session.client("s3", endpoint_url=world.endpoint)).start()
    (tmp_path / "workspace" / "new.txt").write_text("written in the terminal")
    assert agent.stop() == 0

    assert (tmp_path / "workspace" / "notes.txt").read_text() == "alice's"  # pulled at start
    body = world.client("s3").get_object(Bucket=world.bucket, Key=f"workspaces/{ALICE}/p1/new.txt")["Body"]
    assert body.read() == b"written in the terminal"  # pushed, flushed at stop
    # The credentials live in the agent's memory only: not in the environment a shell could inherit,
    # not in any file under the workspace or the agent's state.
    assert secret not in "".join(os.environ.values())
    for path in (tmp_path / "workspace").rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_without_credentials_the_agent_refuses_to_start(world: World, tmp_path: Any) -> None:
    env = {
        "WORKSPACE_BUCKET": world.bucket,
        "WORKSPACE_PREFIX": f"workspaces/{ALICE}/p1",
        "SESSION_ID": "s-none",
        "WORKSPACE_DIR": str(tmp_path / "workspace"),
        "WORKSPACE_ACCESS_FUNCTION": "no-such-function",  # the vending call fails
    }

    assert (
        entrypoint.run(env, Logger(service="workspace-sync-test", level="CRITICAL")) == entrypoint.EXIT_FAILED
    )
    assert not (tmp_path / "workspace" / "notes.txt").exists()  # nothing was pulled with other credentials
