"""REST API: thin routes over SessionService. The owner is always the authorizer's `sub` claim, so a
caller can only ever address their own sessions; anyone else's look exactly like missing ones (404).
Members of the admin group (ADMIN_GROUP) may also list everyone's sessions and stop any of them, and
nothing else: no reading, connecting to or reporting activity on sessions that are not theirs.

The routes live on a Router that each deployment's resolver includes: the resolver carries the deployment's
CORS origin (with a proxy integration API Gateway adds CORS headers to the preflight only, so every answer
of the function must carry its own), and one offline process serves several deployments."""

from __future__ import annotations

import json
from functools import cache
from http import HTTPStatus
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import (
    APIGatewayRestResolver,
    CORSConfig,
    Response,
    content_types,
)
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Path, Query
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.event_handler.util import extract_origin_header
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyValidationError,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from sessions.api_models import (
    SESSION_ID_PATTERN,
    ConnectRequest,
    ConnectResponse,
    ErrorBody,
    SessionList,
    SessionView,
    StartSessionRequest,
)
from sessions.errors import (
    MAX_FIELD_CHARS,
    ApiError,
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
    excerpt,
)
from sessions.identity import Caller
from sessions.observability import logger, metrics, tracer
from sessions.wiring import components

# API Gateway accepts 10 MB; no valid request here is more than a few hundred bytes.
MAX_BODY_BYTES = 16 * 1024
IDEMPOTENCY_WINDOW_SECONDS = 24 * 3600

router = Router()

SessionId = Annotated[str, Path(pattern=SESSION_ID_PATTERN, description="The session's id")]
ERRORS: dict[int, OpenAPIResponse] = {
    code: {"description": text, "content": {"application/json": {"model": ErrorBody}}}
    for code, text in (
        (400, "Invalid request"),
        (401, "Missing or invalid token"),
        (403, "Not allowed: the caller's access policy (the field says what), or an admin-only action"),
        (404, "No such session (or not yours)"),
        (409, "The session is not in a status that allows this"),
        (413, "Body too large"),
        (415, "Body is not application/json"),
        (422, "Request failed validation"),
        (429, "Session quota reached"),
        (503, "Temporarily unavailable"),
    )
}


@cache
def cors(allow_origin: str) -> CORSConfig:
    return CORSConfig(allow_origin=allow_origin, allow_headers=["Idempotency-Key"])


@cache
def resolver(allow_origin: str) -> APIGatewayRestResolver:
    """The API as deployed with ``allow_origin`` (the CorsAllowOrigin parameter)."""
    app = APIGatewayRestResolver(enable_validation=True, cors=cors(allow_origin))
    app.enable_swagger(path="/openapi", title="CloudIDE Terminals API", version="1.0.0")
    app.include_router(router)
    return app


def _caller() -> Caller:
    event = router.current_event
    assert isinstance(event, APIGatewayProxyEvent), "the resolver hands REST (v1) proxy events"
    return Caller.from_claims(event.request_context.authorizer.claims)


def _owner() -> str:
    return _caller().user_id


def _is_admin(caller: Caller) -> bool:
    return caller.in_group(components().settings.admin_group)


def _error(status: int, body: dict[str, Any]) -> Response:
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=body)


@router.exception_handler(ApiError)
def _api_error(error: ApiError) -> Response:
    return _error(error.status, error.body())


@router.exception_handler(RequestValidationError)
def _validation_error(error: RequestValidationError) -> Response:
    problems = error.errors()
    first = problems[0] if problems else {}
    if first.get("type") == "json_invalid":
        detail = first.get("ctx", {}).get("error", "malformed")
        return _api_error(InvalidRequest(f"body is not valid JSON: {detail}", field="body"))
    location = [str(part) for part in first.get("loc", ()) if part not in ("body",)] or ["body"]
    field = excerpt(".".join(location), MAX_FIELD_CHARS)
    message = f"{field}: {first.get('msg', 'invalid')}"
    if len(problems) > 1:
        message += f" (and {len(problems) - 1} more problem(s))"
    return _api_error(ValidationFailed(message, field=field))


@router.exception_handler(RequestUnsupportedContentType)
def _unsupported_content_type(_: RequestUnsupportedContentType) -> Response:
    return _api_error(UnsupportedMediaType("send the body as application/json", field="Content-Type"))


@router.exception_handler(NotFoundError)
def _no_route(_: NotFoundError) -> Response:
    event = router.current_event
    return _api_error(NotFound(f"no route {event.http_method} {event.path}"))


@router.exception_handler(IdempotencyValidationError)
def _idempotency_mismatch(_: IdempotencyValidationError) -> Response:
    return _api_error(
        Conflict("this Idempotency-Key was used with a different request body", field="Idempotency-Key")
    )


@router.exception_handler(IdempotencyAlreadyInProgressError)
def _idempotency_in_progress(_: IdempotencyAlreadyInProgressError) -> Response:
    return _api_error(
        Conflict("a request with this Idempotency-Key is still in progress", field="Idempotency-Key")
    )


