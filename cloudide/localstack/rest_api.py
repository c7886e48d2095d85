"""The REST API on localhost, served the way API Gateway serves the deployed template.

Routes, proxy integrations, CORS preflights, request-body models and gateway responses all come from the
OpenAPI body SAM generates for the template's ``AWS::Serverless::Api`` (the same translation the stack was
deployed from), so a route added to the template is served here with no change to this module. Each request
becomes the REST (v1) proxy event API Gateway would send and is handed to the deployed function through
Lambda Invoke on the local AWS; the function's answer becomes the HTTP response, with the headers the
function returned and nothing else (with a proxy integration API Gateway adds no CORS header: the backend is
responsible). What API Gateway answers itself (an unknown route, the authorizer's 401, the request
validator's 400, a body over 10 MB, a failed function) is rendered from the template's gateway responses the
way API Gateway renders them: plain variable substitution, no escaping, no header the template does not name,
and the request validator's messages in the words of the JSON-schema validator API Gateway runs (which quote
the offending input whole). See docs/aws-behaviour.md for the sources.

What differs from AWS, on purpose: the Cognito authorizer is replaced by a stand-in that accepts
``Authorization: Bearer local:<user-id>`` (optionally ``local:<user-id>:<group>[,<group>...]`` for the
``cognito:groups`` claim) and refuses anything else with 401, and ``GET /health`` answers ``ready`` once
the whole local stack is up.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jsonschema

logger = logging.getLogger(__name__)

PAYLOAD_LIMIT_BYTES = 10 * 1024 * 1024
"""API Gateway's request payload quota: larger bodies get 413 before any function runs."""
INTEGRATION_TIMEOUT_S = 29.0
"""API Gateway's default integration timeout for REST APIs."""
TOKEN_PATTERN = re.compile(
    r"(?:Bearer\s+)?local:(?P<user>[A-Za-z0-9._@-]{1,64})(?::(?P<groups>[A-Za-z0-9._,-]{1,256}))?"
)
API_ID = "local"
STAGE = "local"

Invoke = Callable[[str, dict[str, Any]], tuple[dict[str, Any] | None, bool]]
"""``(function physical name, event) -> (payload, function errored)``: Lambda's synchronous Invoke; raises
TimeoutError when the function has not answered within the integration timeout."""


class TemplateError(ValueError):
    """The translated template's API body is not one this emulation understands."""


@dataclass(frozen=True)
class Route:
    """One method of one resource of the REST API, as its OpenAPI body declares it."""

    method: str
    resource: str  # API Gateway's resource template, e.g. /sessions/{session_id}
    pattern: re.Pattern[str]
    function: str | None  # logical id of the proxied function; None for a mock (CORS) method
    authorized: bool
    body_schema: dict[str, Any] | None = None
    response_headers: dict[str, str] = field(default_factory=dict)  # a mock method's static headers

    def match(self, path: str) -> dict[str, str] | None:
        found = self.pattern.fullmatch(path)
        return found.groupdict() if found else None


def _path_pattern(resource: str) -> re.Pattern[str]:
    parts = re.split(r"\{([A-Za-z0-9_]+)\+?\}", resource)
    regex = "".join(
        re.escape(part) if index % 2 == 0 else f"(?P<{part}>[^/]+)" for index, part in enumerate(parts)
    )
    return re.compile(regex)


_FUNCTION_IN_URI = re.compile(r"\$\{(?P<logical_id>[A-Za-z0-9]+)\.Arn\}")


def _function_of(integration: Mapping[str, Any]) -> str:
    uri = integration.get("uri")
    text = uri.get("Fn::Sub") if isinstance(uri, Mapping) else uri
    found = _FUNCTION_IN_URI.search(str(text))
    if not found:
        raise TemplateError(f"cannot tell which function the integration uri {uri!r} proxies to")
    return found.group("logical_id")


def _header_values(
    parameters_map: Mapping[str, Any], prefix: str, parameters: Mapping[str, str]
) -> dict[str, str]:
    """Static header mappings (``'literal'``, or ``Ref`` to a template parameter) as API Gateway sends them."""
    headers: dict[str, str] = {}
    for name, value in parameters_map.items():
        if isinstance(value, Mapping) and "Ref" in value:
            value = parameters[value["Ref"]]
        text = str(value)
        if not (len(text) >= 2 and text[0] == text[-1] == "'"):
            raise TemplateError(f"header mapping {name} = {text!r} is not a quoted static value")
        headers[name.removeprefix(prefix)] = text[1:-1]
    return headers


def _static_headers(integration: Mapping[str, Any], parameters: Mapping[str, str]) -> dict[str, str]:
    """A mock integration's response headers."""
    response = integration.get("responses", {}).get("default", {})
    return _header_values(response.get("responseParameters", {}), "method.response.header.", parameters)


