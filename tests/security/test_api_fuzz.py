"""Schemathesis fuzzing of the published contract (docs/openapi.json) against the API handler in-process:
valid requests and deliberately invalid ones (negative mode: wrong types, unknown fields, broken JSON,
stray headers and query parameters) for every operation, as every kind of caller, on ids that exist,
belong to someone else or are malformed. Whatever arrives, the answer is never a 5xx, and every error
has the API's error shape."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from sessions.record import Status

from tests.api.conftest import ApiCall, Deployment
from tests.api.generate_openapi import DOCUMENT

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

EXAMPLES_PER_OPERATION_AND_MODE = 200
OWNED = "8c0e7a52-3f1b-4d6e-9a27-5b4c1d2e3f60"
SCHEMA = schemathesis.openapi.from_dict(json.loads(DOCUMENT.read_text()))
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]
CALLERS = st.sampled_from(
    [("u1", None), ("u2", None), ("admin", "[cloudide-admins]"), ("u1", "cloudide-admins,dev"), (None, None)]
)
RAW_BODIES = st.one_of(
    st.none(), st.text(max_size=60), st.binary(max_size=40).map(lambda b: b.decode("latin-1"))
)


@dataclass
class FuzzStats:
    """Read by bench/security.py after a run: what was sent and what came back."""

    cases: int = 0
    server_errors: list[str] = field(default_factory=list)


STATS = FuzzStats()


def event_arguments(kwargs: dict[str, Any]) -> dict[str, Any]:
    """A schemathesis request as gateway.api_event arguments: strings everywhere, as API Gateway sends."""
    query = {
        str(k): v if isinstance(v, str) else json.dumps(v) for k, v in (kwargs.get("params") or {}).items()
    }
    body: Any = None
    if "json" in kwargs:
        body = json.dumps(kwargs["json"])
    elif kwargs.get("data") is not None:
        data = kwargs["data"]
        body = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
    headers = {str(k): str(v) for k, v in kwargs["headers"].items() if k.lower() != "authorization"}
    return {
        "path": unquote(urlsplit(kwargs["url"]).path),
        "query": query or None,
        "headers": headers,
        "body": body,
    }


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda o: f"{o.method.upper()} {o.path}")
def test_no_request_gets_a_server_error(
    operation: Any, mode: GenerationMode, call_api: ApiCall, deployment: Deployment
) -> None:
    deployment.seed(OWNED, "u1", Status.READY)
    deployment.stack.parameters["SessionsPerUser"] = "100000"
    deployment.stack.parameters["GlobalSessionCap"] = "100000"

    @settings(
        max_examples=EXAMPLES_PER_OPERATION_AND_MODE,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode), caller=CALLERS, data=st.data())
    def fuzz(case: Any, caller: tuple[str | None, str | None], data: st.DataObject) -> None:
        arguments = event_arguments(case.as_transport_kwargs(base_url="https://api.example.com"))
        if "{session_id}" in operation.path and data.draw(st.booleans(), label="on the owned session"):
            arguments["path"] = operation.path.replace("{session_id}", OWNED)
        if operation.method.upper() == "POST" and data.draw(st.integers(0, 9), label="raw body") == 0:
            arguments["body"] = data.draw(RAW_BODIES, label="body")
        sub, groups = caller
        response = call_api(
            operation.method.upper(), arguments.pop("path"), sub=sub, groups=groups, **arguments
        )

        STATS.cases += 1
        if response.status >= 500:
            STATS.server_errors.append(f"{operation.method.upper()} {operation.path}: {response}")
        assert response.status < 500, response
        if response.status >= 400:
            assert isinstance(response.body, dict) and {"code", "message"} <= set(response.body), response

    fuzz()
