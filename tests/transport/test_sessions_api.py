"""The terminal clients' calls to the REST API: connect and read. The token passes through
unchanged, refusals keep their meaning, and nothing a client does reports the session as in use."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cloudide.transport.client import ExecCredentials
from cloudide.transport.gateway import Gateway
from cloudide.transport.gateway_hub import HubLimits
from cloudide.transport.peer import LocalPeer
from cloudide.transport.sessions_api import ApiRejected, ApiUnavailable, SessionsApi
from tests.transport.browser import SHELL, SHELL_ENV, FakeBrowser, run
from tests.transport.stub_api import Answer, Request, stub_api

CREDENTIALS = {"sessionId": "ecs-execute-command-1", "streamUrl": "wss://example/v1/x", "tokenValue": "tv"}


def _connect(api_url: str, session_id: str = "s-1", token: str = "user-token") -> ExecCredentials:
    async def connect() -> ExecCredentials:
        return await SessionsApi(api_url, timeout_s=5).connector(session_id, token)()

    return asyncio.run(connect())


def _exec_session(peer: LocalPeer) -> Answer:
    return 200, peer.new_session(SHELL, env=SHELL_ENV).to_json()


def test_connect_posts_with_the_users_bearer_token_and_returns_the_exec_session() -> None:
    with stub_api(lambda request: (200, CREDENTIALS)) as (url, requests):
        credentials = _connect(f"{url}/prod/")
    assert credentials == ExecCredentials("ecs-execute-command-1", "wss://example/v1/x", "tv")
    assert requests == [Request("POST", "/prod/sessions/s-1/connect", "Bearer user-token")]
    assert requests[0].body == {}


def test_each_reconnect_names_the_exec_session_it_replaces() -> None:
    issued = iter(range(1, 10))

    def answer(request: Request) -> Answer:
        return 200, {**CREDENTIALS, "sessionId": f"ecs-execute-command-{next(issued)}"}

    async def connect_three_times(url: str) -> None:
        connect = SessionsApi(url, timeout_s=5).connector("s-1", "user-token")
        for _ in range(3):
            await connect()

    with stub_api(answer) as (url, requests):
        asyncio.run(connect_three_times(url))
    assert [r.body for r in requests] == [
        {},
        {"replaces": "ecs-execute-command-1"},
        {"replaces": "ecs-execute-command-2"},
    ]


def test_an_access_check_reads_the_session_and_opens_no_exec_session() -> None:
    async def check(url: str) -> None:
        await SessionsApi(url, timeout_s=5).reader("s-1", "user-token")()

    with stub_api(lambda request: (200, {"sessionId": "s-1"})) as (url, requests):
        asyncio.run(check(url))
    assert requests == [Request("GET", "/sessions/s-1", "Bearer user-token")]


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (401, {"message": "Unauthorized"}, "Unauthorized"),
        (403, {"message": "session s-1 belongs to someone else"}, "session s-1 belongs to someone else"),
        (404, {"message": "no session s-1"}, "no session s-1"),
        (409, b"", "Conflict"),  # no body: the reason phrase
    ],
    ids=["401", "403", "404", "409-without-body"],
)
def test_a_4xx_is_a_refusal_with_the_apis_message(status: int, body: Any, message: str) -> None:
    with stub_api(lambda request: (status, body)) as (url, _), pytest.raises(ApiRejected) as refused:
        _connect(url)
    assert (refused.value.status, refused.value.message, refused.value.close_code) == (
        status,
        message,
        4000 + status,
    )


@pytest.mark.parametrize(
    "answer",
    [(502, {"message": "Internal server error"}), (200, b"<html>"), (200, {"sessionId": "x"}), (200, [1])],
    ids=["5xx", "not-json", "missing-keys", "not-an-object"],
)
def test_a_server_error_or_unusable_answer_is_worth_retrying(answer: Answer) -> None:
    with stub_api(lambda request: answer) as (url, _), pytest.raises(ApiUnavailable):
        _connect(url)


def test_an_unreachable_api_is_worth_retrying() -> None:
    with stub_api(lambda request: (200, CREDENTIALS)) as (url, _):
        pass  # the server is gone once the block ends
    with pytest.raises(ApiUnavailable, match="unreachable"):
        _connect(url)


def test_the_gateway_relays_through_the_api_and_shows_its_refusals_to_the_browser() -> None:
    async def scenario() -> None:
        async with LocalPeer() as peer:

            def answer(request: Request) -> Answer:
                if request.authorization != "Bearer alice":
                    return 404, {"message": "Session not found"}
                return _exec_session(peer)

            with stub_api(answer) as (url, _):
                factory = SessionsApi(url).connector
                async with Gateway(factory, limits=HubLimits(linger_s=0.1)) as gateway:
                    async with FakeBrowser.open(gateway, token="mallory") as mallory:
                        assert await mallory.closed() == (4404, "Session not found")
                    async with FakeBrowser.open(gateway, token="alice") as alice:
                        await alice.type("echo via-$((4*4))-api\r")
                        await alice.wait_output("via-16-api")

    run(scenario())


def test_a_user_typing_and_reading_through_the_gateway_and_a_reconnect_call_only_connect() -> None:
    """Use is the task's to report: the gateway tells the API nothing while a user types, output
    flows or the channel is replaced, so none of it moves the session's idle deadline."""

    async def scenario() -> list[Request]:
        async with LocalPeer() as peer:
            with stub_api(lambda request: _exec_session(peer)) as (url, requests):
                api = SessionsApi(url)
                gateway = Gateway(api.connector, reader_factory=api.reader, limits=HubLimits(linger_s=0.1))
                async with gateway, FakeBrowser.open(gateway, token="alice") as alice:
                    await alice.type("echo typed-$((6*7))\r")
                    await alice.wait_output("typed-42")
                    assert peer.cut() == 1  # as ECS Exec cuts an idle channel
                    await alice.type("echo after-$((5*5))-cut\r")
                    await alice.wait_output("after-25-cut")
                    await alice.type("seq 1 2000; echo burst-$((1+1))-done\r")  # a burst of output
                    await alice.wait_output("burst-2-done")
                return list(requests)

    requests = run(scenario())
    assert [(r.method, r.path) for r in requests] == [("POST", "/sessions/s-1/connect")] * 2
