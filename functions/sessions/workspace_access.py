"""Credential vending for the sync agents: each terminal's agent gets short-lived S3 credentials that
reach its own session's workspace prefix and nothing else.

Why vending: ECS gives every task of a task definition the same task role, and ECS cannot attach
session tags to task-role sessions (containers-roadmap #2426), so no policy on the task role can tell
one user's task from another's. The task role may therefore only invoke the task's functions. The
agent proves which task, and so which session, it is (sessions/task_identity.py); the session record
says whose it is and where its workspace lives, and STS AssumeRole on the workspace role with an inline
session policy limited to that prefix yields the credentials. A user who reads the task's own
credentials from inside the container can get no more than this: their own workspace.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import boto3

from sessions.config import Settings
from sessions.ecs_tasks import workspace_prefix
from sessions.task_identity import AccessRefused, TaskIdentity

__all__ = ["AccessRefused", "VendedCredentials", "WorkspaceAccess", "session_policy"]

# AssumeRole from a Lambda function is role chaining: AWS caps those sessions at one hour.
CREDENTIAL_SECONDS = 3600


@dataclass(frozen=True)
class VendedCredentials:
    access_key_id: str
    secret_access_key: str
    session_token: str
    expiration: str  # ISO 8601, as botocore's RefreshableCredentials expects
    bucket: str
    prefix: str

    def as_response(self) -> dict[str, str]:
        return {
            "accessKeyId": self.access_key_id,
            "secretAccessKey": self.secret_access_key,
            "sessionToken": self.session_token,
            "expiration": self.expiration,
            "bucket": self.bucket,
            "prefix": self.prefix,
        }


def session_policy(bucket: str, prefix: str, partition: str = "aws") -> dict[str, Any]:
    """The inline session policy: the workspace role's S3 rights, narrowed to one workspace prefix."""
    objects = f"arn:{partition}:s3:::{bucket}/{prefix}*"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "OwnWorkspaceObjects",
                "Effect": "Allow",
                "Action": [
                    "s3:GetObject",
                    "s3:PutObject",
                    "s3:DeleteObject",
                    "s3:GetObjectAttributes",
                    "s3:AbortMultipartUpload",
                ],
                "Resource": objects,
            },
            {
                "Sid": "OwnWorkspaceListing",
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": f"arn:{partition}:s3:::{bucket}",
                "Condition": {"StringLike": {"s3:prefix": [prefix, f"{prefix}*"]}},
            },
        ],
    }


class WorkspaceAccess:
    def __init__(self, settings: Settings, identity: TaskIdentity, *, sts: Any | None = None) -> None:
        self._settings = settings
        self._identity = identity
        self._sts = sts or boto3.client("sts")

    def vend(self, caller_identity_url: str) -> VendedCredentials:
        caller = self._identity.prove(caller_identity_url)
        prefix = workspace_prefix(caller.session)
        bucket = self._settings.workspace_bucket
        response = self._sts.assume_role(
            RoleArn=self._settings.workspace_role_arn,
            RoleSessionName=caller.session.session_id,
            DurationSeconds=CREDENTIAL_SECONDS,
            Policy=json.dumps(session_policy(bucket, prefix, caller.partition)),
        )
        credentials = response["Credentials"]
        expiration = credentials["Expiration"]
        return VendedCredentials(
            access_key_id=credentials["AccessKeyId"],
            secret_access_key=credentials["SecretAccessKey"],
            session_token=credentials["SessionToken"],
            expiration=expiration.isoformat() if hasattr(expiration, "isoformat") else str(expiration),
            bucket=bucket,
            prefix=prefix,
        )
