"""A terminal task's usage reports, offline: what the usage monitor in the task sends, sent to the
deployed UsageReportFunction of an offline stack, with STS played for the task's identity proof.

In-process moto answers boto3 calls but not the plain HTTPS GET with which the function checks a
presigned `sts:GetCallerIdentity` URL (sessions/task_identity.py), so while :func:`played_sts` is in
effect, that GET for a :class:`TaskReporter`'s proof is answered here exactly as STS answers a
task-role session: `assumed-role/<task role>/<task id>`. The proof's checks themselves are tested against moto's STS in tests/security; what
this serves is the workflow: which report moves a deadline, heartbeats the watch step or stops it.
The local stack needs none of this: its tasks presign real URLs against moto run as a server.
"""

from __future__ import annotations

import contextlib
import json
import urllib.parse
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import urllib3

from cloudide.offline.stack import OfflineAws

_PLAYED_STS = "https://sts.amazonaws.com/"
_IDENTITY = """<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
<GetCallerIdentityResult><Arn>{arn}</Arn><UserId>AROAOFFLINE:{task}</UserId><Account>{account}</Account>
</GetCallerIdentityResult><ResponseMetadata><RequestId>offline</RequestId></ResponseMetadata>
</GetCallerIdentityResponse>"""


class TaskReporter:
    """Reports as one task's usage monitor would, through the deployed function; returns its answer.
    Its proofs are answered only while :func:`played_sts` is in effect."""

    def __init__(self, aws: OfflineAws, task_arn: str) -> None:
        assert aws.stack is not None, "deploy the template first"
        lambda_client: Any = aws.client("lambda")
        self._lambda = lambda_client
        self._function = aws.stack.physical_id("UsageReportFunction")
        configuration = lambda_client.get_function_configuration(FunctionName=self._function)
        environment = configuration["Environment"]
        self._task_role_arn = environment["Variables"]["TASK_ROLE_ARN"]
        self._task_id = task_arn.rsplit("/", 1)[-1]
        self._sequence = 0

    def report(
        self,
        *,
        clients: int,
        input_age: float | None = None,
        work_age: float | None = None,
        working: bool = False,
        detached: float | None = None,
    ) -> dict[str, Any]:
        self._sequence += 1
        return self.send(
            {
                "clients": clients,
                "inputAgeSeconds": input_age,
                "workAgeSeconds": work_age,
                "working": working,
                "detachedSeconds": detached,
                "sequence": self._sequence,
            }
        )

    def send(self, usage: dict[str, Any]) -> dict[str, Any]:
        """One report's `usage` as the monitor builds it (usage_monitor.usage.Usage.payload)."""
        role = urllib.parse.quote(self._task_role_arn, safe="")
        proof = f"{_PLAYED_STS}?Action=GetCallerIdentity&Version=2011-06-15&X-Amz-Credential={self._task_id}&Role={role}"
        reply = self._lambda.invoke(
            FunctionName=self._function,
            Payload=json.dumps({"callerIdentityUrl": proof, "usage": usage}).encode(),
        )
        answer = json.loads(reply["Payload"].read())
        assert "FunctionError" not in reply, answer
        return dict(answer)


@contextlib.contextmanager
def played_sts() -> Iterator[None]:
    """Answer TaskReporter proofs as STS would, for as long as this is in effect (one at a time)."""
    original = urllib3.PoolManager.request

    def request(pool: urllib3.PoolManager, method: str, url: str, **options: Any) -> Any:
        if not url.startswith(_PLAYED_STS):
            return original(pool, method, url, **options)
        query = parse_qs(urlsplit(url).query)
        task, (partition, account, role) = query["X-Amz-Credential"][0], _role_parts(query["Role"][0])
        arn = f"arn:{partition}:sts::{account}:assumed-role/{role}/{task}"
        return urllib3.HTTPResponse(
            body=_IDENTITY.format(arn=arn, task=task, account=account).encode(), status=200
        )

    urllib3.PoolManager.request = request  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        urllib3.PoolManager.request = original  # type: ignore[method-assign]


def _role_parts(role_arn: str) -> tuple[str, str, str]:
    """(partition, account, role name) of `arn:<partition>:iam::<account>:role/<path/>name`."""
    _, partition, _, _, account, resource = role_arn.split(":", 5)
    return partition, account, resource.rsplit("/", 1)[-1]
