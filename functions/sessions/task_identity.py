"""Which live session's task is calling: the one way a terminal task authenticates to the control plane.

A task's calls (workspace credentials, usage reports) reach Lambda functions its task role may invoke;
every task of the deployment has that role, so the role alone says nothing about which task calls. The
caller proves it with a presigned `sts:GetCallerIdentity` URL signed by its task-role credentials (the
scheme EKS's aws-iam-authenticator and Vault's AWS auth use). ECS names task-role sessions after the
task id, so STS's answer `assumed-role/<task role>/<task id>` identifies the task and cannot be forged;
ECS then says which session started that task (`startedBy`, set by the workflow, never by the user),
and the record must be live and name that task. The proof is presigned for a minute, and in the task
only the agents' own uid can sign one: the user's shell cannot read their credentials.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import urllib3

from sessions.config import Settings
from sessions.ecs_tasks import TASK_GROUP
from sessions.record import Session, TaskStatus
from sessions.store import SessionStore

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
class CallingTask:
    partition: str
    task_id: str
    session: Session  # live, and naming this task (or no task yet: RunTask has not answered)


class TaskIdentity:
    def __init__(
        self,
        settings: Settings,
        store: SessionStore,
        *,
        ecs: Any | None = None,
        http: urllib3.PoolManager | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._ecs = ecs or boto3.client("ecs")
        self._http = http or urllib3.PoolManager(timeout=urllib3.Timeout(connect=2, read=5), retries=1)

    def prove(self, caller_identity_url: str) -> CallingTask:
        partition, task_id = self._verified_task(caller_identity_url)
        session_id = self._session_of_task(task_id)
        session = self._store.get(session_id)
        if session is None or not session.status.is_live:
            raise AccessRefused(f"session {session_id} is not live")
        if session.task_arn is not None and not session.task_arn.endswith(f"/{task_id}"):
            raise AccessRefused(f"task {task_id} is not the task of session {session_id}")
        return CallingTask(partition, task_id, session)

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
