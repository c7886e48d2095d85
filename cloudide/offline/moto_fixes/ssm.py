"""Correction of moto's SSM: TerminateSession. The patch lives with the local stack's session registry
(`cloudide/offline/ssm_sessions.py`), which routes the call to the local SSM-protocol peer."""

from __future__ import annotations

from cloudide.offline import ssm_sessions
from cloudide.offline.moto_fixes import probing
from cloudide.offline.moto_fixes.correction import Correction


def _probe_terminate_session() -> None:
    answer = probing.client("ssm").terminate_session(SessionId="ecs-execute-command-probe")
    assert answer["SessionId"] == "ecs-execute-command-probe", answer


TERMINATE_SESSION = Correction(
    name="ssm-terminate-session",
    moto="has no TerminateSession (NotImplementedError)",
    aws="ends the session and answers `{SessionId}`, also for one already ended; an id outside the API"
    " model's pattern is a ValidationException",
    install=ssm_sessions.fix_ssm_terminate_session,
    probe=_probe_terminate_session,
)
