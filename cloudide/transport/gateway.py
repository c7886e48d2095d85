"""Browser gateway: xterm.js in the browser, one WebSocket per viewer, the SSM data channel upstream.

The gateway serves a small page and, on ``/sessions/{session_id}/terminal``, a WebSocket per viewer.
It holds no AWS privileges: it hands the viewer's bearer token to a :data:`ConnectorFactory` (normally
the REST API's ``POST /sessions/{id}/connect``) and relays between the browser and the resulting data
channel, reconnecting upstream transparently. All viewers of a session on this gateway share one
upstream (see ``gateway_hub``); read-only viewers see everything and can neither type nor resize.

Browser message format (WebSocket ``/sessions/{session_id}/terminal``)

Browsers cannot set headers on a WebSocket, and a token in the URL lands in access logs, so the token
travels in the first message. Control messages are JSON text frames; terminal bytes are binary frames.

Browser -> gateway:
  * first, within ``auth_timeout_s``:
    ``{"type": "auth", "token": "<bearer>", "mode": "write" | "read", "rows": 24, "cols": 80}``
  * ``{"type": "resize", "rows": R, "cols": C}`` (ignored for read-only viewers)
  * binary: keystrokes, UTF-8 (ignored for read-only viewers)

Gateway -> browser:
  * ``{"type": "welcome", "sessionId": "...", "readOnly": bool}`` once the API accepted the token
  * ``{"type": "resync"}``: reset the terminal; the next binary frame replays the recent output
    (sent on joining, and whenever this viewer fell too far behind and output was dropped)
  * ``{"type": "state", "state": "connecting" | "open" | "reconnecting" | "closed"}``: the upstream
  * ``{"type": "ended", "status": "STOPPING", "reason": "idle for 30 min"}``: the session's shell
    ended, and this is what became of the session (its record's ``status`` and ``statusReason``;
    READY means only the shell exited); sent just before the close, when the record could be read
  * binary: terminal output

Close codes: 1000 session ended; 1001 gateway going away; 4400 malformed message; 4401, 4403, 4404,
4409 the API's 401/403/404/409 on connect (the reason carries its message); 4408 no auth message in
time, or the browser stopped receiving; 4502 the API or the data channel could not be reached.
The page reconnects after any other close and gives up on 1000 and 44xx.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import re
import secrets
import signal
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, ValidationError
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from cloudide.transport.gateway_hub import (
    CLOSE_VIEWER_TIMEOUT,
    HubLimits,
    SessionHub,
    Viewer,
    control,
    run_viewer,
)
from cloudide.transport.sessions_api import (
    BEARER_TOKEN_PATTERN,
    UNAVAILABLE_CLOSE_CODE,
    ApiRejected,
    ConnectorFactory,
    SessionReadFactory,
    SessionsApi,
)

logger = logging.getLogger(__name__)

CLOSE_BAD_MESSAGE = 4400
STATIC_DIR = Path(__file__).parent / "static"
DEFAULT_NODE_MODULES = Path(__file__).resolve().parents[2] / "node_modules"
TERMINAL_PATH = re.compile(r"/sessions/(?P<session_id>[A-Za-z0-9._:-]{1,128})/terminal")

Size = Annotated[int, Field(ge=1, le=1000)]


class AuthMessage(BaseModel):
    type: Literal["auth"]
    token: str = Field(min_length=1, max_length=16384, pattern=BEARER_TOKEN_PATTERN)
    mode: Literal["read", "write"] = "write"
    rows: Size = 24
    cols: Size = 80


class ResizeMessage(BaseModel):
    type: Literal["resize"]
    rows: Size
    cols: Size


@dataclass(frozen=True)
class _Asset:
    file: Path
    content_type: str


def _close_reason(text: str) -> str:
    """WebSocket close reasons are limited to 123 bytes of UTF-8."""
    return text.encode()[:123].decode(errors="ignore")


def _assets(node_modules: Path) -> dict[str, _Asset]:
    """Every URL the gateway serves over plain HTTP: a fixed map, so no path ever reaches the disk."""
    return {
        "/": _Asset(STATIC_DIR / "index.html", "text/html; charset=utf-8"),
        "/terminal.js": _Asset(STATIC_DIR / "terminal.js", "text/javascript; charset=utf-8"),
        "/terminal.css": _Asset(STATIC_DIR / "terminal.css", "text/css; charset=utf-8"),
        "/sessions.js": _Asset(STATIC_DIR / "sessions.js", "text/javascript; charset=utf-8"),
        "/favicon.ico": _Asset(STATIC_DIR / "favicon.svg", "image/svg+xml"),
        "/vendor/xterm.js": _Asset(
            node_modules / "@xterm/xterm/lib/xterm.js", "text/javascript; charset=utf-8"
        ),
        "/vendor/xterm.css": _Asset(node_modules / "@xterm/xterm/css/xterm.css", "text/css; charset=utf-8"),
        "/vendor/addon-fit.js": _Asset(
            node_modules / "@xterm/addon-fit/lib/addon-fit.js", "text/javascript; charset=utf-8"
        ),
    }


PAGE_NONCE = b"__CSP_NONCE__"
"""Where index.html takes each response's style nonce."""


