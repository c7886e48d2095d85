"""The local REST API serves the template's routes the way API Gateway does, in front of a stand-in function.

The routes come from the real template's translation; the function is a recorder, so these tests see the
exact proxy events the deployed API function receives and the HTTP answers the IDE gets.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from cloudide.localstack.rest_api import (
    GatewayResponse,
    LocalRestApi,
    RestApiServer,
    Route,
    gateway_responses_from_template,
    routes_from_template,
)
from cloudide.offline import sam

ROOT = Path(__file__).resolve().parents[2]
ORIGIN = "http://127.0.0.1:8080"
PARAMETERS = {"CorsAllowOrigin": f"'{ORIGIN}'"}


@cache
def translated() -> dict[str, Any]:
    translation = sam.translate(
        ROOT / "template.yaml", parameters={"TerminalImageUri": "x"}, region="us-east-1"
    )
    return dict(translation.template)


def template_routes() -> tuple[Route, ...]:
    return tuple(routes_from_template(translated(), PARAMETERS))


def template_responses() -> dict[str, GatewayResponse]:
    return gateway_responses_from_template(translated(), PARAMETERS)


@contextmanager
def serving(rest_api: LocalRestApi) -> Iterator[str]:
    rest_api.ready.set()
    with RestApiServer(rest_api, port=0) as server:
        yield server.url


class Recorder:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.answer: dict[str, Any] = {
            "statusCode": 200,
            "headers": {"X-Answer": "yes"},
            "body": '{"ok": true}',
        }
        self.errored = False
        self.times_out = False

    def __call__(self, function: str, event: dict[str, Any]) -> tuple[dict[str, Any] | None, bool]:
        self.events.append({"function": function, **event})
        if self.times_out:
            raise TimeoutError("no answer within the integration timeout")
        return self.answer, self.errored


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def api(recorder: Recorder) -> Iterator[str]:
    functions = {"ApiFunction": "cloudide-ApiFunction-XYZ"}
    with serving(LocalRestApi(list(template_routes()), functions, recorder, template_responses())) as url:
        yield url


def call_raw(
    url: str, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url + path, method=method, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def call(
    url: str, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    status, answer_headers, raw = call_raw(url, method, path, body, headers)
    return status, answer_headers, json.loads(raw or b"null")


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

    assert (status, body["code"]) == (401, "Unauthorized")  # the template's gateway response
    assert recorder.events == []


def test_unknown_routes_get_the_templates_answer_to_missing_authentication_token(
    api: str, recorder: Recorder
) -> None:
    for method, path in (("GET", "/nowhere"), ("PUT", "/sessions")):
        status, headers, body = call(api, method, path, headers=ME)
        assert (status, body["code"], headers["Access-Control-Allow-Origin"]) == (404, "NotFound", ORIGIN)
    assert recorder.events == []


def test_cors_preflight_answers_from_the_template(api: str) -> None:
    status, headers, _ = call(api, "OPTIONS", "/sessions")

    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Authorization" in headers["Access-Control-Allow-Headers"]
    assert "DELETE" in headers["Access-Control-Allow-Methods"]


def test_a_failing_function_is_a_502_not_a_hang(api: str, recorder: Recorder) -> None:
    recorder.answer, recorder.errored = {"errorType": "KeyError", "errorMessage": "boom"}, True

    status, headers, body = call(api, "GET", "/sessions", headers=ME)

    assert (status, body, headers["Access-Control-Allow-Origin"]) == (
        502,
        {"code": "InternalError", "message": "Internal server error"},
        ORIGIN,
    )


@pytest.mark.stand_in_rule("apigw-integration-timeout")
def test_a_function_that_does_not_answer_in_time_is_api_gateways_504(api: str, recorder: Recorder) -> None:
    recorder.times_out = True

    status, headers, body = call(api, "GET", "/sessions", headers=ME)

    assert (status, body["code"], headers["Access-Control-Allow-Origin"]) == (504, "Unavailable", ORIGIN)


def test_health_says_starting_until_the_stack_is_ready(recorder: Recorder) -> None:
    rest_api = LocalRestApi(list(template_routes()), {}, recorder)
    server = RestApiServer(rest_api, port=0).start()
    try:
        assert call(server.url, "GET", "/health")[0::2] == (503, {"status": "starting"})
        rest_api.ready.set()
        assert call(server.url, "GET", "/health")[0::2] == (200, {"status": "ready"})
    finally:
        server.close()


# -- what API Gateway adds, and what it does not ---------------------------------------------------------


@pytest.mark.stand_in_rule("apigw-cors-proxy")
def test_a_proxied_answer_carries_only_the_headers_the_function_returned(
    api: str, recorder: Recorder
) -> None:
    # With a Lambda proxy integration API Gateway adds no CORS header: only the OPTIONS mock has them.
    status, headers, _ = call(api, "GET", "/sessions", headers=ME | {"Origin": ORIGIN})

    assert status == 200 and headers["X-Answer"] == "yes"
    assert not any(name.lower().startswith("access-control-") for name in headers)


def synthetic_api(
    gateway_responses: dict[str, Any], *, model: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A translated template with one proxied POST /things (validated against ``model`` when given)."""
    post: dict[str, Any] = {
        "x-amazon-apigateway-integration": {"type": "aws_proxy", "uri": "${ThingFunction.Arn}"},
    }
    if model is not None:
        post["x-amazon-apigateway-request-validator"] = "body-only"
        post["parameters"] = [{"in": "body", "name": "thing", "schema": model}]
    body = {"paths": {"/things": {"post": post}}, "x-amazon-apigateway-gateway-responses": gateway_responses}
    return {"Resources": {"Api": {"Properties": {"Body": body}}}}


