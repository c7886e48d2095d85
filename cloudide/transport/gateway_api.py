"""How the gateway obtains a data channel for a browser: the REST API's connect call, or any stand-in.

The gateway holds no AWS privileges. It forwards the browser's bearer token to
``POST {api}/sessions/{id}/connect`` and lets the API decide; whatever the API refuses becomes a
:class:`ConnectRejected` whose close code the browser sees. Tests and the local stack plug in their own
:data:`ConnectorFactory` (for example one backed by a ``LocalPeer``) and skip HTTP altogether.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable

from cloudide.transport.client import Connector, ExecCredentials, TransportError

ConnectorFactory = Callable[[str, str], Connector]
"""``(session_id, bearer_token) -> Connector``: each call of the connector yields fresh credentials."""

# WebSocket close code for failures retrying might fix (4000-4999 are for applications).
UNAVAILABLE_CLOSE_CODE = 4502


class ConnectRejected(TransportError):
    """The API refused to connect this session for this token (a 4xx); retrying will not help.

    Being a ``TransportError`` makes a ``TerminalConnection`` stop reconnecting at once: a token that
    expired while the upstream was open ends the session for its viewers with a clear reason.
    """

    def __init__(self, status: int, message: str) -> None:
        if not 400 <= status < 500:
            raise ValueError(f"ConnectRejected is for 4xx statuses, not {status}")
        super().__init__(message)
        self.status = status
        self.message = message

    @property
    def close_code(self) -> int:
        """The WebSocket close code for the browser: 44xx mirrors the HTTP status."""
        return 4000 + self.status


class ApiUnavailable(ConnectionError):
    """The API could not be reached or answered unusably (5xx, bad JSON); worth retrying."""


def api_connector_factory(api_url: str, *, timeout_s: float = 10.0) -> ConnectorFactory:
    """Connect through the REST API at ``api_url``, passing the user's bearer token through unchanged."""
    base = api_url.rstrip("/")

    def factory(session_id: str, bearer_token: str) -> Connector:
        url = f"{base}/sessions/{urllib.parse.quote(session_id, safe='')}/connect"

        async def connect() -> ExecCredentials:
            return await asyncio.to_thread(_post_connect, url, bearer_token, timeout_s)

        return connect

    return factory


def _post_connect(url: str, bearer_token: str, timeout_s: float) -> ExecCredentials:
    request = urllib.request.Request(
        url,
        method="POST",
        data=b"{}",
        headers={"Authorization": f"Bearer {bearer_token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as error:
        message = _error_message(error.read(), error.reason)
        if 400 <= error.code < 500:
            raise ConnectRejected(error.code, message) from None
        raise ApiUnavailable(f"API answered connect with {error.code}: {message}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        raise ApiUnavailable(f"API unreachable: {error}") from None
    except json.JSONDecodeError:
        raise ApiUnavailable("API answered connect with a body that is not JSON") from None
    if not isinstance(body, dict):
        raise ApiUnavailable("API answered connect with JSON that is not an object")
    try:
        return ExecCredentials.from_json(body)
    except ValueError as error:
        raise ApiUnavailable(str(error)) from None


def _error_message(body: bytes, reason: str) -> str:
    """The API's own message when it sent one (``{"message": ...}``), else the HTTP reason phrase."""
    try:
        message = json.loads(body).get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message) if message else str(reason)