def _security_headers(api_url: str | None, style_nonce: str) -> dict[str, str]:
    """The page may talk to this gateway and, when one is configured, to the REST API: nothing else.

    Styles come from this gateway, plus the ``<style>`` elements xterm.js creates for the terminal's
    dimensions, theme and cursor: it takes no nonce, so the page stamps this response's nonce on each
    (terminal.js) and no other inline style is allowed."""
    api = urlsplit(api_url) if api_url else None
    connect_src = "'self'" + (f" {api.scheme}://{api.netloc}" if api else "")
    policy = (
        f"default-src 'self'; style-src 'self' 'nonce-{style_nonce}'; connect-src {connect_src}; "
        "frame-ancestors 'self'"
    )
    return {
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Content-Security-Policy": policy,
    }


class Gateway:
    """The gateway server: page, assets and per-session terminal WebSockets."""

    def __init__(
        self,
        connector_factory: ConnectorFactory,
        *,
        reader_factory: SessionReadFactory | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        limits: HubLimits | None = None,
        node_modules: Path = DEFAULT_NODE_MODULES,
        auth_timeout_s: float = 10.0,
        connect_timeout_s: float = 30.0,
        api_url: str | None = None,
    ) -> None:
        """``reader_factory`` (normally :meth:`SessionsApi.reader`) vets a viewer joining a session the
        gateway already relays, and tells the viewers why a session ended. Without it a connect call
        vets the joiner, which on AWS opens an exec session that holds one of the task's two places
        until it expires, and viewers learn only that the terminal closed.
        The gateway reports no activity: whether a session is in use is the task's to say (``sessions_api``).
        ``api_url``, when given, is the REST API the page lists, starts and stops sessions with
        (served to it as ``/config.json``); without it the page only opens a session it is given."""
        self._factory = connector_factory
        self._reader_factory = reader_factory
        self._host = host
        self._port = port
        self._limits = limits or HubLimits()
        self._auth_timeout_s = auth_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._assets = _assets(node_modules)
        self._api_url = api_url
        self._config = json.dumps({"apiUrl": api_url.rstrip("/") if api_url else None}).encode()
        self._hubs: dict[str, SessionHub] = {}
        self._server: Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "gateway not started"
        return int(next(iter(self._server.sockets)).getsockname()[1])

    @property
    def url(self) -> str:
        """Base HTTP URL; the page for a session is ``{url}/#session=<id>&token=<token>``."""
        return f"http://{self._host}:{self.port}"

    def hub(self, session_id: str) -> SessionHub | None:
        """The live hub of a session, if any viewer is (or was just) attached."""
        return self._hubs.get(session_id)

    async def start(self) -> Gateway:
        missing = [str(asset.file) for asset in self._assets.values() if not asset.file.is_file()]
        if missing:
            logger.warning(
                "page assets missing; run `make node_modules` (npm ci)", extra={"missing": missing}
            )
        self._server = await serve(
            self._handle,
            self._host,
            self._port,
            process_request=self._process_request,
            max_size=256 * 1024,
            max_queue=16,
        )
        logger.info("gateway listening", extra={"url": self.url})
        return self

    async def close(self) -> None:
        await asyncio.gather(*(hub.close() for hub in list(self._hubs.values())), return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> Gateway:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def serve_forever(self) -> None:
        assert self._server is not None, "gateway not started"
        await self._server.serve_forever()

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return (
                None
                if TERMINAL_PATH.fullmatch(path)
                else connection.respond(HTTPStatus.NOT_FOUND, "no such endpoint\n")
            )
        if path == "/healthz":
            return connection.respond(HTTPStatus.OK, "ok\n")
        if path == "/config.json":
            return self._ok("application/json", self._config)
        asset = self._assets.get(path)
        if asset is None:
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        try:
            body = asset.file.read_bytes()
        except OSError:
            return connection.respond(
                HTTPStatus.SERVICE_UNAVAILABLE, "page assets are not installed: run `make node_modules`\n"
            )
        return self._ok(asset.content_type, body)

    def _ok(self, content_type: str, body: bytes) -> Response:
        nonce = secrets.token_urlsafe(18)  # fresh for every response: it only counts in the page it came with
        if content_type.startswith("text/html"):
            body = body.replace(PAGE_NONCE, nonce.encode())
        headers = Headers(
            {
                "Content-Type": content_type,
                "Content-Length": str(len(body)),
                **_security_headers(self._api_url, nonce),
            }
        )
        return Response(HTTPStatus.OK, "OK", headers, body)

    async def _handle(self, websocket: ServerConnection) -> None:
        assert websocket.request is not None
        match = TERMINAL_PATH.fullmatch(urlsplit(websocket.request.path).path)
        assert match is not None, "process_request admits only terminal paths"
        session_id = match["session_id"]
        auth = await self._read_auth(websocket)
        if auth is None:
            return
        read_only = auth.mode == "read"
        viewer = Viewer(
            websocket,
            read_only=read_only,
            limits=self._limits,
            greeting=control("welcome", sessionId=session_id, readOnly=read_only),
        )
        try:
            hub = await self._admit(session_id, auth, viewer)
        except ApiRejected as rejected:
            logger.info("viewer refused", extra={"session_id": session_id, "status": rejected.status})
            await websocket.close(rejected.close_code, _close_reason(rejected.message))
            return
        except Exception as error:  # whatever it was, this viewer cannot be served; say why
            logger.warning("could not connect a viewer", extra={"session_id": session_id}, exc_info=True)
            await websocket.close(UNAVAILABLE_CLOSE_CODE, _close_reason(str(error) or type(error).__name__))
            return
        await run_viewer(hub, viewer, self._on_message)

    async def _read_auth(self, websocket: ServerConnection) -> AuthMessage | None:
        try:
            async with asyncio.timeout(self._auth_timeout_s):
                first = await websocket.recv()
        except TimeoutError:
            await websocket.close(CLOSE_VIEWER_TIMEOUT, "no auth message received in time")
            return None
        except ConnectionClosed:
            return None
        try:
            if not isinstance(first, str):
                raise ValueError("binary")
            return AuthMessage.model_validate_json(first)
        except ValidationError as error:
            # Name the field, never echo its value: the value may be (part of) a bearer token.
            fields = sorted({".".join(map(str, e["loc"])) or "message" for e in error.errors()})
            await websocket.close(
                CLOSE_BAD_MESSAGE, _close_reason(f"malformed auth message: {', '.join(fields)}")
            )
            return None
        except ValueError:
            await websocket.close(CLOSE_BAD_MESSAGE, 'first message must be {"type":"auth","token":...}')
            return None

    async def _admit(self, session_id: str, auth: AuthMessage, viewer: Viewer) -> SessionHub:
        """Check the token with the API and attach ``viewer`` to the session's hub, starting it if needed.

        A token the API already accepted for this session joins without another call. Any other
        token costs one access check (see ``reader_factory``): the gateway cannot judge tokens
        itself. All viewers share the one upstream data channel.
        """
        digest = hashlib.sha256(auth.token.encode()).digest()
        while True:
            hub = self._hubs.get(session_id)
            if hub is None:
                hub = self._hubs[session_id] = SessionHub(session_id, self._limits, self._forget)
            async with hub.lock:
                if hub.finished:
                    continue  # the session ended while we waited; the next hub starts afresh
                try:
                    connector = self._factory(session_id, auth.token)
                    if not hub.started:
                        await hub.start(
                            connector,
                            rows=auth.rows,
                            cols=auth.cols,
                            timeout_s=self._connect_timeout_s,
                            read_session=self._reader_factory(session_id, auth.token)
                            if self._reader_factory
                            else None,
                        )
                    elif digest not in hub.accepted_tokens:
                        async with asyncio.timeout(self._connect_timeout_s):
                            if self._reader_factory is not None:
                                await self._reader_factory(session_id, auth.token)()
                            else:
                                await connector()
                except BaseException:
                    if not hub.started and not hub.viewers:
                        self._forget(hub)
                    raise
                hub.accepted_tokens.add(digest)
                hub.attach(viewer)
                if hub.started and not viewer.read_only and len(hub.viewers) > 1:
                    await hub.resize(viewer, auth.rows, auth.cols)
                return hub

    async def _on_message(self, hub: SessionHub, viewer: Viewer, message: bytes | str) -> None:
        if isinstance(message, bytes):
            await hub.send_input(viewer, message)
            return
        try:
            resize = ResizeMessage.model_validate_json(message)
        except ValidationError:
            await viewer.websocket.close(CLOSE_BAD_MESSAGE, "unknown or malformed control message")
            return
        await hub.resize(viewer, resize.rows, resize.cols)

    def _forget(self, hub: SessionHub) -> None:
        if self._hubs.get(hub.session_id) is hub:
            del self._hubs[hub.session_id]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``cloudide gateway --api URL [--host H] [--port P]``."""
    parser = subparsers.add_parser(
        "gateway",
        help="serve the browser terminal (xterm.js) and relay it to sessions through the REST API",
        description="Serve the browser terminal page and relay each session's data channel. The page "
        "for a session is http://HOST:PORT/#session=<id>&token=<bearer token>.",
    )
    parser.add_argument("--api", required=True, help="base URL of the sessions REST API")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (default: %(default)s)")
    parser.add_argument(
        "--node-modules", type=Path, default=DEFAULT_NODE_MODULES, help="where `npm ci` installed xterm.js"
    )
    parser.set_defaults(func=_run_command)


def _run_command(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(_serve_until_signalled(args))
    return 0


async def _serve_until_signalled(args: argparse.Namespace) -> None:
    api = SessionsApi(args.api)
    gateway = await Gateway(
        api.connector,
        reader_factory=api.reader,
        host=args.host,
        port=args.port,
        node_modules=args.node_modules,
        api_url=args.api,
    ).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    print(f"gateway: {gateway.url} (sessions of the API at {args.api})", flush=True)
    with contextlib.suppress(asyncio.CancelledError):
        await stop.wait()
    await gateway.close()


__all__ = [
    "UNAVAILABLE_CLOSE_CODE",
    "ApiRejected",
    "ConnectorFactory",
    "Gateway",
    "HubLimits",
    "register",
]
