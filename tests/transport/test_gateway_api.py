"""The gateway's connect call to the REST API: the token passes through, refusals keep their meaning."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cloudide.transport.client import ExecCredentials
from cloudide.transport.gateway import Gateway
from cloudide.transport.gateway_api import ApiUnavailable, ConnectRejected, api_connector_factory
from cloudide.transport.gateway_hub import HubLimits
from cloudide.transport.peer import LocalPeer
from tests.transport.browser import SHELL, SHELL_ENV, FakeBrowser, run
from tests.transport.stub_api import Answer, Request, stub_api

CREDENTIALS = {"sessionId": "ecs-execute-command-1", "streamUrl": "wss://example/v1/x", "tokenValue": "tv"}


def _connect(api_url: str, session_id: str = "s-1", token: str = "user-token") -> ExecCredentials:
    async def connect() -> ExecCredentials:
        return await api_connector_factory(api_url, timeout_s=5)(session_id, token)()

    return asyncio.run(connect())


def test_connect_posts_with_the_users_bearer_token_and_returns_the_exec_session() -> None:
    with stub_api(lambda request: (200, CREDENTIALS)) as (url, requests):
        credentials = _connect(f"{url}/prod/")
    assert credentials == ExecCredentials("ecs-execute-command-1", "wss://example/v1/x", "tv")
    assert requests == [Request("POST", "/prod/sessions/s-1/connect", "Bearer user-token")]


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
    with stub_api(lambda request: (status, body)) as (url, _), pytest.raises(ConnectRejected) as refused:
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
                credentials = peer.new_session(SHELL, env=SHELL_ENV)
                return 200, {
                    "sessionId": credentials.session_id,
                    "streamUrl": credentials.stream_url,
                    "tokenValue": credentials.token_value,
                }

            with stub_api(answer) as (url, _):
                factory = api_connector_factory(url)
                async with Gateway(factory, limits=HubLimits(linger_s=0.1)) as gateway:
                    async with FakeBrowser.open(gateway, token="mallory") as mallory:
                        assert await mallory.closed() == (4404, "Session not found")
                    async with FakeBrowser.open(gateway, token="alice") as alice:
                        await alice.type("echo via-$((4*4))-api\r")
                        await alice.wait_output("via-16-api")

    run(scenario())