def routes_from_template(
    template: Mapping[str, Any], parameters: Mapping[str, str], api_logical_id: str = "Api"
) -> list[Route]:
    """Every route the translated template's REST API body declares."""
    try:
        body = template["Resources"][api_logical_id]["Properties"]["Body"]
    except KeyError:
        raise TemplateError(f"the template has no REST API {api_logical_id!r} with an OpenAPI body") from None
    definitions = body.get("definitions", {})
    routes: list[Route] = []
    for resource, methods in body.get("paths", {}).items():
        for method, spec in methods.items():
            integration = spec.get("x-amazon-apigateway-integration", {})
            mock = integration.get("type") == "mock"
            schema = next(
                (p["schema"] for p in spec.get("parameters", []) if p.get("in") == "body" and "schema" in p),
                None,
            )
            if schema and "$ref" in schema:
                schema = definitions[schema["$ref"].rsplit("/", 1)[-1]]
            routes.append(
                Route(
                    method=method.upper(),
                    resource=resource,
                    pattern=_path_pattern(resource),
                    function=None if mock else _function_of(integration),
                    authorized=bool(spec.get("security")),
                    body_schema=schema if spec.get("x-amazon-apigateway-request-validator") else None,
                    response_headers=_static_headers(integration, parameters) if mock else {},
                )
            )
    return routes


def claims_for(user_id: str, groups: str | None) -> dict[str, str]:
    """The ID-token claims the Cognito authorizer would pass on for this local user (all strings)."""
    now = int(time.time())
    claims = {
        "sub": user_id,
        "cognito:username": user_id,
        "token_use": "id",
        "iss": "http://127.0.0.1/local-authorizer",
        "auth_time": str(now),
        "iat": formatdate(now, usegmt=True),
        "exp": formatdate(now + 3600, usegmt=True),
    }
    if groups:
        claims["cognito:groups"] = groups
    return claims


def proxy_event(
    route: Route,
    *,
    path: str,
    path_parameters: dict[str, str],
    headers: Mapping[str, str],
    query: Mapping[str, list[str]],
    body: str | None,
    claims: Mapping[str, str] | None,
    source_ip: str,
    request_id: str,
    request_time_epoch_ms: int,
    api_id: str = API_ID,
    stage: str = STAGE,
    domain: str = "127.0.0.1",
) -> dict[str, Any]:
    """The REST (v1) proxy event API Gateway hands a Lambda proxy integration."""
    return {
        "resource": route.resource,
        "path": path,
        "httpMethod": route.method,
        "headers": dict(headers) or None,
        "multiValueHeaders": {name: [value] for name, value in headers.items()} or None,
        "queryStringParameters": {name: values[-1] for name, values in query.items()} or None,
        "multiValueQueryStringParameters": dict(query) or None,
        "pathParameters": path_parameters or None,
        "stageVariables": None,
        "requestContext": {
            "resourceId": route.resource,
            "resourcePath": route.resource,
            "httpMethod": route.method,
            "requestTime": time.strftime(
                "%d/%b/%Y:%H:%M:%S +0000", time.gmtime(request_time_epoch_ms / 1000)
            ),
            "requestTimeEpoch": request_time_epoch_ms,
            "path": f"/{stage}{path}",
            "accountId": "123456789012",
            "protocol": "HTTP/1.1",
            "stage": stage,
            "domainPrefix": api_id,
            "domainName": domain,
            "apiId": api_id,
            "requestId": request_id,
            "extendedRequestId": request_id,
            "identity": {"sourceIp": source_ip, "userAgent": headers.get("User-Agent")},
            "authorizer": {"claims": dict(claims)} if claims is not None else {},
        },
        "body": body,
        "isBase64Encoded": False,
    }


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


DEFAULT_TEMPLATE = '{"message":$context.error.messageString}'
"""The body API Gateway gives a gateway response the template does not customise."""
DEFAULT_STATUS = {
    "MISSING_AUTHENTICATION_TOKEN": 403,
    "UNAUTHORIZED": 401,
    "BAD_REQUEST_BODY": 400,
    "REQUEST_TOO_LARGE": 413,
    "INTEGRATION_TIMEOUT": 504,
    "DEFAULT_5XX": 502,  # a failed or malformed Lambda proxy answer
    "DEFAULT_4XX": 400,
}
_CONTEXT_VARIABLE = re.compile(r"\$context\.[A-Za-z.]+")


@dataclass(frozen=True)
class GatewayError:
    """An answer API Gateway gives itself, before or instead of the function."""

    response_type: str
    message: str
    validation: str = ""  # $context.error.validationErrorString: the request validator's findings


