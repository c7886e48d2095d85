"""moto_fixes.fix_presigned_sigv4: a presigned sts:GetCallerIdentity answers for whoever signed it."""

from __future__ import annotations

import json
from collections.abc import Iterator

import boto3
import pytest
import urllib3
from moto.server import ThreadedMotoServer

from cloudide.offline import moto_fixes
from tests.image.conftest import free_port


@pytest.fixture
def endpoint() -> Iterator[str]:
    moto_fixes.install()
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def test_a_presigned_caller_identity_names_the_signer(endpoint: str) -> None:
    keys = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    admin = {"region_name": "us-east-1", "endpoint_url": endpoint, **keys}
    role = boto3.client("iam", **admin).create_role(
        RoleName="signer", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []})
    )["Role"]
    assumed = boto3.client("sts", **admin).assume_role(RoleArn=role["Arn"], RoleSessionName="task-1")[
        "Credentials"
    ]
    signer = boto3.client(
        "sts",
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id=assumed["AccessKeyId"],
        aws_secret_access_key=assumed["SecretAccessKey"],
        aws_session_token=assumed["SessionToken"],
    )
    url = signer.generate_presigned_url("get_caller_identity", Params={}, ExpiresIn=60)

    reply = urllib3.PoolManager().request("GET", url, timeout=10)

    # Unfixed, moto routes the request to S3 (ListBuckets) or answers for an anonymous user/moto.
    assert reply.status == 200
    assert b"<Arn>arn:aws:sts::123456789012:assumed-role/signer/task-1</Arn>" in reply.data
