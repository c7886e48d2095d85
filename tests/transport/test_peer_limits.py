"""The local peer is as strict as ECS Exec about what a session costs: a worker per session, a short-lived
token, and a dropped client that does not free its session (docs/ecs-exec-sessions.md)."""

from __future__ import annotations

import asyncio
import tracemalloc

import pytest

from cloudide.transport.client import ConnectFailed, ExecCredentials, TerminalConnection, Timeouts
from cloudide.transport.peer import ABANDONED_TIMEOUT_S, SESSION_LIMIT, TOKEN_TTL_S, LocalPeer
from tests.transport.browser import eventually
from tests.transport.test_client_peer import BASH, PROMPT_ENV, WAIT, Screen

pytestmark = pytest.mark.timeout(60)


class DrivenClock:
    """The peer's clock, moved by the test instead of waited for."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def once(credentials: ExecCredentials) -> TerminalConnection:
    async def connect() -> ExecCredentials:
        return credentials

    return TerminalConnection(connect, timeouts=Timeouts(first_message=0.2))


@pytest.mark.stand_in_rule("exec-session-limit")
async def test_a_session_over_the_targets_limit_waits_silently_until_one_is_terminated() -> None:
    async with LocalPeer() as peer:
        first, second, third = (peer.new_session(BASH, env=PROMPT_ENV, target="task-1") for _ in range(3))
        other_task = peer.new_session(BASH, env=PROMPT_ENV, target="task-2")
        assert SESSION_LIMIT == 2

        async with once(third) as waiting, once(other_task) as elsewhere:
            # Another task's container has its own workers
            await Screen(elsewhere).wait_for(r"\$ ")
            # The third session of task-1 is connected but gets no shell while two hold the workers
            await eventually(lambda: peer.waiting() == [third.session_id])

            assert peer.terminate(first.session_id)

            await Screen(waiting).wait_for(r"\$ ")
            assert peer.waiting() == []
            assert peer.live_sessions("task-1") == [second.session_id, third.session_id]
        assert not peer.terminate(first.session_id)  # already gone


@pytest.mark.stand_in_rule("exec-dropped-session-lingers")
async def test_a_dropped_client_keeps_its_session_until_the_idle_timeout() -> None:
    clock = DrivenClock()
    async with LocalPeer(clock=clock) as peer:
        credentials = peer.new_session(BASH, env=PROMPT_ENV, target="task-1")
        async with once(credentials) as connection:
            await Screen(connection).wait_for(r"\$ ")
            assert peer.cut() == 1
            await eventually(lambda: peer.state(credentials.session_id) == "abandoned")
        assert peer.live_sessions("task-1") == [credentials.session_id]

        clock.now += ABANDONED_TIMEOUT_S - 1
        assert peer.live_sessions("task-1") == [credentials.session_id]
        clock.now += 1
        assert peer.live_sessions("task-1") == []


@pytest.mark.stand_in_rule("exec-token-expiry")
async def test_a_token_not_used_in_time_is_refused_and_its_session_freed() -> None:
    clock = DrivenClock()
    async with LocalPeer(clock=clock) as peer:
        late = peer.new_session(BASH, env=PROMPT_ENV)
        clock.now += TOKEN_TTL_S - 1
        in_time = peer.new_session(BASH, env=PROMPT_ENV)
        clock.now += 1

        assert peer.live_sessions() == [in_time.session_id]
        async with once(late) as connection:
            with pytest.raises(ConnectFailed, match="closed before the agent answered"):
                await asyncio.wait_for(connection.recv(), 30)
        async with once(in_time) as connection:
            await Screen(connection).wait_for(r"\$ ")


@pytest.mark.stand_in_rule("exec-token-expiry")
async def test_unused_tokens_are_freed_once_they_expire() -> None:
    clock = DrivenClock()
    async with LocalPeer(clock=clock) as peer:
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(1000):
                peer.new_session(BASH)
            held = tracemalloc.get_traced_memory()[0] - before
            clock.now += TOKEN_TTL_S
            assert peer.sweep() == 1000
            after = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert peer.live_sessions() == []
        assert held > 500_000  # each unused session is held while its token is good ...
        assert after < held / 5  # ... and given back when it expires (the dict keeps its capacity)


async def test_the_sweeper_frees_expired_tokens_without_new_traffic() -> None:
    clock = DrivenClock()
    async with LocalPeer(clock=clock) as peer:
        unused = peer.new_session(BASH)
        clock.now += TOKEN_TTL_S
        await eventually(lambda: peer.state(unused.session_id) is None, timeout_s=WAIT)