def serve_synthetic(template: dict[str, Any], recorder: Recorder) -> Any:
    rest_api = LocalRestApi(
        routes_from_template(template, {}),
        {"ThingFunction": "thing"},
        recorder,
        gateway_responses_from_template(template, {"Origin": "'https://ide.example.com'"}),
    )
    return serving(rest_api)


@pytest.mark.stand_in_rule("apigw-gateway-response-default")
def test_a_gateway_response_the_template_leaves_alone_has_api_gateways_body_and_no_cors_header(
    recorder: Recorder,
) -> None:
    with serve_synthetic(synthetic_api({}), recorder) as url:
        status, headers, body = call(url, "GET", "/nowhere", headers={"Origin": ORIGIN})

    assert (status, body) == (403, {"message": "Missing Authentication Token"})
    assert "Access-Control-Allow-Origin" not in headers


@pytest.mark.stand_in_rule("apigw-gateway-response-template")
def test_gateway_response_templates_are_plain_substitution_without_escaping(recorder: Recorder) -> None:
    # "A GatewayResponse mapping template isn't processed by the VTL engine": values go in raw.
    responses = {
        "DEFAULT_4XX": {
            "statusCode": "422",
            "responseParameters": {"gatewayresponse.header.Access-Control-Allow-Origin": {"Ref": "Origin"}},
            "responseTemplates": {
                "application/json": '{"type": "$context.error.responseType", "why": "$context.error.validationErrorString"}'
            },
        }
    }
    model = {"type": "object", "required": ["name"]}
    with serve_synthetic(synthetic_api(responses, model=model), recorder) as url:
        status, headers, raw = call_raw(url, "POST", "/things", b"{}", {"Content-Type": "application/json"})

    assert (status, headers["Access-Control-Allow-Origin"]) == (422, "https://ide.example.com")
    # The validator's findings quote property names; inside a JSON string they end it early.
    assert (
        raw == b'{"type": "BAD_REQUEST_BODY", "why": "[object has missing required properties (["name"])]"}'
    )
    with pytest.raises(json.JSONDecodeError):
        json.loads(raw)
    assert recorder.events == []


@pytest.mark.stand_in_rule("apigw-validator-echoes-input")
def test_the_request_validator_quotes_the_offending_input_whole(recorder: Recorder) -> None:
    model = {
        "type": "object",
        "additionalProperties": False,
        "properties": {"name": {"type": "string", "maxLength": 8}, "size": {"type": "integer"}},
    }
    long_name, long_key = "n" * 10_000, "k" * 5_000
    document = json.dumps({"name": long_name, "size": "big", long_key: 1}).encode()
    with serve_synthetic(synthetic_api({}, model=model), recorder) as url:
        status, _, body = call(url, "POST", "/things", document, {"Content-Type": "application/json"})
        # A body of another content type is not validated at all: it reaches the function.
        call(url, "POST", "/things", document, {"Content-Type": "text/plain"})

    assert status == 400 and body == {"message": "Invalid request body"}  # the default template hides them
    [event] = recorder.events
    assert event["headers"]["Content-Type"] == "text/plain"


def test_the_validation_error_string_is_in_the_validators_words() -> None:
    from cloudide.localstack.rest_api import _validate_body

    model = {
        "type": "object",
        "required": ["a", "b"],
        "additionalProperties": False,
        "properties": {
            "a": {"type": "string", "maxLength": 3},
            "b": {"type": "integer"},
            "n": {"type": "integer", "maximum": 9},
        },
    }
    assert _validate_body(model, '{"a": "abcd", "n": 10, "zz": 1}') == (
        '[object has missing required properties (["b"]), '
        'object instance has properties which are not allowed by the schema: ["zz"], '
        'string "abcd" is too long (length: 4, maximum allowed: 3), '
        "numeric instance is greater than the required maximum (maximum: 9, found: 10)]"
    )
    assert _validate_body(model, "{") == "[Invalid JSON in request body]"
    assert _validate_body(model, '{"a": "x", "b": 1}') == ""