@router.post("/sessions", responses={202: {"description": "Session accepted; poll until READY"}, **ERRORS})
def start_session(
    request: Annotated[StartSessionRequest, Body()],
    idempotency_key: Annotated[
        str | None, Header(alias="idempotency-key", min_length=1, max_length=128, description="Safe retries")
    ] = None,
) -> Response[SessionView]:
    caller = _caller()
    owner = caller.user_id
    if idempotency_key:
        start = {"ownerId": owner, "groups": sorted(caller.groups), "key": idempotency_key}
        view = _start_once(start=start | {"body": request.model_dump()})
    else:
        view = components().service.start(owner, request, groups=caller.groups).public()
    return Response(HTTPStatus.ACCEPTED, content_types.APPLICATION_JSON, SessionView.model_validate(view))


def _start_once(start: dict[str, Any]) -> dict[str, Any]:
    """The same owner and Idempotency-Key within the window get the first answer, not a new session."""
    settings = components().settings
    store = DynamoDBPersistenceLayer(table_name=settings.idempotency_table)
    config = IdempotencyConfig(
        event_key_jmespath="[ownerId, key]",
        payload_validation_jmespath="body",
        expires_after_seconds=IDEMPOTENCY_WINDOW_SECONDS,
    )
    # Without the context an in-progress record outlives a timed-out invocation for the whole window,
    # and every retry with the key would get 409 until then.
    config.register_lambda_context(router.lambda_context)

    @idempotent_function(data_keyword_argument="start", persistence_store=store, config=config)
    def start_once(start: dict[str, Any]) -> dict[str, Any]:
        request = StartSessionRequest.model_validate(start["body"])
        groups = frozenset(start["groups"])
        return components().service.start(start["ownerId"], request, groups=groups).public()

    return start_once(start=start)


@router.get("/sessions", responses={200: {"description": "The caller's sessions, newest first"}, **ERRORS})
def list_sessions(
    all_users: Annotated[
        bool, Query(alias="all", description="Every user's sessions (admin group only, else 403)")
    ] = False,
) -> SessionList:
    caller = _caller()
    if all_users and not _is_admin(caller):
        raise Forbidden("listing every user's sessions needs the admin group", field="all")
    service = components().service
    sessions = service.list_all() if all_users else service.list(caller.user_id)
    return SessionList(sessions=[SessionView.model_validate(s.public()) for s in sessions])


@router.get("/sessions/<session_id>", responses={200: {"description": "The session"}, **ERRORS})
def get_session(session_id: SessionId) -> SessionView:
    return SessionView.model_validate(components().service.get(_owner(), session_id).public())


@router.post(
    "/sessions/<session_id>/activity", responses={202: {"description": "Activity recorded"}, **ERRORS}
)
def report_activity(session_id: SessionId) -> Response[SessionView]:
    session = components().service.report_activity(_owner(), session_id)
    return Response(
        HTTPStatus.ACCEPTED, content_types.APPLICATION_JSON, SessionView.model_validate(session.public())
    )


@router.delete(
    "/sessions/<session_id>",
    responses={202: {"description": "Stop requested (admins may stop anyone's session)"}, **ERRORS},
)
def stop_session(session_id: SessionId) -> Response[SessionView]:
    caller, service = _caller(), components().service
    if _is_admin(caller):
        session = service.stop_any(session_id, admin_id=caller.user_id)
    else:
        session = service.stop(caller.user_id, session_id)
    return Response(
        HTTPStatus.ACCEPTED, content_types.APPLICATION_JSON, SessionView.model_validate(session.public())
    )


@router.post(
    "/sessions/<session_id>/connect",
    responses={
        200: {"description": "A data channel to the session's shell, good for one connection"},
        **ERRORS,
    },
)
def connect(
    session_id: SessionId, request: Annotated[ConnectRequest | None, Body()] = None
) -> ConnectResponse:
    read_only = bool(request and request.readOnly)
    replaces = request.replaces if request else None
    return ConnectResponse.model_validate(
        components().service.connect(_owner(), session_id, read_only=read_only, replaces=replaces)
    )


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    origin = components().settings.cors_allow_origin
    body = event.get("body") or ""
    if len(body.encode() if isinstance(body, str) else body) > MAX_BODY_BYTES:
        # Refused for its size before anything parses or validates it (the validator would quote it).
        return _refuse_unread(
            event, origin, PayloadTooLarge(f"body exceeds {MAX_BODY_BYTES} bytes", field="body")
        )
    return resolver(origin).resolve(event, context)


def _refuse_unread(event: dict[str, Any], origin: str, error: ApiError) -> dict[str, Any]:
    """An answer for a request the resolver must not see, with the CORS headers it would have added."""
    config = cors(origin)
    allowed = config.allowed_origin(extract_origin_header(APIGatewayProxyEvent(event).resolved_headers_field))
    return {
        "statusCode": int(error.status),
        "headers": {"Content-Type": content_types.APPLICATION_JSON} | config.to_dict(allowed),
        "body": json.dumps(error.body()),
        "isBase64Encoded": False,
    }