UNKNOWN_ROUTE = GatewayError("MISSING_AUTHENTICATION_TOKEN", "Missing Authentication Token")
UNAUTHORIZED = GatewayError("UNAUTHORIZED", "Unauthorized")
TOO_LARGE = GatewayError("REQUEST_TOO_LARGE", "Request Too Long")
TIMED_OUT = GatewayError("INTEGRATION_TIMEOUT", "Endpoint request timed out")
FUNCTION_FAILED = GatewayError("DEFAULT_5XX", "Internal server error")


@dataclass(frozen=True)
class GatewayResponse:
    """One entry of ``x-amazon-apigateway-gateway-responses``: status override, headers, body template."""

    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    template: str | None = None


def gateway_responses_from_template(
    template: Mapping[str, Any], parameters: Mapping[str, str], api_logical_id: str = "Api"
) -> dict[str, GatewayResponse]:
    """The gateway responses the translated template's REST API body customises, by response type."""
    body = template["Resources"][api_logical_id]["Properties"]["Body"]
    responses: dict[str, GatewayResponse] = {}
    for response_type, spec in body.get("x-amazon-apigateway-gateway-responses", {}).items():
        status = spec.get("statusCode")
        responses[response_type] = GatewayResponse(
            status=int(status) if status else None,
            headers=_header_values(spec.get("responseParameters", {}), "gatewayresponse.header.", parameters),
            template=spec.get("responseTemplates", {}).get("application/json"),
        )
    return responses


def _render(error: GatewayError, responses: Mapping[str, GatewayResponse], request_id: str) -> Answer:
    """What API Gateway sends for ``error``: the type's own response, else DEFAULT_4XX/5XX, else its default.

    The template is plain substitution: values go in raw (only ``messageString`` is quoted), so a template
    that puts the validator's findings between double quotes produces a body that is not JSON."""
    status = DEFAULT_STATUS[error.response_type]
    fallback = responses.get("DEFAULT_5XX" if status >= 500 else "DEFAULT_4XX", GatewayResponse())
    own = responses.get(error.response_type)
    chosen = own or fallback
    status = (own.status if own else None) or fallback.status or status
    values = {
        "$context.error.message": error.message,
        "$context.error.messageString": json.dumps(error.message),
        "$context.error.responseType": error.response_type,
        "$context.error.validationErrorString": error.validation,
        "$context.requestId": request_id,
    }
    body = _CONTEXT_VARIABLE.sub(lambda m: values.get(m.group(0), ""), chosen.template or DEFAULT_TEMPLATE)
    return Answer(status, {"Content-Type": "application/json"} | chosen.headers, body.encode())


@dataclass
class LocalRestApi:
    """Routes requests to the deployed functions; thread-safe, one thread per connection."""

    routes: list[Route]
    functions: Mapping[str, str]  # logical id -> physical function name
    invoke: Invoke
    gateway_responses: Mapping[str, GatewayResponse] = field(default_factory=dict)
    ready: threading.Event = field(default_factory=threading.Event)

    def refuse(self, error: GatewayError) -> Answer:
        return _render(error, self.gateway_responses, str(uuid.uuid4()))

    def handle(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes, source_ip: str
    ) -> Answer:
        url = urlsplit(target)
        if url.path == "/health" and method == "GET":
            ready = self.ready.is_set()
            state = {"status": "ready" if ready else "starting"}
            return Answer(
                200 if ready else 503, {"Content-Type": "application/json"}, json.dumps(state).encode()
            )
        matches = [(route, found) for route in self.routes if (found := route.match(url.path)) is not None]
        route, path_parameters = next(((r, p) for r, p in matches if r.method == method), (None, None))
        if route is None or path_parameters is None:
            # API Gateway answers an unknown route or method this way, before any authorizer.
            return self.refuse(UNKNOWN_ROUTE)
        if route.function is None:
            return Answer(200, {"Content-Type": "application/json"} | route.response_headers, b"{}")
        if len(body) > PAYLOAD_LIMIT_BYTES:
            return self.refuse(TOO_LARGE)
        claims = None
        if route.authorized:
            token = TOKEN_PATTERN.fullmatch(headers.get("Authorization", "").strip())
            if not token:
                return self.refuse(UNAUTHORIZED)
            claims = claims_for(token.group("user"), token.group("groups"))
        text = body.decode("utf-8", errors="replace") if body else None
        if route.body_schema is not None and _is_json(headers):
            findings = _validate_body(route.body_schema, text)
            if findings:
                return self.refuse(GatewayError("BAD_REQUEST_BODY", "Invalid request body", findings))
        event = proxy_event(
            route,
            path=url.path,
            path_parameters=path_parameters,
            headers=headers,
            query=parse_qs(url.query),
            body=text,
            claims=claims,
            source_ip=source_ip,
            request_id=str(uuid.uuid4()),
            request_time_epoch_ms=int(time.time() * 1000),
        )
        try:
            payload, errored = self.invoke(self.functions[route.function], event)
        except TimeoutError:
            logger.error("function %s did not answer within %.0f s", route.function, INTEGRATION_TIMEOUT_S)
            return self.refuse(TIMED_OUT)
        if errored or not isinstance(payload, dict) or "statusCode" not in payload:
            logger.error("function %s failed or answered badly: %s", route.function, payload)
            return self.refuse(FUNCTION_FAILED)
        return _answer(payload)


