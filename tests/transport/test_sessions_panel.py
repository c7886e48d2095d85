"""The page's sessions panel against a scripted REST API, in headless chromium.

The scripted API makes the timing that the real stack only sometimes shows happen every time: a stop
is asynchronous (DELETE records ``stopRequestedAt`` and the session stays READY until its workflow
moves it), and the panel must keep polling until the session has actually stopped.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tests.support import require_tool
from tests.transport.browser import Browser, require_xterm, run, running_gateway
from tests.transport.stub_api import Answer, Request, stub_api

pytestmark = pytest.mark.browser

READY_POLLS_AFTER_STOP = 3  # the workflow is slow to notice: three more listings still say READY


class ScriptedApi:
    """One READY session; after DELETE it stays READY (stop requested) for a few listings, then STOPPED."""

    def __init__(self) -> None:
        self.session: dict[str, Any] = {
            "sessionId": "s-1",
            "projectId": "p",
            "status": "READY",
            "statusReason": "",
            "createdAt": "2026-11-27T00:00:00Z",
        }
        self.listings_since_stop: int | None = None
        self.lock = threading.Lock()

    def list(self) -> dict[str, Any]:
        with self.lock:
            if self.listings_since_stop is not None:
                self.listings_since_stop += 1
                if self.listings_since_stop > READY_POLLS_AFTER_STOP:
                    self.session.update(status="STOPPED", statusReason="stopped by user")
            return {"sessions": [dict(self.session)]}

    def stop(self) -> dict[str, Any]:
        with self.lock:
            self.session["stopRequestedAt"] = "2026-11-27T00:01:00Z"
            self.listings_since_stop = 0
            return dict(self.session)

    def answer(self, request: Request) -> Answer:
        return (202, self.stop()) if request.method == "DELETE" else (200, self.list())


def test_in_chromium_the_panel_follows_a_stop_until_the_session_has_stopped() -> None:
    chromium = require_tool("chromium", "the page is tested in a headless browser")
    require_xterm()
    api = ScriptedApi()
    row = "document.querySelector('#session-rows tr[data-session-id=\"s-1\"]')"

    async def scenario() -> None:
        with stub_api(api.answer) as (api_url, _):
            async with running_gateway(api_url=api_url) as (gateway, _), Browser(chromium) as browser:
                # Given my READY session in the panel
                page = await browser.new_page(f"{gateway.url}/#token=local:me")
                await page.wait_for(f"!!({row} && {row}.querySelector('button.stop'))")
                # When I stop it and the API still says READY for a while
                await page.evaluate(f"{row}.querySelector('button.stop').click()")
                # Then the Stop button goes at once, and the panel keeps polling until it is STOPPED
                await page.wait_for(
                    f"{row} && {row}.dataset.status === 'READY' && !{row}.querySelector('button.stop')"
                )
                await page.wait_for(f"{row} && {row}.dataset.status === 'STOPPED'", timeout_s=15)
                # ...and the status line says how it ended, not "stopping" any more
                message = "document.getElementById('message').textContent"
                await page.wait_for(f"{message} === 's-1 stopped: stopped by user'")
                # One token field: the panel's (the hidden form for a bare gateway stays hidden)
                visible = "[...document.querySelectorAll('input[name=token]')].filter(i => i.offsetParent)"
                assert await page.evaluate(f"{visible}.length") == 1

    run(scenario(), timeout_s=60)
    assert api.listings_since_stop is not None and api.listings_since_stop > READY_POLLS_AFTER_STOP


def test_in_chromium_a_session_that_ends_on_its_own_leaves_the_panel_without_hammering_the_api() -> None:
    chromium = require_tool("chromium", "the page is tested in a headless browser")
    require_xterm()
    session = {"sessionId": "s-1", "projectId": "p", "status": "READY", "statusReason": ""}
    row = "document.querySelector('#session-rows tr[data-session-id=\"s-1\"]')"

    def answer(request: Request) -> Answer:
        return 200, {"sessions": [session]}

    async def scenario() -> list[Request]:
        with stub_api(answer) as (api_url, requests):
            async with running_gateway(api_url=api_url) as (gateway, _), Browser(chromium) as browser:
                # Given my READY session in the panel, which then idles out with nobody touching the page
                page = await browser.new_page(f"{gateway.url}/#token=local:me")
                await page.wait_for(f"!!({row} && {row}.dataset.status === 'READY')")
                session.update(status="STOPPED", statusReason="idle for 30 minutes")
                # Then the panel shows it ended, from its slow watch of live sessions
                await page.wait_for(f"{row} && {row}.dataset.status === 'STOPPED'", timeout_s=25)
                return list(requests)

    listings = [r for r in run(scenario(), timeout_s=60) if r.method == "GET"]
    # ...and it listed at the watch's pace, not the 1 s pace of a session on its way
    assert 2 <= len(listings) <= 3, listings
