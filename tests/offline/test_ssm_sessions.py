"""SSM TerminateSession on the local AWS: answered as SSM answers it, and routed to the exec peer."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from cloudide.offline import ssm_sessions
from cloudide.offline.stack import OfflineAws


def test_terminate_session_reaches_the_registered_terminator_and_answers_the_id(aws: OfflineAws) -> None:
    ended: list[str] = []

    def terminate(session_id: str) -> bool:
        ended.append(session_id)
        return True

    ssm: Any = aws.client("ssm")
    ssm_sessions.set_terminator(terminate)
    try:
        answer = ssm.terminate_session(SessionId="ecs-execute-command-0123abcd")
    finally:
        ssm_sessions.set_terminator(None)

    assert answer["SessionId"] == "ecs-execute-command-0123abcd"
    assert ended == ["ecs-execute-command-0123abcd"]
    assert ssm_sessions.terminated[-1] == "ecs-execute-command-0123abcd"


def test_terminate_session_refuses_an_id_ssm_would_refuse(aws: OfflineAws) -> None:
    ssm: Any = aws.client("ssm")
    with pytest.raises(ClientError) as refused:
        ssm.terminate_session(SessionId="x" * 97)
    assert refused.value.response["Error"]["Code"] == "ValidationException"