def _is_json(headers: Mapping[str, str]) -> bool:
    """The validator checks a body only against the model of its content type (JSON when none is sent)."""
    content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), "application/json")
    return content_type.split(";")[0].strip().lower() == "application/json"


_TYPE_NAMES = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _finding(error: jsonschema.ValidationError) -> str:
    """One finding in the words of the JSON-schema validator API Gateway runs (java-json-tools), which quote
    the offending value or property names whole."""
    keyword, expected, instance = error.validator, error.validator_value, error.instance
    if keyword == "required":
        missing = [name for name in expected if name not in instance]
        return f"object has missing required properties ({_compact(missing)})"
    if keyword == "additionalProperties":
        unwanted = sorted(set(instance) - set(error.schema.get("properties", {})))
        return f"object instance has properties which are not allowed by the schema: {_compact(unwanted)}"
    if keyword == "type":
        allowed = expected if isinstance(expected, list) else [expected]
        found = "null" if instance is None else _TYPE_NAMES[type(instance)]
        return f"instance type ({found}) does not match any allowed primitive type (allowed: {_compact(allowed)})"
    if keyword == "maxLength":
        return f'string "{instance}" is too long (length: {len(instance)}, maximum allowed: {expected})'
    if keyword == "minLength":
        return f'string "{instance}" is too short (length: {len(instance)}, required minimum: {expected})'
    if keyword == "maximum":
        return (
            f"numeric instance is greater than the required maximum (maximum: {expected}, found: {instance})"
        )
    if keyword == "minimum":
        return f"numeric instance is lower than the required minimum (minimum: {expected}, found: {instance})"
    return str(error.message)


def _validate_body(schema: dict[str, Any], text: str | None) -> str:
    """API Gateway's request validator: the body must be JSON matching the model (draft 4). Returns
    ``$context.error.validationErrorString`` (every finding, bracketed), empty when the body is valid."""
    try:
        document = json.loads(text) if text else None
    except json.JSONDecodeError:
        return "[Invalid JSON in request body]"
    findings = [_finding(e) for e in jsonschema.Draft4Validator(schema).iter_errors(document)]
    return f"[{', '.join(findings)}]" if findings else ""


def _answer(payload: dict[str, Any]) -> Answer:
    headers = {name: str(value) for name, value in (payload.get("headers") or {}).items()}
    for name, values in (payload.get("multiValueHeaders") or {}).items():
        headers[name] = ", ".join(str(value) for value in values)
    body = payload.get("body") or ""
    raw = base64.b64decode(body) if payload.get("isBase64Encoded") else str(body).encode()
    return Answer(int(payload["statusCode"]), headers, raw)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > PAYLOAD_LIMIT_BYTES:
            answer = self.server.api.refuse(TOO_LARGE)
            self._discard(length)  # so the client, still sending, reads the answer instead of a reset
            self.close_connection = True
        else:
            body = self.rfile.read(length) if length else b""
            headers = {name: value for name, value in self.headers.items()}
            try:
                answer = self.server.api.handle(
                    self.command, self.path, headers, body, self.client_address[0]
                )
            except Exception:
                logger.exception("local REST API failed on %s %s", self.command, self.path)
                answer = self.server.api.refuse(FUNCTION_FAILED)
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        self.wfile.write(answer.body)

    def _discard(self, length: int, chunk: int = 1 << 20) -> None:
        while length > 0:
            read = len(self.rfile.read(min(chunk, length)))
            if not read:
                return
            length -= read

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _serve

    def log_message(self, format: str, *args: Any) -> None:
        logger.info("%s %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default backlog of 5 resets connections when an IDE fans out

    def __init__(self, address: tuple[str, int], api: LocalRestApi) -> None:
        super().__init__(address, _Handler)
        self.api = api


@dataclass
class RestApiServer:
    """The HTTP side: ``start()`` binds and serves on a thread, ``close()`` stops it."""

    api: LocalRestApi
    host: str = "127.0.0.1"
    port: int = 3000
    _server: _Server | None = None
    _thread: threading.Thread | None = None

    def __enter__(self) -> RestApiServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> RestApiServer:
        self._server = _Server((self.host, self.port), self.api)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="rest-api", daemon=True)
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
