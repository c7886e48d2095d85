"""Every refusal a caller can meet has one shape, whichever layer answers: the API function or API Gateway.

Called through the local REST API (which renders the template's gateway responses as API Gateway does) in
front of the real API function, from another origin, as the browser page calls it. Each answer must be
``{code, message, field?}`` with a stable PascalCase code, readable cross-origin (the CORS header), and
short: bad input is never echoed back beyond an excerpt, and an oversized body is refused for its size
before anything looks inside it.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.api.conftest import Deployment, rest_api_in_front_of

ORIGIN = "http://127.0.0.1:8080"
SHORT_ANSWER_BYTES = 512  # any refusal, however large the input that caused it
ALICE = {"Authorization": "Bearer local:alice"}
JSON = {"Content-Type": "application/json"}
UNKNOWN = str(uuid.uuid4())


@dataclass(frozen=True)
class Refusal:
    name: str
    method: str
    path: str
    body: bytes | None
    headers: dict[str, str]
    status: int
    code: str
    field: str | None = None


def start(document: object) -> bytes:
    return json.dumps(document).encode()


# fmt: off
REFUSALS = [
    # API Gateway's own answers (the template's gateway responses)
    Refusal("no token", "GET", "/sessions", None, {}, 401, "Unauthorized"),
    Refusal("a token that is not one", "GET", "/sessions", None, {"Authorization": "Bearer x"}, 401, "Unauthorized"),
    Refusal("no such route", "GET", "/nowhere", None, ALICE, 404, "NotFound"),
    Refusal("no such method", "PUT", "/sessions", start({}), ALICE | JSON, 404, "NotFound"),
    Refusal("body over API Gateway's 10 MB", "POST", "/sessions", b" " * (10 * 1024 * 1024 + 1), ALICE | JSON, 413, "PayloadTooLarge", "body"),
    # the function's: POST /sessions
    Refusal("body over 16 KiB, otherwise valid", "POST", "/sessions", start({"projectId": "p"}) + b" " * 20_000, ALICE | JSON, 413, "PayloadTooLarge", "body"),
    Refusal("body over 16 KiB and invalid", "POST", "/sessions", start({"projectId": "p" * 20_000}), ALICE | JSON, 413, "PayloadTooLarge", "body"),
    Refusal("not JSON", "POST", "/sessions", b"{", ALICE | JSON, 400, "InvalidRequest", "body"),
    Refusal("not application/json", "POST", "/sessions", start({"projectId": "p"}), ALICE | {"Content-Type": "text/plain"}, 415, "UnsupportedMediaType", "Content-Type"),
    Refusal("no projectId", "POST", "/sessions", start({}), ALICE | JSON, 422, "ValidationError", "projectId"),
    Refusal("a 10,000-character projectId", "POST", "/sessions", start({"projectId": "p" * 10_000}), ALICE | JSON, 422, "ValidationError", "projectId"),
    Refusal("projectId not a string", "POST", "/sessions", start({"projectId": 7}), ALICE | JSON, 422, "ValidationError", "projectId"),
    Refusal("idle timeout out of range", "POST", "/sessions", start({"projectId": "p", "idleTimeoutMinutes": 10**9}), ALICE | JSON, 422, "ValidationError", "idleTimeoutMinutes"),
    Refusal("an unknown field", "POST", "/sessions", start({"projectId": "p", "colour": "red"}), ALICE | JSON, 422, "ValidationError", "colour"),
    Refusal("a 5,000-character unknown field", "POST", "/sessions", start({"projectId": "p", "k" * 5_000: 1}), ALICE | JSON, 422, "ValidationError", "k" * 63 + "…"),
    Refusal("an image nobody has", "POST", "/sessions", start({"projectId": "p", "image": "i" * 64}), ALICE | JSON, 400, "InvalidRequest", "image"),
    Refusal("an Idempotency-Key too long", "POST", "/sessions", start({"projectId": "p"}), ALICE | JSON | {"Idempotency-Key": "k" * 2_000}, 422, "ValidationError", "header.idempotency-key"),
    # GET /sessions, /sessions/{id}; DELETE; activity; connect
    Refusal("all= not a boolean", "GET", "/sessions?all=" + "x" * 3_000, None, ALICE, 422, "ValidationError", "query.all"),
    Refusal("everyone's sessions without the admin group", "GET", "/sessions?all=true", None, ALICE, 403, "Forbidden", "all"),
    Refusal("a malformed session id", "GET", "/sessions/" + "z" * 3_000, None, ALICE, 422, "ValidationError", "path.session_id"),
    Refusal("no such session", "GET", f"/sessions/{UNKNOWN}", None, ALICE, 404, "NotFound", "sessionId"),
    Refusal("stop a malformed id", "DELETE", "/sessions/not-an-id", None, ALICE, 422, "ValidationError", "path.session_id"),
    Refusal("stop no such session", "DELETE", f"/sessions/{UNKNOWN}", None, ALICE, 404, "NotFound", "sessionId"),
    Refusal("activity on no such session", "POST", f"/sessions/{UNKNOWN}/activity", None, ALICE, 404, "NotFound", "sessionId"),
    Refusal("connect with readOnly not a boolean", "POST", f"/sessions/{UNKNOWN}/connect", start({"readOnly": "yes"}), ALICE | JSON, 422, "ValidationError", "readOnly"),
    Refusal("connect to no such session", "POST", f"/sessions/{UNKNOWN}/connect", None, ALICE, 404, "NotFound", "sessionId"),
]
# fmt: on


@pytest.fixture
def api(deployment: Deployment) -> Iterator[str]:
    with rest_api_in_front_of(deployment, ORIGIN) as url:
        yield url


def send(url: str, refusal: Refusal) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(
        url + refusal.path,
        method=refusal.method,
        data=refusal.body,
        headers={"Origin": ORIGIN} | refusal.headers,
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


@pytest.mark.parametrize("refusal", REFUSALS, ids=[r.name for r in REFUSALS])
def test_every_refusal_has_one_short_shape_readable_from_the_page(api: str, refusal: Refusal) -> None:
    status, headers, raw = send(api, refusal)

    body = json.loads(raw)
    assert (status, body["code"], body.get("field")) == (refusal.status, refusal.code, refusal.field), body
    assert set(body) <= {"code", "message", "field"}
    assert re.fullmatch(r"[A-Z][A-Za-z]+", body["code"])
    assert body["message"] and body["message"] == body["message"].strip()
    assert len(raw) <= SHORT_ANSWER_BYTES, raw[:200]
    assert headers.get("Access-Control-Allow-Origin") == ORIGIN


def test_answers_that_succeed_are_readable_from_the_page_too(api: str) -> None:
    started = send(api, Refusal("start", "POST", "/sessions", start({"projectId": "p"}), ALICE | JSON, 0, ""))
    listed = send(api, Refusal("list", "GET", "/sessions", None, ALICE, 0, ""))

    assert (started[0], listed[0]) == (202, 200)
    assert started[1]["Access-Control-Allow-Origin"] == listed[1]["Access-Control-Allow-Origin"] == ORIGIN


def test_another_origin_gets_no_cors_header(api: str) -> None:
    request = urllib.request.Request(api + "/sessions", headers=ALICE | {"Origin": "https://evil.example"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
        assert "Access-Control-Allow-Origin" not in response.headers
