# mypy: disable-error-code="method-assign,attr-defined,assignment,union-attr"
# mypy: disable-error-code="typeddict-item,arg-type,var-annotated,unused-ignore"
# (this module patches moto classes in place; moto's own annotations cannot describe that)
"""Correction of moto's server for SigV4 presigned URLs (credential scope in the query string)."""

from __future__ import annotations

import json
from typing import Any

import boto3
import urllib3

from cloudide.offline.moto_fixes import probing
from cloudide.offline.moto_fixes.correction import Correction


def fix_presigned_sigv4() -> None:
    """Reads the key and the service from the query when there is no Authorization header. Delete when
    moto's server does."""
    from urllib.parse import parse_qs

    from moto.core.responses import BaseResponse
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    original_key = BaseResponse.get_access_key

    def get_access_key(self: Any) -> str:
        credential = (self.querystring.get("X-Amz-Credential") or [""])[0]
        if "Authorization" not in self.headers and credential:
            return str(credential).split("/", 1)[0]
        return str(original_key(self))

    original_infer = DomainDispatcherApplication.infer_service_region_host

    def infer_service_region_host(self: Any, environ: dict[str, Any], path: str) -> str | None:
        credential = parse_qs(environ.get("QUERY_STRING", "")).get("X-Amz-Credential", [""])[0]
        if environ.get("HTTP_AUTHORIZATION") or not credential:
            return original_infer(self, environ, path)
        environ["HTTP_AUTHORIZATION"] = f"AWS4-HMAC-SHA256 Credential={credential}, SignedHeaders=host"
        try:
            return original_infer(self, environ, path)
        finally:
            del environ["HTTP_AUTHORIZATION"]

    BaseResponse.get_access_key = get_access_key  # type: ignore[method-assign]
    DomainDispatcherApplication.infer_service_region_host = infer_service_region_host  # type: ignore[method-assign]


def _probe_presigned_sigv4() -> None:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        keys = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
        admin: dict[str, Any] = {
            "region_name": probing.REGION,
            "endpoint_url": f"http://{host}:{port}",
            **keys,
        }
        trust = json.dumps({"Version": "2012-10-17", "Statement": []})
        role = boto3.client("iam", **admin).create_role(RoleName="signer", AssumeRolePolicyDocument=trust)
        assumed = boto3.client("sts", **admin).assume_role(
            RoleArn=role["Role"]["Arn"], RoleSessionName="task-1"
        )["Credentials"]
        signer = boto3.client(
            "sts",
            region_name=probing.REGION,
            endpoint_url=admin["endpoint_url"],
            aws_access_key_id=assumed["AccessKeyId"],
            aws_secret_access_key=assumed["SecretAccessKey"],
            aws_session_token=assumed["SessionToken"],
        )
        url = signer.generate_presigned_url("get_caller_identity", Params={}, ExpiresIn=60)
        reply = urllib3.PoolManager().request("GET", url, timeout=10)
    finally:
        server.stop()
    signed_by = b"<Arn>arn:aws:sts::123456789012:assumed-role/signer/task-1</Arn>"
    assert reply.status == 200 and signed_by in reply.data, (reply.status, reply.data[:300])


PRESIGNED_SIGV4 = Correction(
    name="presigned-sigv4",
    moto="its server routes a request whose SigV4 credential scope is in the query (a presigned URL,"
    " no Authorization header) to S3, and STS answers for an anonymous key",
    aws="reads the access key and the service from `X-Amz-Credential`: a presigned"
    " sts:GetCallerIdentity answers for whoever signed it",
    install=fix_presigned_sigv4,
    probe=_probe_presigned_sigv4,
)
