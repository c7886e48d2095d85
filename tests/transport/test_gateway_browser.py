"""The gateway's page in headless chromium: a user types, a read-only viewer watches, the page keeps up."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import require_tool
from tests.transport.browser import (
    SCREEN_LINES,
    Browser,
    require_xterm,
    run,
    run_in_terminal,
    running_gateway,
    session_reader,
    wait_for_line,
)

pytestmark = pytest.mark.browser


def test_in_chromium_a_user_types_and_a_read_only_viewer_watches_without_typing(tmp_path: Path) -> None:
    chromium = require_tool("chromium", "the gateway's page is tested in a headless browser")
    require_xterm()
    marker = tmp_path / "typed-in-the-read-only-page"

    async def scenario() -> None:
        async with running_gateway() as (gateway, peer), Browser(chromium) as browser:
            # Given the page opened as the local stack opens it
            writer = await browser.new_page(f"{gateway.url}/#session=s-1&token=t-1")
            await writer.wait_for("window.gateway && gateway.state === 'open'")
            assert await writer.evaluate("location.hash") == ""  # the token left the address bar
            # When the user types
            await run_in_terminal(writer, "echo hel''lo")
            # Then the shell's answer is on the screen
            await wait_for_line(writer, "hello")

            # Given a read-only viewer of the same session
            reader = await browser.new_page(f"{gateway.url}/#session=s-1&token=t-1&mode=read")
            await reader.wait_for("window.gateway && gateway.state === 'open' && gateway.readOnly")
            assert await reader.evaluate("document.getElementById('mode').hidden") is False
            await wait_for_line(reader, "hello")  # replayed on joining
            await run_in_terminal(writer, "echo watch-$((6*7))")
            await wait_for_line(reader, "watch-42")
            # When it types, nothing reaches the shell
            await run_in_terminal(reader, f"touch {marker}")
            await run_in_terminal(writer, f"test -e {marker} && echo marker-ex''ists || echo marker-ab''sent")
            await wait_for_line(writer, "marker-absent")
            assert not any("touch" in line for line in await reader.evaluate(SCREEN_LINES))

            # The PTY follows the writer's window (fit addon), and the page shows upstream reconnects
            await writer.call("Page.bringToFront")  # hidden tabs defer layout
            await writer.call(
                "Emulation.setDeviceMetricsOverride",
                {"width": 640, "height": 420, "deviceScaleFactor": 1, "mobile": False},
            )
            await writer.wait_for("term.cols < 90")
            rows, cols = await writer.evaluate("[term.rows, term.cols]")
            await run_in_terminal(writer, "stty size")
            await wait_for_line(writer, f"{rows} {cols}")
            peer.cut()
            await writer.wait_for("gateway.states.includes('reconnecting') && gateway.state === 'open'")
            await run_in_terminal(writer, "echo after-$((3*3))-cut")
            await wait_for_line(writer, "after-9-cut")
            await wait_for_line(reader, "after-9-cut")

    run(scenario(), timeout_s=90)
    assert not marker.exists()


def test_in_chromium_the_terminal_looks_like_one_under_the_pages_content_security_policy() -> None:
    chromium = require_tool("chromium", "the gateway's page is tested in a headless browser")
    require_xterm()

    async def scenario() -> None:
        async with running_gateway() as (gateway, _), Browser(chromium) as browser:
            page = await browser.new_page(f"{gateway.url}/#session=s-1&token=t-1")
            await page.wait_for("window.gateway && gateway.state === 'open'")
            await run_in_terminal(page, "echo ready-$((2*3))")
            await wait_for_line(page, "ready-6")
            # The styles xterm.js creates apply: a monospace font and a drawn cursor
            font = await page.evaluate("getComputedStyle(document.querySelector('.xterm-rows')).fontFamily")
            assert "monospace" in font, font
            cursor = "document.querySelector('.xterm-rows .xterm-cursor')"
            await page.wait_for(f"!!{cursor}")
            drawn = f"getComputedStyle({cursor}).backgroundColor !== 'rgba(0, 0, 0, 0)'"
            assert await page.evaluate(drawn), await page.evaluate(f"getComputedStyle({cursor}).cssText")
            # ...and the page's policy refused nothing it needs
            assert await page.evaluate("window.cspViolations") == []
            # No stray form above the terminal, and the tab has its icon
            assert await page.evaluate("getComputedStyle(document.getElementById('login')).display") == "none"
            favicon = "fetch('/favicon.ico').then(r => r.status + ' ' + r.headers.get('Content-Type'))"
            assert await page.evaluate(favicon) == "200 image/svg+xml"

    run(scenario(), timeout_s=60)


def test_in_chromium_the_page_says_why_the_session_ended() -> None:
    chromium = require_tool("chromium", "the gateway's page is tested in a headless browser")
    require_xterm()
    stopped = session_reader({"status": "STOPPING", "statusReason": "idle for 30 min"})

    async def scenario() -> None:
        async with running_gateway(reader_factory=stopped) as (gateway, _), Browser(chromium) as browser:
            page = await browser.new_page(f"{gateway.url}/#session=s-1&token=t-1")
            await page.wait_for("window.gateway && gateway.state === 'open'")
            # When the shell ends, as it does when the task is stopped
            await run_in_terminal(page, "exit")
            # Then the status line and the terminal say what became of the session, and why
            await page.wait_for("gateway.state === 'closed'")
            status = "document.getElementById('status').textContent"
            assert await page.evaluate(status) == "session stopping: idle for 30 min"
            await wait_for_line(page, "[session stopping: idle for 30 min]")
            assert await page.evaluate("gateway.closeCode") == 1000  # and it does not reconnect

    run(scenario(), timeout_s=60)
