"""`cloudide local --persist`: workspaces and session history outlive a restart of the stack."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.local_stack import local_stack
from tests.e2e.scenarios import first_terminal
from tests.support import require_tool


def test_a_restarted_stack_keeps_workspaces_and_session_history(tmp_path: Path) -> None:
    require_tool("bwrap", "the local stack's task sandbox")
    with local_stack(tmp_path, "--persist") as first:
        ended = first_terminal(first, project="kept-across-restarts")

    with local_stack(tmp_path, "--persist") as second:
        history = {s["sessionId"]: s for s in second.call("GET", "/sessions")["sessions"]}
        assert history[ended["sessionId"]]["status"] == "STOPPED"
        assert history[ended["sessionId"]]["statusReason"] == ended["statusReason"]
        assert second.workspace_object(ended, "note.txt") == b"hello\n"
        assert "restored 1 objects and 1 session records" in second.output


def test_without_persist_a_restart_starts_empty(tmp_path: Path) -> None:
    require_tool("bwrap", "the local stack's task sandbox")
    with local_stack(tmp_path) as first:
        first.start_session(projectId="forgotten")

    with local_stack(tmp_path) as second:
        assert second.call("GET", "/sessions")["sessions"] == []
