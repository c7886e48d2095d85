"""SSM ``TerminateSession`` on the local AWS. moto has none (NotImplementedError); this one ends the exec
session the local stack's SSM-protocol peer runs, as the service ends the session in the exec agent.

The local stack registers its peer's ``terminate`` with :func:`set_terminator`; without one (the API
tests, whose ExecuteCommand hands out unreachable sessions) the call is answered and recorded only.
Delete when moto implements TerminateSession.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Terminator = Callable[[str], bool]
"""exec session id -> whether a live session was ended."""

SESSION_ID = re.compile(r"[A-Za-z0-9._:/=+@-]{1,96}")
"""TerminateSession's SessionId constraint in the SSM API model (length 1-96)."""

terminated: list[str] = []
"""Every SessionId TerminateSession was called with, oldest first (for tests to check)."""

_terminator: Terminator | None = None


def set_terminator(terminator: Terminator | None) -> None:
    """Route TerminateSession to ``terminator`` (the local peer), or back to recording only."""
    global _terminator
    _terminator = terminator


def fix_ssm_terminate_session() -> None:
    """Answer TerminateSession as SSM does: ``{"SessionId": id}``, also for a session already ended."""
    from moto.core.responses import ActionResult
    from moto.ssm.exceptions import ValidationException
    from moto.ssm.responses import SimpleSystemManagerResponse

    def terminate_session(self: Any) -> Any:
        session_id = str(self._get_param("SessionId") or "")
        if not SESSION_ID.fullmatch(session_id):
            raise ValidationException(
                "1 validation error detected: Value at 'sessionId' failed to satisfy constraint"
            )
        terminated.append(session_id)
        if _terminator is not None:
            _terminator(session_id)
        return ActionResult({"SessionId": session_id})

    SimpleSystemManagerResponse.terminate_session = terminate_session  # type: ignore[attr-defined]
