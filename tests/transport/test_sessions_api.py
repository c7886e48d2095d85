"""The terminal clients' calls to the REST API: connect and activity. The token passes through
unchanged, refusals keep their meaning, and activity is reported while, and only while, a session is
in use."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cloudide.transport.client import ExecCredentials
from cloudide.transport.gateway import Gateway
from cloudide.transport.gateway_hub import HubLimits
from cloudide.transport.peer import LocalPeer
from cloudide.transport.sessions_api import ActivityReporter, ApiRejected, ApiUnavailable, SessionsApi
from tests.transport.browser import SHELL, SHELL_ENV, FakeBrowser, eventually, run
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


def test_activity_posts_with_the_users_token_and_a_refusal_names_the_call() -> None:
    answers = iter([(202, {"sessionId": "s-1"}), (409, {"message": "session is STOPPED: idle"}), (429, {})])

    async def three_reports(url: str) -> list[BaseException | None]:
        report = SessionsApi(url, timeout_s=5).activity("s-1", "user-token")
        outcomes: list[BaseException | None] = []
        for _ in range(3):
            try:
                await report()
            except (ApiRejected, ApiUnavailable) as error:
                outcomes.append(error)
            else:
                outcomes.append(None)
        return outcomes

    with stub_api(lambda request: next(answers)) as (url, requests):
        accepted, refused, throttled = asyncio.run(three_reports(url))

    assert accepted is None
    assert isinstance(refused, ApiRejected) and str(refused) == (
        "activity returned HTTP 409: session is STOPPED: idle"
    )
    assert isinstance(throttled, ApiUnavailable)  # a 429 is worth retrying
    assert requests == [Request("POST", "/sessions/s-1/activity", "Bearer user-token")] * 3


class DrivenIntervals:
    """A reporter's ``sleep`` that returns only when the test ends the interval."""

    def __init__(self) -> None:
        self._ends: asyncio.Queue[None] = asyncio.Queue()
        self.waiting = asyncio.Event()

    async def sleep(self, _seconds: float) -> None:
        self.waiting.set()
        await self._ends.get()

    async def end_interval(self) -> None:
        """End the current interval and wait until the reporter has dealt with it (and sleeps again)."""
        await self.waiting.wait()
        self.waiting.clear()
        self._ends.put_nowait(None)
        await self.waiting.wait()


def test_the_reporter_sends_one_report_per_busy_interval_and_none_when_idle() -> None:
    async def scenario() -> list[int]:
        reports = 0

        async def report() -> None:
            nonlocal reports
            reports += 1

        intervals = DrivenIntervals()
        reporter = ActivityReporter(report, interval_s=60, sleep=intervals.sleep)
        reporter.start()
        seen = []
        for _ in range(50):  # a burst of keystrokes and output within one interval
            reporter.touch()
        await intervals.end_interval()
        seen.append(reports)
        await intervals.end_interval()  # nothing happened: nothing is reported
        seen.append(reports)
        reporter.touch()
        await intervals.end_interval()
        seen.append(reports)
        await reporter.stop()
        return seen

    assert asyncio.run(scenario()) == [1, 1, 2]


def test_a_failed_report_does_not_end_reporting() -> None:
    async def scenario() -> tuple[int, int]:
        attempts = 0

        async def flaky() -> None:
            nonlocal attempts
            attempts += 1
            if attempts <= 2:
                raise ApiUnavailable("API unreachable: connection refused")

        intervals = DrivenIntervals()
        reporter = ActivityReporter(flaky, interval_s=60, sleep=intervals.sleep)
        reporter.start()
        for _ in range(4):
            reporter.touch()
            await intervals.end_interval()
        assert reporter.running
        await reporter.stop()
        return attempts, reporter.reports

    assert asyncio.run(scenario()) == (4, 2)  # two failures, then the reports went on


def test_the_gateway_reports_a_writers_typing_and_the_sessions_output_but_not_an_idle_session() -> None:
    async def scenario() -> list[Request]:
        async with LocalPeer() as peer:

            def answer(request: Request) -> Answer:
                return _exec_session(peer) if request.path.endswith("/connect") else (202, {})

            with stub_api(answer) as (url, requests):
                api = SessionsApi(url)
                limits = HubLimits(linger_s=0.1, activity_interval_s=0.2)
                gateway = Gateway(api.connector, activity_factory=api.activity, limits=limits)
                async with gateway, FakeBrowser.open(gateway, token="alice") as alice:
                    await alice.type("echo typed-$((6*7))\r")
                    await alice.wait_output("typed-42")
                    await eventually(lambda: any(r.path.endswith("/activity") for r in requests))
                    await asyncio.sleep(0.5)  # the prompt after the output may earn one more report
                    reported = len(requests)
                    await asyncio.sleep(0.6)  # three intervals with no typing and no output
                    assert len(requests) == reported, requests[reported:]
                    return list(requests)

    requests = run(scenario())
    activity = [r for r in requests if r.path.endswith("/activity")]
    assert activity and all(r == Request("POST", "/sessions/s-1/activity", "Bearer alice") for r in activity)
