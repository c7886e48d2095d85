"""Credential vending for the sync agents: each terminal's agent gets short-lived S3 credentials that
reach its own session's workspace prefix and nothing else.

Why vending: ECS gives every task of a task definition the same task role, and ECS cannot attach
session tags to task-role sessions (containers-roadmap #2426), so no policy on the task role can tell
one user's task from another's. The task role may therefore only invoke this function. The agent
proves which task it is with a presigned `sts:GetCallerIdentity` URL signed by its task-role
credentials (the scheme EKS's aws-iam-authenticator and Vault's AWS auth use); ECS names task-role
sessions after the task id, so STS's answer `assumed-role/<task role>/<task id>` identifies the task
and cannot be forged. ECS then says which session started that task (`startedBy`, set by the workflow,
never by the user), the session record says whose it is and where its workspace lives, and STS
AssumeRole on the workspace role with an inline session policy limited to that prefix yields the
credentials. A user who reads the task's own credentials from inside the container can get no more
than this: their own workspace.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import urllib3

from sessions.config import Settings
from sessions.ecs_tasks import TASK_GROUP, workspace_prefix
from sessions.record import TaskStatus
from sessions.store import SessionStore

# AssumeRole from a Lambda function is role chaining: AWS caps those sessions at one hour.
CREDENTIAL_SECONDS = 3600
_STS_HOST = re.compile(r"^sts(\.[a-z0-9-]+)?\.amazonaws\.com(\.cn)?$")
# ECS names a task-role session after the task id (32 hex digits; moto's ids are dashed UUIDs).
_ASSUMED_ROLE = re.compile(
    r"^arn:(?P<partition>[\w-]+):sts::(?P<account>\d{12}):assumed-role/(?P<role>[^/]+)/(?P<task>[0-9a-f-]{32,36})$"
)
_ARN_ROLE = re.compile(r"^arn:[\w-]+:iam::(?P<account>\d{12}):role/(?:.*/)?(?P<role>[^/]+)$")
_STS_NAMESPACE = "{https://sts.amazonaws.com/doc/2011-06-15/}"


class AccessRefused(Exception):
    """The caller is not a live terminal task of this deployment; the message says which check failed."""


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
    def __init__(
        self,
        settings: Settings,
        store: SessionStore,
        *,
        ecs: Any | None = None,
        sts: Any | None = None,
        http: urllib3.PoolManager | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._ecs = ecs or boto3.client("ecs")
        self._sts = sts or boto3.client("sts")
        self._http = http or urllib3.PoolManager(timeout=urllib3.Timeout(connect=2, read=5), retries=1)

    def vend(self, caller_identity_url: str) -> VendedCredentials:
        partition, task_id = self._verified_task(caller_identity_url)
        session_id = self._session_of_task(task_id)
        session = self._store.get(session_id)
        if session is None or not session.status.is_live:
            raise AccessRefused(f"session {session_id} is not live")
        if session.task_arn is not None and not session.task_arn.endswith(f"/{task_id}"):
            raise AccessRefused(f"task {task_id} is not the task of session {session_id}")
        prefix = workspace_prefix(session)
        bucket = self._settings.workspace_bucket
        response = self._sts.assume_role(
            RoleArn=self._settings.workspace_role_arn,
            RoleSessionName=session_id,
            DurationSeconds=CREDENTIAL_SECONDS,
            Policy=json.dumps(session_policy(bucket, prefix, partition)),
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

    def _verified_task(self, url: str) -> tuple[str, str]:
        """(partition, task id) of the task-role session that signed `url`, as STS itself reports it."""
        parts = urlsplit(url)
        allowed_extra = {urlsplit(endpoint).netloc for endpoint in self._settings.extra_sts_endpoints}
        is_aws = parts.scheme == "https" and _STS_HOST.match(parts.hostname or "") and parts.port is None
        if not (is_aws or parts.netloc in allowed_extra):
            # Otherwise a caller could point us at a server of their own that answers any identity.
            raise AccessRefused("the caller-identity proof must be a URL of AWS STS")
        if parse_qs(parts.query).get("Action") != ["GetCallerIdentity"]:
            raise AccessRefused("the caller-identity proof must be a presigned sts:GetCallerIdentity")
        reply = self._http.request("GET", url, redirect=False)
        if reply.status != 200:
            raise AccessRefused(f"STS refused the caller-identity proof ({reply.status})")
        arn = ElementTree.fromstring(reply.data).findtext(f".//{_STS_NAMESPACE}Arn") or ""
        match = _ASSUMED_ROLE.match(arn)
        task_role = _ARN_ROLE.match(self._settings.task_role_arn)
        if not match or not task_role or match["account"] != task_role["account"]:
            raise AccessRefused(f"{arn or 'the caller'} is not a terminal task's role session")
        if match["role"] != task_role["role"]:
            raise AccessRefused(f"{arn} is not a session of the terminal task role")
        return match["partition"], match["task"]

    def _session_of_task(self, task_id: str) -> str:
        tasks = self._ecs.describe_tasks(cluster=self._settings.cluster, tasks=[task_id]).get("tasks", [])
        task = tasks[0] if tasks else {}
        if task.get("group") != TASK_GROUP or not task.get("startedBy"):
            raise AccessRefused(f"task {task_id} is not a terminal of this cluster")
        if task.get("lastStatus") == TaskStatus.STOPPED:
            raise AccessRefused(f"task {task_id} has stopped")
        return str(task["startedBy"])
