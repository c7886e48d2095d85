"""Drive Debian's headless chromium over the Chrome DevTools Protocol, with nothing but ``websockets``.

Playwright's browser download does not work on these machines and the Debian chromium needs no driver:
launch it with ``--remote-debugging-port=0``, read the port it picked from ``DevToolsActivePort`` in its
fresh profile, and speak CDP (JSON over one WebSocket, pages addressed by flattened session ids).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--remote-debugging-port=0",
    "--window-size=1000,700",
)


class CdpError(RuntimeError):
    pass


class Browser:
    """One chromium process with a throw-away profile; ``async with Browser(path) as browser``."""

    def __init__(self, executable: str, *, startup_timeout_s: float = 30.0) -> None:
        self._executable = executable
        self._startup_timeout_s = startup_timeout_s
        self._profile = Path(tempfile.mkdtemp(prefix="cloudide-chromium-"))
        self._process: asyncio.subprocess.Process | None = None
        self._socket: ClientConnection | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Browser:
        self._process = await asyncio.create_subprocess_exec(
            self._executable,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={self._profile}",
            "about:blank",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        endpoint = await self._devtools_endpoint()
        self._socket = await connect(endpoint, max_size=None)
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self._socket is not None:
            await self._socket.close()
        if self._process is not None and self._process.returncode is None:
            self._process.terminate()
            try:
                await asyncio.wait_for(self._process.wait(), 10)
            except TimeoutError:
                self._process.kill()
                await self._process.wait()
        shutil.rmtree(self._profile, ignore_errors=True)

    async def new_page(self, url: str) -> Page:
        target = await self.call("Target.createTarget", {"url": "about:blank"})
        attached = await self.call("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
        page = Page(self, attached["sessionId"])
        await page.call("Page.enable")
        await page.call("Page.navigate", {"url": url})
        return page

    async def call(
        self, method: str, params: dict[str, Any] | None = None, *, session_id: str | None = None
    ) -> dict[str, Any]:
        assert self._socket is not None
        message_id = next(self._ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params or {}}
        if session_id is not None:
            message["sessionId"] = session_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[message_id] = future
        await self._socket.send(json.dumps(message))
        async with asyncio.timeout(30):
            return await future

    async def _devtools_endpoint(self) -> str:
        port_file = self._profile / "DevToolsActivePort"
        async with asyncio.timeout(self._startup_timeout_s):
            while not port_file.is_file() or len(port_file.read_text().splitlines()) < 2:
                assert self._process is not None
                if self._process.returncode is not None:
                    raise CdpError(
                        f"chromium exited with status {self._process.returncode} before DevTools came up"
                    )
                await asyncio.sleep(0.05)
        port, path = port_file.read_text().splitlines()[:2]
        return f"ws://127.0.0.1:{port}{path}"

    async def _read(self) -> None:
        assert self._socket is not None
        with contextlib.suppress(Exception):
            async for raw in self._socket:
                message = json.loads(raw)
                future = self._pending.pop(message.get("id", -1), None)
                if future is None or future.done():
                    continue  # an event: nothing here waits on events
                if "error" in message:
                    future.set_exception(CdpError(str(message["error"])))
                else:
                    future.set_result(message.get("result", {}))


class Page:
    """One tab: evaluate JavaScript and type on the keyboard."""

    def __init__(self, browser: Browser, session_id: str) -> None:
        self._browser = browser
        self._session_id = session_id

    async def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self._browser.call(method, params, session_id=self._session_id)

    async def evaluate(self, expression: str) -> Any:
        result = await self.call(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}
        )
        if "exceptionDetails" in result:
            raise CdpError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, *, timeout_s: float = 15.0) -> Any:
        """Poll ``expression`` until it is truthy; its last value is in the timeout's message."""
        value: Any = None
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    with contextlib.suppress(CdpError):  # e.g. the page's scripts are still loading
                        value = await self.evaluate(expression)
                        if value:
                            return value
                    await asyncio.sleep(0.05)
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {expression!r}; last value: {value!r}") from None

    async def type(self, text: str) -> None:
        """Type like a user: text into the focused element, then each ``\\r`` as the Enter key."""
        for index, part in enumerate(text.split("\r")):
            if index:
                for kind in ("keyDown", "keyUp"):
                    await self.call(
                        "Input.dispatchKeyEvent",
                        {
                            "type": kind,
                            "key": "Enter",
                            "code": "Enter",
                            "windowsVirtualKeyCode": 13,
                            **({"text": "\r"} if kind == "keyDown" else {}),
                        },
                    )
            if part:
                await self.call("Input.insertText", {"text": part})
