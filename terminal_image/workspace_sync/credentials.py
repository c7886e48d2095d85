"""The agent's S3 credentials, vended per session by the control plane and refreshed before expiry.

The task role may only invoke the vending function; S3 is reachable only with what that function
returns: credentials whose session policy is this session's workspace prefix (see SECURITY.md). The
agent proves which task it is with a presigned `sts:GetCallerIdentity` URL signed by the task role's
credentials; it never sends the credentials themselves. botocore's RefreshableCredentials asks again
15 minutes before expiry (10 minutes: mandatory), so a session of any length keeps syncing.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import botocore.session
from botocore.credentials import RefreshableCredentials

# The proof is good for a minute: long enough for one invocation, too short to be worth stealing.
PROOF_SECONDS = 60


class VendingError(RuntimeError):
    """The control plane refused or failed to vend credentials; the message says why."""


class CredentialVendor:
    """Fetches credentials in the metadata shape RefreshableCredentials refreshes from."""

    def __init__(self, function_name: str, *, lambda_client: Any, sts_client: Any) -> None:
        self._function = function_name
        self._lambda = lambda_client
        self._sts = sts_client
        self.prefix: str | None = None

    def fetch(self) -> dict[str, str]:
        proof = self._sts.generate_presigned_url("get_caller_identity", Params={}, ExpiresIn=PROOF_SECONDS)
        reply = self._lambda.invoke(
            FunctionName=self._function, Payload=json.dumps({"callerIdentityUrl": proof}).encode()
        )
        body = json.loads(reply["Payload"].read() or b"{}")
        if reply.get("FunctionError") or "credentials" not in body:
            raise VendingError(f"workspace credentials refused: {body.get('message') or body}")
        vended = body["credentials"]
        self.prefix = vended["prefix"]
        return {
            "access_key": vended["accessKeyId"],
            "secret_key": vended["secretAccessKey"],
            "token": vended["sessionToken"],
            "expiry_time": vended["expiration"],
        }


def refreshing_session(vendor: CredentialVendor, region: str | None) -> boto3.Session:
    """A boto3 session on the vendor's credentials, fetched now and again before each expiry."""
    credentials = RefreshableCredentials.create_from_metadata(
        metadata=vendor.fetch(), refresh_using=vendor.fetch, method="cloudide-workspace-vending"
    )
    core = botocore.session.get_session()
    # botocore has no public setter for refreshable credentials; this is how its own providers install them.
    core._credentials = credentials  # type: ignore[attr-defined]
    return boto3.Session(botocore_session=core, region_name=region)


def vended_session(function_name: str) -> tuple[boto3.Session, str]:
    """A session on vended credentials (the task role's own prove who asks), and their prefix."""
    task = boto3.Session()
    vendor = CredentialVendor(
        function_name, lambda_client=task.client("lambda"), sts_client=task.client("sts")
    )
    session = refreshing_session(vendor, task.region_name)
    assert vendor.prefix is not None  # fetch() succeeded, so it recorded the prefix
    return session, vendor.prefix
