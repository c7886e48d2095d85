"""The local REST API serves the template's routes the way API Gateway does, in front of a stand-in function.

The routes come from the real template's translation; the function is a recorder, so these tests see the
exact proxy events the deployed API function receives and the HTTP answers the IDE gets.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from cloudide.localstack.rest_api import LocalRestApi, RestApiServer, Route, routes_from_template
from cloudide.offline import sam

ROOT = Path(__file__).resolve().parents[2]
ORIGIN = "http://127.0.0.1:8080"


@cache
def template_routes() -> tuple[Route, ...]:
    translation = sam.translate(
        ROOT / "template.yaml", parameters={"TerminalImageUri": "x"}, region="us-east-1"
    )
    return tuple(routes_from_template(translation.template, {"CorsAllowOrigin": f"'{ORIGIN}'"}))


class Recorder:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.answer: dict[str, Any] = {
            "statusCode": 200,
            "headers": {"X-Answer": "yes"},
            "body": '{"ok": true}',
        }
        self.errored = False

    def __call__(self, function: str, event: dict[str, Any]) -> tuple[dict[str, Any] | None, bool]:
        self.events.append({"function": function, **event})
        return self.answer, self.errored


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def api(recorder: Recorder) -> Iterator[str]:
    rest_api = LocalRestApi(
        list(template_routes()), {"ApiFunction": "cloudide-ApiFunction-XYZ"}, recorder, cors_headers={}
    )
    rest_api.ready.set()
    server = RestApiServer(rest_api, port=0).start()
    try:
        yield server.url
    finally:
        server.close()


def call(
    url: str, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    request = urllib.request.Request(url + path, method=method, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read() or b"null")


ME = {"Authorization": "Bearer local:alice"}


def test_every_route_of_the_template_is_served() -> None:
    served = {(route.method, route.resource) for route in template_routes() if route.function}
    assert served == {
        ("POST", "/sessions"),
        ("GET", "/sessions"),
        ("GET", "/sessions/{session_id}"),
        ("DELETE", "/sessions/{session_id}"),
        ("POST", "/sessions/{session_id}/activity"),
        ("POST", "/sessions/{session_id}/connect"),
    }


def test_a_request_becomes_the_proxy_event_api_gateway_sends(api: str, recorder: Recorder) -> None:
    status, headers, body = call(api, "POST", "/sessions/s-123/activity?x=1", b"{}", ME)

    assert (status, headers["X-Answer"], body) == (200, "yes", {"ok": True})
    [event] = recorder.events
    assert event["function"] == "cloudide-ApiFunction-XYZ"
    assert event["resource"] == "/sessions/{session_id}/activity"
    assert event["pathParameters"] == {"session_id": "s-123"}
    assert event["queryStringParameters"] == {"x": "1"}
    assert event["requestContext"]["authorizer"]["claims"]["sub"] == "alice"
    assert event["body"] == "{}"


def test_groups_in_the_local_token_become_the_groups_claim(api: str, recorder: Recorder) -> None:
    call(api, "GET", "/sessions", headers={"Authorization": "Bearer local:bob:admins,python"})

    claims = recorder.events[0]["requestContext"]["authorizer"]["claims"]
    assert (claims["sub"], claims["cognito:groups"]) == ("bob", "admins,python")


@pytest.mark.parametrize(
    "authorization", [None, "", "Bearer", "Bearer eyJhbGciOi.x.y", "Bearer local:", "local:a b"]
)
def test_a_missing_or_malformed_token_is_refused_before_the_function(
    api: str, recorder: Recorder, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    status, _, body = call(api, "GET", "/sessions", headers=headers)

    assert status == 401
    assert body["code"] == "UNAUTHORIZED" and "Unauthorized" in body["message"]
    assert recorder.events == []


def test_the_request_model_is_validated_like_api_gateway(api: str, recorder: Recorder) -> None:
    status, _, body = call(api, "POST", "/sessions", b'{"projectId": "p", "colour": "red"}', ME)

    assert status == 400
    assert body["code"] == "BAD_REQUEST_BODY" and "colour" in body["message"]
    assert recorder.events == []


def test_unknown_routes_get_api_gateways_answer(api: str, recorder: Recorder) -> None:
    for method, path in (("GET", "/nowhere"), ("PUT", "/sessions")):
        status, _, body = call(api, method, path, headers=ME)
        assert (status, body["message"].strip()) == (403, "Missing Authentication Token")
    assert recorder.events == []


def test_cors_preflight_answers_from_the_template(api: str) -> None:
    status, headers, _ = call(api, "OPTIONS", "/sessions")

    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Authorization" in headers["Access-Control-Allow-Headers"]
    assert "DELETE" in headers["Access-Control-Allow-Methods"]


def test_a_failing_function_is_a_502_not_a_hang(api: str, recorder: Recorder) -> None:
    recorder.answer, recorder.errored = {"errorType": "KeyError", "errorMessage": "boom"}, True

    status, _, body = call(api, "GET", "/sessions", headers=ME)

    assert (status, body["message"]) == (502, "Internal server error")


def test_health_says_starting_until_the_stack_is_ready(recorder: Recorder) -> None:
    rest_api = LocalRestApi(list(template_routes()), {}, recorder)
    server = RestApiServer(rest_api, port=0).start()
    try:
        assert call(server.url, "GET", "/health")[0::2] == (503, {"status": "starting"})
        rest_api.ready.set()
        assert call(server.url, "GET", "/health")[0::2] == (200, {"status": "ready"})
    finally:
        server.close()
