"""The browser gateway over a real PTY behind a LocalPeer: what viewers see, what they may do, its bounds."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from cloudide.transport.client import Connector, ExecCredentials
from cloudide.transport.gateway import Gateway
from cloudide.transport.gateway_hub import HubLimits, Scrollback, Viewer, control
from cloudide.transport.peer import LocalPeer
from cloudide.transport.sessions_api import ApiRejected, ConnectorFactory, SessionRead
from tests.transport.browser import (
    FakeBrowser,
    eventually,
    peer_factory,
    run,
    running_gateway,
    session_reader,
)


def test_a_viewer_types_into_the_shell_and_reads_its_output() -> None:
    async def scenario() -> None:
        async with running_gateway() as (gateway, _), FakeBrowser.open(gateway, "s-1") as browser:
            await browser.wait_control(type="state", state="open")
            await browser.type("echo hel''lo-$((6*7))\r")
            await browser.wait_output("hello-42")
            assert browser.controls[0] == {"type": "welcome", "sessionId": "s-1", "readOnly": False}

    run(scenario())


def test_a_read_only_viewer_sees_the_output_and_can_neither_type_nor_resize(tmp_path: Path) -> None:
    marker = tmp_path / "typed-by-the-read-only-viewer"

    async def scenario() -> None:
        async with running_gateway() as (gateway, _), FakeBrowser.open(gateway, rows=30, cols=100) as writer:
            await writer.wait_control(type="state", state="open")
            async with FakeBrowser.open(gateway, mode="read") as reader:
                await reader.wait_control(type="welcome", readOnly=True)
                await writer.type("echo shared-$((6*7))\r")
                await reader.wait_output("shared-42")
                await reader.type(f"touch {marker}\r")
                await reader.resize(10, 20)
            hub = gateway.hub("s-1")
            assert hub is not None
            await eventually(lambda: len(hub.viewers) == 1)  # the reader's messages were all handled
            await writer.type(
                f"stty size; test -e {marker} && echo marker-ex''ists || echo marker-ab''sent\r"
            )
            await writer.wait_output("marker-absent")
            assert b"30 100" in writer.output

    run(scenario())
    assert not marker.exists()


def test_a_writable_viewer_resizes_the_terminal() -> None:
    async def scenario() -> None:
        async with running_gateway() as (gateway, _), FakeBrowser.open(gateway) as browser:
            await browser.wait_control(type="state", state="open")
            await browser.resize(33, 111)
            await browser.type("stty size\r")
            await browser.wait_output("33 111")

    run(scenario())


def test_a_late_viewer_first_gets_a_resync_with_the_recent_output() -> None:
    async def scenario() -> None:
        async with running_gateway() as (gateway, _), FakeBrowser.open(gateway) as first:
            await first.wait_control(type="state", state="open")
            await first.type("echo before-$((1+1))-join\r")
            await first.wait_output("before-2-join")
            async with FakeBrowser.open(gateway, mode="read") as late:
                await late.wait_output("before-2-join")
                assert [c["type"] for c in late.controls[:2]] == ["welcome", "resync"]

    run(scenario())


def test_all_viewers_of_a_session_share_one_upstream_and_a_known_token_costs_no_connect_call() -> None:
    calls: list[tuple[str, str]] = []

    async def scenario() -> None:
        async with (
            running_gateway(lambda peer: peer_factory(peer, calls=calls)) as (gateway, _),
            FakeBrowser.open(gateway, token="alice") as one,
            FakeBrowser.open(gateway, token="alice") as two,
        ):
            await one.type("echo from-$((2*3))-one\r")
            await two.wait_output("from-6-one")
            assert calls == [("s-1", "alice")]
            async with FakeBrowser.open(gateway, token="bob", mode="read") as three:
                await three.wait_control(type="welcome")
            assert calls == [("s-1", "alice"), ("s-1", "bob")]

    run(scenario())


def _refusing_factory(refused: dict[str, ApiRejected]) -> Any:
    def wrap(peer: LocalPeer) -> ConnectorFactory:
        allowed = peer_factory(peer)

        def factory(session_id: str, token: str) -> Connector:
            async def connect_() -> ExecCredentials:
                if token in refused:
                    raise refused[token]
                return await allowed(session_id, token)()

            return connect_

        return factory

    return wrap


@pytest.mark.parametrize(
    ("status", "code"), [(401, 4401), (403, 4403), (404, 4404), (409, 4409)], ids=["401", "403", "404", "409"]
)
def test_an_api_refusal_closes_the_browser_with_the_status_and_message(status: int, code: int) -> None:
    factory = _refusing_factory({"bad": ApiRejected(status, "session s-1 is not yours")})

    async def scenario() -> None:
        async with (
            running_gateway(factory) as (gateway, _),
            FakeBrowser.open(gateway, token="bad") as browser,
        ):
            assert await browser.closed() == (code, "session s-1 is not yours")
        assert gateway.hub("s-1") is None

    run(scenario())


def test_a_refused_token_cannot_join_a_session_another_viewer_has_open() -> None:
    factory = _refusing_factory({"mallory": ApiRejected(403, "forbidden")})

    async def scenario() -> None:
        async with (
            running_gateway(factory) as (gateway, _),
            FakeBrowser.open(gateway, token="alice") as alice,
        ):
            await alice.wait_control(type="state", state="open")
            async with FakeBrowser.open(gateway, token="mallory", mode="read") as mallory:
                assert await mallory.closed() == (4403, "forbidden")
                await alice.type("echo secret-$((5*5))\r")
                await alice.wait_output("secret-25")
                assert b"secret-25" not in mallory.output

    run(scenario())


@pytest.mark.parametrize(
    "first",
    [
        b"binary first",
        "not json",
        json.dumps({"type": "resize", "rows": 1, "cols": 1}),
        '{"type":"auth","token":""}',
    ],
    ids=["binary", "not-json", "not-auth", "empty-token"],
)
def test_the_first_message_must_authenticate(first: str | bytes) -> None:
    async def scenario() -> None:
        async with running_gateway() as (gateway, _), FakeBrowser.open(gateway, first=first) as browser:
            code, _reason = await browser.closed()
            assert code == 4400

    run(scenario())


def test_a_browser_that_never_authenticates_is_closed() -> None:
    async def scenario() -> None:
        async with (
            running_gateway(auth_timeout_s=0.2) as (gateway, _),
            connect(f"ws://127.0.0.1:{gateway.port}/sessions/s-1/terminal") as websocket,
        ):
            await asyncio.wait_for(websocket.wait_closed(), 5)
            assert websocket.close_code == 4408

    run(scenario())


def test_the_upstream_reconnects_without_the_browser_noticing_more_than_a_state_change() -> None:
    calls: list[tuple[str, str]] = []

    async def scenario() -> None:
        async with (
            running_gateway(lambda peer: peer_factory(peer, calls=calls)) as (gateway, peer),
            FakeBrowser.open(gateway) as browser,
        ):
            await browser.wait_control(type="state", state="open")
            assert peer.cut() == 1
            await browser.wait_control(type="state", state="reconnecting")
            await eventually(lambda: browser.controls[-1] == {"type": "state", "state": "open"})
            await browser.type("echo after-$((3*3))-cut\r")
            await browser.wait_output("after-9-cut")
            assert len(calls) == 2
            assert browser.websocket.close_code is None

    run(scenario())


def test_when_the_shell_exits_every_viewer_is_told_and_closed_normally() -> None:
    async def scenario() -> None:
        async with running_gateway() as (gateway, _), FakeBrowser.open(gateway) as writer:
            await writer.wait_control(type="state", state="open")
            async with FakeBrowser.open(gateway, mode="read") as reader:
                await reader.wait_control(type="state", state="open")
                await writer.type("exit\r")
                assert await writer.closed() == (1000, "session ended")
                assert await reader.closed() == (1000, "session ended")
                assert {"type": "state", "state": "closed"} in reader.controls
            await eventually(lambda: gateway.hub("s-1") is None)

    run(scenario())


def test_when_the_session_stops_every_viewer_is_told_why_before_the_close() -> None:
    reads: list[tuple[str, str]] = []
    stopped = session_reader({"status": "STOPPING", "statusReason": "idle for 30 min"}, reads)

    async def scenario() -> None:
        async with (
            running_gateway(reader_factory=stopped) as (gateway, _),
            FakeBrowser.open(gateway) as writer,
        ):
            await writer.wait_control(type="state", state="open")
            async with FakeBrowser.open(gateway, mode="read") as reader:
                await reader.wait_control(type="state", state="open")
                await writer.type("exit\r")  # the shell ends, as it does when the task is stopped
                for viewer in (writer, reader):
                    assert await viewer.closed() == (1000, "session ended")
                    assert viewer.controls[-1] == {
                        "type": "ended",
                        "status": "STOPPING",
                        "reason": "idle for 30 min",
                    }

    run(scenario())
    assert reads == [("s-1", "t-1")]  # one read for all viewers, with the token that opened the upstream


def test_when_the_session_cannot_be_read_at_its_end_viewers_are_still_closed_normally() -> None:
    def expired(session_id: str, token: str) -> SessionRead:
        async def read() -> dict[str, Any]:
            raise ApiRejected(401, "The incoming token has expired")

        return read

    async def scenario() -> None:
        async with (
            running_gateway(reader_factory=expired) as (gateway, _),
            FakeBrowser.open(gateway) as browser,
        ):
            await browser.wait_control(type="state", state="open")
            await browser.type("exit\r")
            assert await browser.closed() == (1000, "session ended")
            assert not [c for c in browser.controls if c["type"] == "ended"]

    run(scenario())


def test_when_a_reconnect_finds_the_session_stopped_every_viewer_is_told_why() -> None:
    reason = "no client attached for 5 min"
    stopped = session_reader({"status": "STOPPED", "statusReason": reason})

    def refused_after_the_first(peer: LocalPeer) -> ConnectorFactory:
        calls: list[tuple[str, str]] = []
        first = peer_factory(peer, calls=calls)

        def factory(session_id: str, token: str) -> Connector:
            async def connect() -> ExecCredentials:
                if calls:
                    raise ApiRejected(409, f"session is STOPPED, not READY: {reason}")
                return await first(session_id, token)()

            return connect

        return factory

    async def scenario() -> None:
        async with (
            running_gateway(refused_after_the_first, reader_factory=stopped) as (gateway, peer),
            FakeBrowser.open(gateway) as browser,
        ):
            await browser.wait_control(type="state", state="open")
            assert peer.cut() == 1  # a stopped task's channel drops: the reconnect learns why

            assert await browser.closed() == (4409, f"session is STOPPED, not READY: {reason}")
            assert {"type": "ended", "status": "STOPPED", "reason": reason} in browser.controls

    run(scenario())


# --- bounds -------------------------------------------------------------------------------------------


class _StalledSocket:
    """A viewer socket whose sends block until released, like a browser that stopped reading."""

    def __init__(self) -> None:
        self.sent: list[bytes | str] = []
        self.released = asyncio.Event()

    async def send(self, message: bytes | str) -> None:
        await self.released.wait()
        self.sent.append(message)


def test_a_slow_viewer_never_queues_more_than_its_budget_and_is_resynced() -> None:
    limits = HubLimits(viewer_backlog_bytes=16 * 1024, scrollback_bytes=8 * 1024)
    state_message = control("state", state="open")

    async def scenario() -> None:
        socket = _StalledSocket()
        socket.released.set()
        viewer = Viewer(socket, read_only=False, limits=limits)  # type: ignore[arg-type]
        scrollback = Scrollback(limits.scrollback_bytes)
        pump = asyncio.create_task(viewer.pump(scrollback, lambda: "open"))
        await eventually(lambda: socket.sent == [control("resync"), state_message])  # joined
        # Given a browser that stops reading while the pump is sending
        socket.released.clear()
        viewer.offer(b"stuck\n")
        await asyncio.sleep(0.01)
        # When 1 MB of output arrives against a 16 KiB budget
        for index in range(1000):
            chunk = f"line {index:04d} ".encode().ljust(1023, b".") + b"\n"
            scrollback.append(chunk)
            viewer.offer(chunk)
            assert viewer.backlog_bytes <= limits.viewer_backlog_bytes
        # Then, once it reads again, it gets a resync with the latest output, and nothing is left queued
        socket.released.set()
        await eventually(lambda: len(socket.sent) > 3 and socket.sent[-1] == state_message)
        pump.cancel()
        assert viewer.resyncs >= 1 and viewer.backlog_bytes == 0
        after_stall = socket.sent[2:]
        assert after_stall[:2] == [b"stuck\n", control("resync")]
        replay = after_stall[2]
        assert isinstance(replay, bytes) and len(replay) <= limits.scrollback_bytes
        assert replay.endswith(b"line 0999 " + b"." * 1013 + b"\n")

    run(scenario())


def test_a_viewer_whose_socket_stalls_past_the_send_timeout_is_given_up() -> None:
    async def scenario() -> None:
        socket = _StalledSocket()
        viewer = Viewer(socket, read_only=False, limits=HubLimits(send_timeout_s=0.1))  # type: ignore[arg-type]
        with pytest.raises(TimeoutError):
            await viewer.pump(Scrollback(1024), lambda: "open")

    run(scenario())


def test_the_scrollback_keeps_only_the_latest_bytes_from_a_line_start() -> None:
    scrollback = Scrollback(64 * 1024)
    for index in range(5000):
        scrollback.append(f"output line {index}\r\n".encode())
    replay = scrollback.snapshot()
    assert len(replay) <= 64 * 1024
    assert replay.endswith(b"output line 4999\r\n")
    assert replay.startswith(b"output line ")


# --- HTTP ---------------------------------------------------------------------------------------------


def _http_get(url: str) -> tuple[int, str, bytes]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


def test_the_page_and_its_assets_are_served_and_nothing_else(tmp_path: Path) -> None:
    node_modules = tmp_path / "node_modules"
    (node_modules / "@xterm/xterm/lib").mkdir(parents=True)
    (node_modules / "@xterm/xterm/lib/xterm.js").write_text("/* xterm */")

    async def scenario() -> None:
        async with running_gateway(node_modules=node_modules) as (gateway, _):
            get = lambda path: asyncio.to_thread(_http_get, gateway.url + path)  # noqa: E731
            status, content_type, body = await get("/")
            assert (status, content_type) == (200, "text/html; charset=utf-8")
            assert b'src="/vendor/xterm.js"' in body
            assert (await get("/vendor/xterm.js"))[::2] == (200, b"/* xterm */")
            assert (await get("/vendor/addon-fit.js"))[0] == 503  # not installed: says how to fix it
            assert (await get("/terminal.js"))[0] == 200
            for path in ("/nope", "/vendor/../gateway.py", "/static/index.html", "/%2e%2e/gateway.py"):
                assert (await get(path))[0] == 404, path
            with pytest.raises(InvalidStatus) as refused:
                async with connect(f"ws://127.0.0.1:{gateway.port}/elsewhere"):
                    pass
            assert refused.value.response.status_code == 404

    run(scenario())


def test_the_gateway_command_is_registered_with_its_options() -> None:
    import argparse

    from cloudide.transport import gateway

    parser = argparse.ArgumentParser()
    gateway.register(parser.add_subparsers())
    args = parser.parse_args(["gateway", "--api", "http://127.0.0.1:3000", "--port", "8081"])
    assert (args.api, args.port, args.host, args.func) == (
        "http://127.0.0.1:3000",
        8081,
        "127.0.0.1",
        gateway._run_command,
    )
    assert isinstance(Gateway, type)


def test_a_page_reload_reuses_the_upstream_and_an_unwatched_session_is_let_go() -> None:
    calls: list[tuple[str, str]] = []

    async def scenario() -> None:
        async with running_gateway(
            lambda peer: peer_factory(peer, calls=calls), limits=HubLimits(linger_s=0.5)
        ) as (gateway, _):
            async with FakeBrowser.open(gateway) as before:
                await before.type("echo before-$((2+2))-reload\r")
                await before.wait_output("before-4-reload")
            async with FakeBrowser.open(gateway) as after:  # within the linger: same shell, replayed
                await after.wait_output("before-4-reload")
            assert calls == [("s-1", "t-1")]
            await eventually(lambda: gateway.hub("s-1") is None, timeout_s=5)

    run(scenario())


@pytest.mark.parametrize("token", ["alice\r\nX-Injected: 1", "alice bob", "tab\there", "\x00"])
def test_a_malformed_token_is_refused_at_once_and_never_logged_or_echoed(
    token: str, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[tuple[str, str]] = []
    secret = token.split()[0] if token.split() else token

    async def scenario() -> None:
        async with (
            running_gateway(lambda peer: peer_factory(peer, calls=calls)) as (gateway, _),
            FakeBrowser.open(gateway, token=token) as browser,
        ):
            code, reason = await browser.closed()
            assert code == 4400
            assert reason == "malformed auth message: token"
            assert secret not in (reason or "")

    caplog.set_level("INFO")  # as the gateway runs; websockets' own DEBUG frame dumps are not ours
    caplog.set_level("DEBUG", logger="cloudide")
    run(scenario())
    assert calls == []  # refused before any connect call, so nothing was retried
    assert secret not in caplog.text


def test_a_malformed_token_never_leaves_the_client() -> None:
    from cloudide.transport.sessions_api import MalformedToken, SessionsApi

    api = SessionsApi("http://127.0.0.1:9/v1")
    with pytest.raises(MalformedToken) as raised:
        api.connector("s-1", "secret\r\nX-Injected: 1")
    assert "secret" not in str(raised.value)


def test_several_viewers_and_reconnects_stay_within_the_tasks_exec_session_limit() -> None:
    """Three browsers with their own tokens on one session, and its upstream dropped twice: the exec
    agent runs two sessions per container, so the gateway must open no session to vet a viewer and
    each reconnect must end the session it replaces (against the real API client)."""
    from cloudide.transport.sessions_api import SessionsApi
    from tests.transport.browser import SHELL, SHELL_ENV
    from tests.transport.stub_api import Answer, Request, stub_api

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        async with LocalPeer() as peer:

            def on_loop(call: Any) -> Any:
                async def run_call() -> Any:
                    return call()

                return asyncio.run_coroutine_threadsafe(run_call(), loop).result(10)

            def answer(request: Request) -> Answer:
                if not request.authorization.startswith("Bearer viewer-"):
                    return 401, {"message": "Unauthorized"}
                if request.method == "GET" and request.path == "/sessions/s-1":
                    return 200, {"sessionId": "s-1", "status": "READY"}
                if request.method == "POST" and request.path == "/sessions/s-1/connect":
                    if replaces := (request.body or {}).get("replaces"):
                        on_loop(lambda: peer.terminate(replaces))
                    return 200, on_loop(lambda: peer.new_session(SHELL, env=SHELL_ENV).to_json())
                return 404, {"message": "no such route"}

            with stub_api(answer) as (url, requests):
                api = SessionsApi(url)
                options: dict[str, Any] = {"limits": HubLimits(linger_s=0.2)}
                async with Gateway(api.connector, reader_factory=api.reader, **options) as gateway:
                    async with (
                        FakeBrowser.open(gateway, token="viewer-1") as one,
                        FakeBrowser.open(gateway, token="viewer-2") as two,
                        FakeBrowser.open(gateway, token="viewer-3", mode="read") as three,
                    ):
                        for viewer in (one, two, three):
                            await viewer.wait_control(type="welcome")
                        for round_ in range(1, 3):
                            assert peer.cut() == 1
                            await one.type(f"echo round-$(({round_}*7))\r")
                            for viewer in (one, two, three):
                                await viewer.wait_output(f"round-{round_ * 7}")
                        assert len(peer.live_sessions()) == 1
                    connects = [r for r in requests if r.path.endswith("/connect")]
                    assert len(connects) == 3  # one upstream, reconnected twice: no connect to vet a viewer

                    # And a terminal closed while nobody watches leaves its shell running, and its exec
                    # session with it: the next one the gateway opens for the session ends that one
                    for round_ in range(3):
                        await eventually(lambda: gateway.hub("s-1") is None)
                        async with FakeBrowser.open(gateway, token="viewer-1") as again:
                            await again.type(f"echo again-$(({round_}+40))\r")
                            await again.wait_output(f"again-{round_ + 40}")
                    assert len(peer.live_sessions()) == 1

    run(scenario(), timeout_s=60)
