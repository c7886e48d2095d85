"""The report: one synchronous invocation of the control plane's usage function, as this task.

The task proves which task it is the way the sync agent does for its credentials
(workspace_sync.credentials): a presigned ``sts:GetCallerIdentity`` URL signed with the task role's
credentials, never the credentials themselves. No other task and no user can sign as this task's role
session, so no one can report use for a session that is not theirs.

Request: ``{"callerIdentityUrl": url, "usage": Usage.payload(sequence)}``. Answer: ``{"policy":
{"idlePolicy", "idleTimeoutSeconds", "disconnectGraceSeconds", "reportSeconds"}, "idleSecondsLeft",
"idleDeadline", "status"}``, or ``{"error", "message"}``. An answer out of that shape is a failed
report, never a crash. Durations are the control plane's seconds; with a time `rate` other than 1 (the
local stack's compressed clock) each is `rate` of them per second of this task's clock.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from workspace_sync.credentials import PROOF_SECONDS

from .schedule import IdlePolicy, Policy
from .usage import Usage

ENDED_STATUSES = frozenset({"STOPPING", "STOPPED", "FAILED"})
ANSWER_LIMIT = 64 * 1024


class ReportFailed(RuntimeError):
    """The control plane refused the report or answered out of contract; the message says which."""


@dataclass(frozen=True)
class Answer:
    policy: Policy
    idle_deadline: float | None  # epoch seconds of this task's clock
    status: str

    @property
    def live(self) -> bool:
        return self.status not in ENDED_STATUSES

    @classmethod
    def parse(cls, body: Any, *, now: float, rate: float = 1.0) -> Answer:
        if not isinstance(body, dict):
            raise ReportFailed(f"answer is not an object: {str(body)[:200]}")
        if "error" in body:
            raise ReportFailed(f"report refused: {body.get('error')}: {str(body.get('message'))[:300]}")
        policy = body.get("policy")
        status = body.get("status")
        if not isinstance(policy, dict) or not isinstance(status, str):
            raise ReportFailed("answer has no policy object or no status")
        try:
            idle_policy = IdlePolicy(policy["idlePolicy"])
        except (KeyError, ValueError) as error:
            raise ReportFailed(f"answer's policy.idlePolicy is not work or input: {error}") from None

        def seconds(name: str, low: int, value: Any) -> float:
            if type(value) is not int or value < low:
                raise ReportFailed(f"answer's {name} is not an integer >= {low}: {value!r}")
            return value / rate

        def limit(name: str, low: int) -> float:
            return seconds(f"policy.{name}", low, policy.get(name))

        left = body.get("idleSecondsLeft")
        idle_deadline = None if left is None else now + seconds("idleSecondsLeft", 0, left)
        return cls(
            policy=Policy(
                idle_policy=idle_policy,
                idle_timeout_seconds=limit("idleTimeoutSeconds", 1),
                disconnect_grace_seconds=limit("disconnectGraceSeconds", 0),
                report_seconds=limit("reportSeconds", 1),
            ),
            idle_deadline=idle_deadline,
            status=status,
        )


def caller_identity_proof(sts: Any) -> str:
    """Who this task is, as a URL only STS can answer, good for PROOF_SECONDS."""
    return str(sts.generate_presigned_url("get_caller_identity", Params={}, ExpiresIn=PROOF_SECONDS))


class ControlPlane:
    def __init__(
        self,
        function_name: str,
        *,
        lambda_client: Any,
        sts_client: Any,
        rate: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._function = function_name
        self._lambda = lambda_client
        self._sts = sts_client
        self._rate = rate
        self._clock = clock

    def report(self, usage: Usage, sequence: int) -> Answer:
        request = {
            "callerIdentityUrl": caller_identity_proof(self._sts),
            "usage": usage.payload(sequence, rate=self._rate),
        }
        reply = self._lambda.invoke(FunctionName=self._function, Payload=json.dumps(request).encode())
        raw = reply["Payload"].read(ANSWER_LIMIT + 1)
        if reply.get("FunctionError"):
            raise ReportFailed(f"usage function failed ({reply['FunctionError']}): {raw[:300]!r}")
        if len(raw) > ANSWER_LIMIT:
            raise ReportFailed(f"answer is larger than {ANSWER_LIMIT} bytes")
        try:
            body = json.loads(raw)
        except ValueError:
            raise ReportFailed(f"answer is not JSON: {raw[:200]!r}") from None
        return Answer.parse(body, now=self._clock(), rate=self._rate)
