"""The bridge a task's socket leads to, driven with SigV4-signed requests as a task's SDK sends them.

What a sandbox can try is proven from inside real sandboxes in tests/e2e/test_bridge_escapes.py; here
each rule of the gate is exercised on its own: the signature, the token and its expiry, the session
policy's prefix, the endpoint's host, and that a body is never read before the request is authorized.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from moto.core.utils import utcnow
from moto.sts.models import sts_backends
from sessions.workspace_access import session_policy

from cloudide.localstack.bridge import EndpointBridge
from cloudide.localstack.task_access import S3_BODY_LIMIT
from cloudide.offline.sam import ACCOUNT_ID
from cloudide.offline.stack import OfflineAws

REGION = "us-east-1"
ROOT = Path(__file__).resolve().parents[2]
PARAMETERS = {"TerminalImageUri": "local/terminal:dev"}


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def code(self) -> str:
        if self.headers.get("content-type") == "application/xml":
            return self.body.split(b"<Code>", 1)[1].split(b"</Code>", 1)[0].decode()
        return self.headers.get("x-amzn-errortype") or json.loads(self.body).get("__type", "")


@dataclass
class Bridge:
    aws: OfflineAws
    socket: Path
    host: str
    bucket: str

    def session(self, logical_role: str, prefix: str | None = None, name: str = "session") -> Credentials:
        """Credentials of the role `logical_role`, with the vending function's session policy for `prefix`."""
        assert self.aws.stack is not None
        role = self.aws.client("iam").get_role(RoleName=self.aws.stack.physical_id(logical_role))["Role"][
            "Arn"
        ]
        policy = {"Policy": json.dumps(session_policy(self.bucket, prefix))} if prefix else {}
        issued = self.aws.client("sts").assume_role(RoleArn=role, RoleSessionName=name, **policy)[
            "Credentials"
        ]
        return Credentials(issued["AccessKeyId"], issued["SecretAccessKey"], issued["SessionToken"])

    def send(
        self,
        method: str,
        path: str,
        credentials: Credentials | None,
        *,
        service: str = "s3",
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        after_signing: dict[str, str] | None = None,
    ) -> Reply:
        """`method path` signed as botocore signs it (then `after_signing` headers changed), over the socket."""
        request = AWSRequest(method=method, url=f"http://{self.host}{path}", data=body, headers=headers or {})
        if credentials is not None:
            if service == "s3":
                request.headers["X-Amz-Content-SHA256"] = "UNSIGNED-PAYLOAD"
            (S3SigV4Auth if service == "s3" else SigV4Auth)(credentials, service, REGION).add_auth(request)
        sent = {**dict(request.headers.items()), "Host": self.host, **(after_signing or {})}
        connection = _UnixConnection(self.socket)
        try:
            connection.request(method, path, body=body or None, headers=sent)
            response = connection.getresponse()
            return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
        finally:
            connection.close()


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=30)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(self._path))


@pytest.fixture(scope="module")
def bridge() -> Iterator[Bridge]:
    # its own stack name: moto's backends outlive a server, and other modules deploy "cloudide"
    with OfflineAws(
        ROOT / "template.yaml", parameters=PARAMETERS, server=True, stack_name="bridge-tests"
    ) as aws:
        assert aws.stack is not None and aws.endpoint_url
        host = urlsplit(aws.endpoint_url).netloc
        endpoint = EndpointBridge([host], ACCOUNT_ID)
        try:
            yield Bridge(aws, endpoint.open("test-task"), host, aws.stack.outputs["WorkspaceBucketName"])
        finally:
            endpoint.shutdown()


ALICE = "workspaces/alice/p/"


def test_a_vended_session_reaches_its_own_prefix(bridge: Bridge) -> None:
    alice = bridge.session("WorkspaceAccessRole", ALICE)

    put = bridge.send("PUT", f"/{bridge.bucket}/{ALICE}note.txt", alice, body=b"mine")
    got = bridge.send("GET", f"/{bridge.bucket}/{ALICE}note.txt", alice)
    listed = bridge.send("GET", f"/{bridge.bucket}?list-type=2&prefix={ALICE}", alice)

    assert (put.status, got.status, got.body) == (200, 200, b"mine")
    assert listed.status == 200 and f"<Key>{ALICE}note.txt</Key>".encode() in listed.body


@pytest.mark.stand_in_rule("session-policy-scopes-s3")
def test_a_vended_session_reaches_no_other_prefix(bridge: Bridge) -> None:
    alice = bridge.session("WorkspaceAccessRole", ALICE)

    replies = [
        bridge.send("GET", f"/{bridge.bucket}?list-type=2&prefix=workspaces/bob/", alice),
        bridge.send("GET", f"/{bridge.bucket}?list-type=2", alice),
        bridge.send("PUT", f"/{bridge.bucket}/workspaces/bob/p/planted", alice, body=b"x"),
        bridge.send("DELETE", f"/{bridge.bucket}/workspaces/bob/p/secret", alice),
        bridge.send("GET", f"/{bridge.bucket}?policy", alice),
    ]

    assert [(r.status, r.code) for r in replies] == [(403, "AccessDenied")] * 5


