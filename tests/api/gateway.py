"""API Gateway REST (v1) proxy events as the Cognito user pool authorizer hands them to the function.

One factory for the tests and for the sample events in events/, so both speak the same shape: the
route's `resource` template and `pathParameters`, the caller's `sub` in
`requestContext.authorizer.claims`, headers in both the single and the multi-value form.
"""

from __future__ import annotations

import json
import re
from typing import Any

ACCOUNT_ID = "123456789012"
REGION = "us-east-1"
API_ID = "a1b2c3d4e5"
STAGE = "dev"
USER_POOL = "us-east-1_Ab12Cd34E"
_SESSION_PATH = re.compile(r"^/sessions/(?P<session_id>[^/]+)(?P<rest>/[^/]+)?$")


def claims(sub: str, groups: str | None = None) -> dict[str, str]:
    """The ID-token claims API Gateway's Cognito authorizer passes on (all values are strings; a user in
    groups gets `cognito:groups` as the authorizer flattens it, e.g. "[admins dev]")."""
    group_claim = {} if groups is None else {"cognito:groups": groups}
    return group_claim | {
        "sub": sub,
        "iss": f"https://cognito-idp.{REGION}.amazonaws.com/{USER_POOL}",
        "cognito:username": sub,
        "aud": "6example2client3id4abcdefgh",
        "token_use": "id",
        "auth_time": "1767261600",
        "exp": "Thu Jan 01 11:00:00 UTC 2026",
        "iat": "Thu Jan 01 10:00:00 UTC 2026",
        "email": "dev@example.com",
        "email_verified": "true",
    }


def resource_of(path: str) -> tuple[str, dict[str, str] | None]:
    """The route template API Gateway matched for `path`, and its path parameters."""
    match = _SESSION_PATH.match(path)
    if not match:
        return path, None
    return "/sessions/{session_id}" + (match.group("rest") or ""), {"session_id": match.group("session_id")}


def api_event(
    method: str,
    path: str,
    *,
    body: Any = None,
    headers: dict[str, str] | None = None,
    sub: str | None = "user-1",
    groups: str | None = None,
    query: dict[str, str] | None = None,
    request_id: str = "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
) -> dict[str, Any]:
    """A proxy event for `method path`; `body` is sent as JSON unless it is already a string."""
    resource, path_parameters = resource_of(path)
    all_headers = {
        "Accept": "application/json",
        "Authorization": "Bearer eyJraWQiOiJleGFtcGxlIiwiYWxnIjoiUlMyNTYifQ.e30.c2lnbmF0dXJl",
        "Host": f"{API_ID}.execute-api.{REGION}.amazonaws.com",
        "User-Agent": "cloudide-backend/1.0",
        "X-Amzn-Trace-Id": "Root=1-67891233-abcdef012345678912345678",
        "X-Forwarded-For": "203.0.113.10",
        "X-Forwarded-Port": "443",
        "X-Forwarded-Proto": "https",
    }
    if body is not None:
        all_headers["Content-Type"] = "application/json"
    all_headers.update(headers or {})
    authorizer: dict[str, Any] = {"claims": claims(sub, groups)} if sub is not None else {}
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": all_headers,
        "multiValueHeaders": {name: [value] for name, value in all_headers.items()},
        "queryStringParameters": query,
        "multiValueQueryStringParameters": {name: [value] for name, value in query.items()}
        if query
        else None,
        "pathParameters": path_parameters,
        "stageVariables": None,
        "requestContext": {
            "resourceId": "abc123",
            "resourcePath": resource,
            "httpMethod": method,
            "extendedRequestId": "c6af9ac6EXAMPLE=",
            "requestTime": "01/Jan/2026:10:00:00 +0000",
            "path": f"/{STAGE}{path}",
            "accountId": ACCOUNT_ID,
            "protocol": "HTTP/1.1",
            "stage": STAGE,
            "domainPrefix": API_ID,
            "requestTimeEpoch": 1767261600000,
            "requestId": request_id,
            "identity": {
                "cognitoIdentityPoolId": None,
                "accountId": None,
                "cognitoIdentityId": None,
                "caller": None,
                "sourceIp": "203.0.113.10",
                "principalOrgId": None,
                "accessKey": None,
                "cognitoAuthenticationType": None,
                "cognitoAuthenticationProvider": None,
                "userArn": None,
                "userAgent": "cloudide-backend/1.0",
                "user": None,
            },
            "authorizer": authorizer,
            "domainName": f"{API_ID}.execute-api.{REGION}.amazonaws.com",
            "apiId": API_ID,
        },
        "body": body if body is None or isinstance(body, str) else json.dumps(body),
        "isBase64Encoded": False,
    }
