"""The browsers the gateway tests use, and a gateway wired to a ``LocalPeer`` for them to visit.

* :class:`FakeBrowser` speaks the gateway's browser message format over a plain WebSocket.
* :class:`Browser` drives Debian's headless chromium over the Chrome DevTools Protocol with nothing but
  ``websockets``: Playwright's browser download does not work on these machines, and the Debian chromium
  needs no driver. It is launched with ``--remote-debugging-port=0``; the port it picked is read from
  ``DevToolsActivePort`` in its fresh profile, and pages are addressed by flattened CDP session ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from cloudide.transport.client import Connector, ExecCredentials
from cloudide.transport.gateway import DEFAULT_NODE_MODULES, Gateway
from cloudide.transport.gateway_hub import HubLimits
from cloudide.transport.peer import LocalPeer
from cloudide.transport.sessions_api import ConnectorFactory, SessionRead, SessionReadFactory
from tests.support import IN_CI

T = TypeVar("T")
SHELL = ("bash", "--norc", "--noprofile", "-i")
SHELL_ENV = {"PS1": "$ ", "HISTFILE": "/dev/null"}


def run(scenario: Coroutine[Any, Any, T], timeout_s: float = 30.0) -> T:
    """Run one async test scenario with a hard deadline, so nothing hangs."""
    return asyncio.run(asyncio.wait_for(scenario, timeout_s))


def peer_factory(
    peer: LocalPeer, command: Sequence[str] = SHELL, *, calls: list[tuple[str, str]] | None = None
) -> ConnectorFactory:
    """A connector factory like the API's, backed by the peer; records ``(session_id, token)`` calls."""

    def factory(session_id: str, token: str) -> Connector:
        async def connect() -> ExecCredentials:
            if calls is not None:
                calls.append((session_id, token))
            return peer.new_session(command, env=SHELL_ENV)

        return connect

    return factory


def session_reader(view: dict[str, str], reads: list[tuple[str, str]] | None = None) -> SessionReadFactory:
    """A reader factory like the API's ``GET /sessions/{id}``, answering ``view``; records
    ``(session_id, token)`` reads in ``reads``."""

    def factory(session_id: str, token: str) -> SessionRead:
        async def read() -> dict[str, Any]:
            if reads is not None:
                reads.append((session_id, token))
            return {"sessionId": session_id, **view}

        return read

    return factory


@contextlib.asynccontextmanager
async def running_gateway(
    factory: Callable[[LocalPeer], ConnectorFactory] = peer_factory, **options: Any
) -> AsyncIterator[tuple[Gateway, LocalPeer]]:
    options.setdefault("limits", HubLimits(linger_s=0.2))
    async with LocalPeer() as peer, Gateway(factory(peer), **options) as gateway:
        yield gateway, peer


class FakeBrowser:
    """One viewer: records output and control messages in the background."""

    def __init__(self, websocket: ClientConnection) -> None:
        self.websocket = websocket
        self.output = bytearray()
        self.controls: list[dict[str, Any]] = []
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, gateway: Gateway, session_id: str = "s-1", *, first: str | bytes | None = None, **auth: Any
    ) -> AsyncIterator[FakeBrowser]:
        async with connect(f"ws://127.0.0.1:{gateway.port}/sessions/{session_id}/terminal") as websocket:
            await websocket.send(
                first if first is not None else json.dumps({"type": "auth", "token": "t-1", **auth})
            )
            browser = cls(websocket)
            try:
                yield browser
            finally:
                browser._reader.cancel()

    async def type(self, text: str) -> None:
        await self.websocket.send(text.encode())

    async def resize(self, rows: int, cols: int) -> None:
        await self.websocket.send(json.dumps({"type": "resize", "rows": rows, "cols": cols}))

    async def wait_output(self, text: str, timeout_s: float = 10.0) -> None:
        await self._wait(lambda: text.encode() in self.output, timeout_s, f"output {text!r}")

    async def wait_control(self, timeout_s: float = 10.0, **fields: Any) -> None:
        def seen() -> bool:
            return any(all(control.get(k) == v for k, v in fields.items()) for control in self.controls)

        await self._wait(seen, timeout_s, f"control message with {fields}")

    async def closed(self, timeout_s: float = 10.0) -> tuple[int | None, str | None]:
        """The close code and reason the gateway sent."""
        with contextlib.suppress(ConnectionClosed):
            await asyncio.wait_for(self._reader, timeout_s)
        return self.websocket.close_code, self.websocket.close_reason

    async def _wait(self, condition: Callable[[], bool], timeout_s: float, what: str) -> None:
        try:
            async with asyncio.timeout(timeout_s), self._changed:
                await self._changed.wait_for(condition)
        except TimeoutError:
            raise AssertionError(
                f"no {what} within {timeout_s}s; output so far: {bytes(self.output)[-500:]!r}, "
                f"controls: {self.controls}"
            ) from None

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in self.websocket:
                async with self._changed:
                    if isinstance(message, bytes):
                        self.output += message
                    else:
                        self.controls.append(json.loads(message))
                    self._changed.notify_all()


async def eventually(condition: Callable[[], bool | Awaitable[bool]], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            result = condition()
            if await result if isinstance(result, Awaitable) else result:
                return
            await asyncio.sleep(0.02)


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


RECORD_CSP_VIOLATIONS = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", function (event) {
  window.cspViolations.push(event.violatedDirective + " " + (event.blockedURI || "inline"));
});
"""


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
        """A tab on ``url`` that records the page's CSP violations in ``window.cspViolations`` from the start."""
        target = await self.call("Target.createTarget", {"url": "about:blank"})
        attached = await self.call("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
        page = Page(self, attached["sessionId"])
        await page.call("Page.enable")
        await page.call("Page.addScriptToEvaluateOnNewDocument", {"source": RECORD_CSP_VIOLATIONS})
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


SCREEN_LINES = """(() => {
  const buffer = term.buffer.active;
  const lines = [];
  for (let i = 0; i < buffer.length; i++) lines.push(buffer.getLine(i).translateToString(true));
  return lines;
})()"""


def require_xterm() -> None:
    if not (DEFAULT_NODE_MODULES / "@xterm/xterm/lib/xterm.js").is_file():
        message = "xterm.js is not installed; `make node_modules` (npm ci) installs it"
        pytest.fail(message) if IN_CI else pytest.skip(message)


async def wait_for_line(page: Page, line: str) -> None:
    await page.wait_for(f"{SCREEN_LINES}.includes({json.dumps(line)})")


async def run_in_terminal(page: Page, command: str) -> None:
    await page.evaluate("term.focus()")
    await page.type(command + "\r")
