"""The gateway's page in Chromium, served from one origin, driving the API on another, as deployed.

The page comes from the gateway; the REST API is the local one (the template's routes, authorizer stand-in
and gateway responses) in front of the real API function, on another port: every answer the page reads
crosses origins, so each needs the CORS header API Gateway does not add by itself.
"""

from __future__ import annotations

import pytest

from tests.api.conftest import Deployment, rest_api_in_front_of
from tests.support import free_port, require_tool
from tests.transport.browser import Browser, require_xterm, run, running_gateway

pytestmark = pytest.mark.browser

ROWS = "document.querySelectorAll('#session-rows tr')"
MESSAGE = "document.getElementById('message').textContent"


def test_in_chromium_the_page_starts_lists_and_stops_sessions_across_origins(deployment: Deployment) -> None:
    chromium = require_tool("chromium", "the page is tested in a headless browser")
    require_xterm()
    port = free_port()
    page_origin = f"http://127.0.0.1:{port}"

    async def scenario() -> None:
        with rest_api_in_front_of(deployment, page_origin) as api_url:
            async with (
                running_gateway(api_url=api_url, port=port) as (gateway, _),
                Browser(chromium) as browser,
            ):
                assert gateway.url == page_origin and not api_url.startswith(page_origin)
                page = await browser.new_page(f"{gateway.url}/#token=local:alice")
                # The panel is up (show() fills the token field, then listens) and my list is empty
                token = "document.querySelector('#start input[name=token]')"
                await page.wait_for(f"!!{token} && {token}.value === 'local:alice'")
                await page.wait_for(f"{MESSAGE} === '' && {ROWS}.length === 0")
                # Start: a 202 read across origins, then the list shows the session
                await page.evaluate("document.querySelector('#start button[type=submit]').click()")
                await page.wait_for(f"{MESSAGE}.startsWith('started ') || {MESSAGE}.startsWith('could not')")
                assert (await page.evaluate(MESSAGE)).startswith("started "), await page.evaluate(MESSAGE)
                row = "document.querySelector('#session-rows tr')"
                await page.wait_for(f"!!({row} && {row}.querySelector('button.stop'))")
                session_id = await page.evaluate(f"{row}.dataset.sessionId")
                # Stop: the 202 is read, the stop is recorded, the panel follows it
                await page.evaluate(f"{row}.querySelector('button.stop').click()")
                await page.wait_for(f"{MESSAGE} === 'stopping {session_id}'")
                await page.wait_for(f"!{row}.querySelector('button.stop')")
                assert deployment.store.require(session_id).stop_requested_at
                # A 4xx from the function is readable: the page shows its message, not a network error
                await page.evaluate(
                    "document.querySelector('#start input[name=project]').value = 'no spaces'"
                )
                await page.evaluate("document.querySelector('#start button[type=submit]').click()")
                await page.wait_for(f"{MESSAGE}.startsWith('could not start a session: projectId')")
                # A 401 from API Gateway's authorizer is readable too
                token = "document.querySelector('#start input[name=token]')"
                await page.evaluate(
                    f"{token}.value = 'not-a-token'; {token}.dispatchEvent(new Event('change'))"
                )
                await page.wait_for(
                    f"{MESSAGE} === 'could not list sessions: sign in again: the token is missing, invalid or expired'"
                )
                assert await page.evaluate("window.cspViolations") == []

    run(scenario(), timeout_s=90)
