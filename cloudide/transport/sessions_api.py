"""The REST API as the terminal clients call it: ``connect`` for each data channel, ``read`` for the session.

The gateway and ``cloudide attach`` hold no AWS privileges. They pass the user's bearer token through
unchanged and let the API decide: a refusal (a 4xx) becomes :class:`ApiRejected`, which ends the
terminal with the API's own message (the gateway turns it into a 44xx close code); anything retrying
may fix (a 5xx, a 429, no answer, an unusable body) is :class:`ApiUnavailable`. Tests and the local
stack plug in their own :data:`ConnectorFactory` (for example one backed by a ``LocalPeer``) and skip
HTTP altogether.

Why the clients report no activity: whether a session is in use is decided in its task, where the
usage monitor sees keystrokes from every client and the work running without one. Connecting,
reconnecting after ECS Exec's idle cut, and the screen redraw that follows are not use, so nothing a
client does on its own moves the idle deadline.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

from cloudide.transport.client import Connector, ExecCredentials, TransportError

logger = logging.getLogger(__name__)

ConnectorFactory = Callable[[str, str], Connector]
"""``(session_id, bearer_token) -> Connector``: each call of the connector yields fresh credentials."""

SessionRead = Callable[[], Awaitable[dict[str, Any]]]
SessionReadFactory = Callable[[str, str], SessionRead]
"""``(session_id, bearer_token) -> read``: the session's view; :class:`ApiRejected` unless it is the token's."""

BEARER_TOKEN_PATTERN = r"^[!-~]+$"
"""What can travel in an ``Authorization`` header: visible ASCII, no space, no CR/LF or other control
character. Anything else is refused before it is sent anywhere, retried, or written to a log."""

# WebSocket close code for failures retrying might fix (4000-4999 are for applications).
UNAVAILABLE_CLOSE_CODE = 4502

LAST_EXEC_SESSIONS_KEPT = 4096
"""Sessions whose last exec session a client remembers (the oldest is forgotten first)."""


class ApiRejected(TransportError):
    """The API refused the call for this token (a 4xx other than 429); retrying will not help.

    Being a ``TransportError`` makes a ``TerminalConnection`` stop reconnecting at once: a token that
    expired while the upstream was open ends the session for its viewers with a clear reason.
    """

    def __init__(self, status: int, message: str, *, call: str = "connect") -> None:
        if not 400 <= status < 500:
            raise ValueError(f"ApiRejected is for 4xx statuses, not {status}")
        super().__init__(f"{call} returned HTTP {status}: {message}")
        self.status = status
        self.message = message

    @property
    def close_code(self) -> int:
        """The WebSocket close code for the browser: 44xx mirrors the HTTP status."""
        return 4000 + self.status


class MalformedToken(TransportError):
    """The bearer token cannot be a token (see :data:`BEARER_TOKEN_PATTERN`); says so without echoing it."""

    def __init__(self) -> None:
        super().__init__("the bearer token must be visible ASCII without spaces or line breaks")


class ApiUnavailable(ConnectionError):
    """The API could not be reached or answered unusably (5xx, 429, bad JSON); worth retrying."""


class SessionsApi:
    """The calls a terminal client makes, for any session and token."""

    def __init__(self, api_url: str, *, timeout_s: float = 10.0) -> None:
        self._base = api_url.rstrip("/")
        self._timeout_s = timeout_s
        self._last_exec_session: dict[str, str] = {}  # session id -> the exec session last opened

    def connector(self, session_id: str, bearer_token: str, *, replaces: str | None = None) -> Connector:
        """``POST /sessions/{id}/connect``: fresh exec credentials for each new data channel.

        A connector is called again only to replace its data channel, so every call after the first
        names the exec session it supersedes (``replaces``) and the API terminates it. Otherwise each
        reconnect would leave one behind until ECS Exec's idle timeout, and the exec agent runs only
        two sessions per container: a third reconnect would get no shell. The first call replaces
        ``replaces`` (an exec session an earlier client left: ``cloudide attach`` detached), or else
        the last one this client opened for the session (a gateway's terminal closed while nobody
        watched: the shell ran on, and so did its exec session).
        """
        check_token(bearer_token)
        url = self._url(session_id, "connect")
        previous = replaces or self._last_exec_session.get(session_id)

        async def connect() -> ExecCredentials:
            nonlocal previous
            request = {"replaces": previous} if previous else {}
            body = await asyncio.to_thread(
                _call, "POST", url, bearer_token, self._timeout_s, "connect", request
            )
            if not isinstance(body, dict):
                raise ApiUnavailable("API answered connect with JSON that is not an object")
            try:
                credentials = ExecCredentials.from_json(body)
            except ValueError as error:
                raise ApiUnavailable(str(error)) from None
            previous = self._last_exec_session[session_id] = credentials.session_id
            if len(self._last_exec_session) > LAST_EXEC_SESSIONS_KEPT:
                del self._last_exec_session[next(iter(self._last_exec_session))]
            return credentials

        return connect

    def reader(self, session_id: str, bearer_token: str) -> SessionRead:
        """``GET /sessions/{id}``: the session as the API shows it to this token (a 4xx if not theirs).

        Opens no exec session, unlike connect, so it is also how the gateway vets a viewer joining a
        terminal it already relays: that costs the task nothing.
        """
        check_token(bearer_token)
        url = self._url(session_id)

        async def read() -> dict[str, Any]:
            body = await asyncio.to_thread(_call, "GET", url, bearer_token, self._timeout_s, "read", None)
            if not isinstance(body, dict):
                raise ApiUnavailable("API answered read with JSON that is not an object")
            return body

        return read

    def _url(self, session_id: str, action: str = "") -> str:
        url = f"{self._base}/sessions/{urllib.parse.quote(session_id, safe='')}"
        return f"{url}/{action}" if action else url


def check_token(bearer_token: str) -> None:
    """Raise :class:`MalformedToken` for what no API would accept as a bearer token."""
    if not re.fullmatch(BEARER_TOKEN_PATTERN, bearer_token):
        raise MalformedToken()


def _call(
    method: str, url: str, bearer_token: str, timeout_s: float, call: str, body: dict[str, Any] | None
) -> Any:
    """Send ``body`` (if any) and return the JSON answer (None for an empty one), mapping failures as above."""
    request = urllib.request.Request(
        url,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {bearer_token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            raw = response.read()
    except urllib.error.HTTPError as error:
        message = _error_message(error.read(), error.reason)
        if 400 <= error.code < 500 and error.code != 429:
            raise ApiRejected(error.code, message, call=call) from None
        raise ApiUnavailable(f"API answered {call} with {error.code}: {message}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        raise ApiUnavailable(f"API unreachable: {error}") from None
    if not raw:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        raise ApiUnavailable(f"API answered {call} with a body that is not JSON") from None


def _error_message(body: bytes, reason: str) -> str:
    """The API's own message when it sent one (``{"message": ...}``), else the HTTP reason phrase."""
    try:
        message = json.loads(body).get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message) if message else str(reason)
