"""Whatever a client sends, the API answers with a client error in its error shape, never a 500."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sessions.record import Status

from tests.api.conftest import ApiCall, Deployment

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

OWNED = "8c0e7a52-3f1b-4d6e-9a27-5b4c1d2e3f60"
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
start_fields = st.fixed_dictionaries(
    {},
    optional={
        "projectId": json_values | st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True),
        "image": json_values | st.sampled_from(["base", "other"]),
        "tier": json_values | st.sampled_from(["small", "medium", "large", "xlarge"]),
        "idleTimeoutMinutes": json_values | st.integers(-10, 2000),
    },
)
bodies = st.one_of(
    st.none(),
    st.text(max_size=40),  # raw text: often not JSON at all
    json_values,
    start_fields,
    st.dictionaries(st.text(max_size=12), json_values, max_size=5),
)
session_ids = st.one_of(st.just(OWNED), st.uuids().map(str), st.text(min_size=1, max_size=40))
routes = st.sampled_from(
    [
        ("POST", "/sessions"),
        ("GET", "/sessions"),
        ("GET", "/sessions/{}"),
        ("POST", "/sessions/{}/activity"),
        ("DELETE", "/sessions/{}"),
        ("POST", "/sessions/{}/connect"),
    ]
)
headers: st.SearchStrategy[dict[str, str]] = st.one_of(
    st.just({}),
    st.fixed_dictionaries({"Idempotency-Key": st.text(max_size=140)}),
    st.fixed_dictionaries(
        {"Content-Type": st.sampled_from(["text/plain", "application/x-www-form-urlencoded"])}
    ),
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    route=routes,
    session_id=session_ids,
    body=bodies,
    extra_headers=headers,
    sub=st.sampled_from(["u1", None]),
)
def test_no_input_makes_the_api_fail(
    call_api: ApiCall,
    deployment: Deployment,
    route: tuple[str, str],
    session_id: str,
    body: Any,
    extra_headers: dict[str, str],
    sub: str | None,
) -> None:
    if deployment.store.get(OWNED) is None:
        deployment.seed(OWNED, "u1", Status.READY)
    deployment.stack.parameters["SessionsPerUser"] = "1000"
    method, template = route
    path = template.format(session_id.replace("?", "%3F").replace("#", "%23"))

    response = call_api(method, path, body=body, headers=extra_headers, sub=sub)

    assert response.status < 500, response
    if response.status >= 400:
        assert isinstance(response.body, dict) and {"code", "message"} <= set(response.body), response