@pytest.mark.stand_in_rule("sigv4-signature-verified")
def test_a_request_changed_after_signing_is_refused(bridge: Bridge) -> None:
    alice = bridge.session("WorkspaceAccessRole", ALICE)
    signed_for = f"/{bridge.bucket}/{ALICE}a"

    reply = bridge.send("GET", signed_for, alice, after_signing={"X-Amz-Date": "20260101T000000Z"})
    moved = bridge.send("GET", signed_for, alice, after_signing={"Authorization": "x"})

    assert (reply.status, reply.code) == (
        403,
        "SignatureDoesNotMatch",
    )  # the scope date is not the signing date
    assert (moved.status, moved.code) == (403, "AccessDenied")  # no SigV4 at all: anonymous
    wrong = bridge.send("GET", signed_for, Credentials(alice.access_key, "not-the-secret", alice.token))
    assert (wrong.status, wrong.code) == (403, "SignatureDoesNotMatch")


@pytest.mark.stand_in_rule("sigv4-token-checked")
def test_a_wrong_or_expired_token_is_refused(bridge: Bridge) -> None:
    alice = bridge.session("WorkspaceAccessRole", ALICE, name="expiring")
    path = f"/{bridge.bucket}/{ALICE}a"

    wrong = bridge.send("GET", path, Credentials(alice.access_key, alice.secret_key, "forged-token"))
    issued = sts_backends[ACCOUNT_ID]["aws"].get_assumed_role_from_access_key(alice.access_key)
    assert issued is not None
    issued.expiration = utcnow() - timedelta(seconds=1)
    expired = bridge.send("GET", path, alice)

    assert (wrong.status, wrong.code) == (400, "InvalidToken")
    assert (expired.status, expired.code) == (400, "ExpiredToken")


@pytest.mark.stand_in_rule("task-reaches-only-its-endpoints")
def test_services_without_an_endpoint_answer_in_their_own_protocol(bridge: Bridge) -> None:
    task = bridge.session("TaskRole", name="0123456789abcdef0123456789abcdef")

    scan = bridge.send(
        "POST", "/", task, service="dynamodb", body=b"{}",
        headers={"X-Amz-Target": "DynamoDB_20120810.Scan", "Content-Type": "application/x-amz-json-1.0"},
    )  # fmt: skip
    topics = bridge.send(
        "POST", "/", task, service="sns", body=b"Action=ListTopics",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    functions = bridge.send("GET", "/2015-03-31/functions/", task, service="lambda")

    assert (scan.status, json.loads(scan.body)["__type"]) == (403, "AccessDeniedException")
    assert topics.status == 403 and b"<Code>AccessDenied</Code>" in topics.body
    assert (functions.status, functions.code) == (403, "AccessDeniedException")


@pytest.mark.stand_in_rule("task-reaches-only-its-endpoints")
def test_moto_api_and_other_hosts_are_refused(bridge: Bridge) -> None:
    task = bridge.session("TaskRole", name="0123456789abcdef0123456789abcdef")

    reset = bridge.send("POST", "/moto-api/reset", None)
    elsewhere = bridge.send(
        "GET", f"/{bridge.bucket}?list-type=2", task, after_signing={"Host": "169.254.170.2"}
    )

    assert (reset.status, elsewhere.status) == (403, 403)
    assert bridge.aws.client("s3").head_bucket(Bucket=bridge.bucket)  # the local AWS was not reset


def test_a_body_is_not_read_before_the_request_is_authorized(bridge: Bridge) -> None:
    """The refusal arrives after the head alone: the bridge holds no body it has not authorized, and a
    body over the local AWS's limit is refused before a byte of it is sent."""
    alice = bridge.session("WorkspaceAccessRole", ALICE)
    request = AWSRequest(method="PUT", url=f"http://{bridge.host}/{bridge.bucket}/{ALICE}huge", data=b"")
    request.headers["X-Amz-Content-SHA256"] = "UNSIGNED-PAYLOAD"
    request.headers["Content-Length"] = str(S3_BODY_LIMIT + 1)
    S3SigV4Auth(alice, "s3", REGION).add_auth(request)
    head = f"PUT /{bridge.bucket}/{ALICE}huge HTTP/1.1\r\nHost: {bridge.host}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in request.headers.items()) + "\r\n"

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(10)
        client.connect(str(bridge.socket))
        client.sendall(head.encode())
        answer = b""
        while chunk := client.recv(65536):  # the bridge answers and closes without waiting for the body
            answer += chunk

    assert answer.startswith(b"HTTP/1.1 400") and b"<Code>EntityTooLarge</Code>" in answer


def test_the_vending_function_is_the_one_the_task_role_may_invoke(bridge: Bridge) -> None:
    assert bridge.aws.stack is not None
    task = bridge.session("TaskRole", name="0123456789abcdef0123456789abcdef")
    vending = bridge.aws.stack.physical_id("WorkspaceCredentialsFunction")

    reply = bridge.send(
        "POST", f"/2015-03-31/functions/{vending}/invocations", task, service="lambda", body=b"{}"
    )
    other: Any = bridge.send(
        "POST", f"/2015-03-31/functions/{bridge.aws.stack.physical_id('ApiFunction')}/invocations", task,
        service="lambda", body=b"{}",
    )  # fmt: skip

    assert reply.status == 200 and b"callerIdentityUrl" in reply.body  # the function answered: not a refusal
    assert (other.status, other.code) == (403, "AccessDeniedException")
