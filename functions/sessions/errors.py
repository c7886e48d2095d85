"""Errors the API reports to clients: each has an HTTP status, a stable code and a message that names
the field at fault when there is one.

The same ``{code, message, field?}`` shape comes from API Gateway itself (template.yaml's
GatewayResponses), so a client handles one shape whichever layer refused it."""

from __future__ import annotations

from http import HTTPStatus

MAX_MESSAGE_CHARS = 200
MAX_FIELD_CHARS = 64


def excerpt(text: str, limit: int) -> str:
    """At most ``limit`` characters of ``text``: messages and field names can carry the caller's input (an
    unknown property's name, a path), and an error answer must never echo more than a glimpse of it."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ApiError(Exception):
    status: HTTPStatus = HTTPStatus.BAD_REQUEST
    code: str = "BadRequest"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def body(self) -> dict[str, str]:
        body = {"code": self.code, "message": excerpt(self.message, MAX_MESSAGE_CHARS)}
        if self.field:
            body["field"] = excerpt(self.field, MAX_FIELD_CHARS)
        return body


class InvalidRequest(ApiError):
    status, code = HTTPStatus.BAD_REQUEST, "InvalidRequest"


class Unauthorized(ApiError):
    status, code = HTTPStatus.UNAUTHORIZED, "Unauthorized"


class Forbidden(ApiError):
    """The request is well formed but the caller may not do it: the access policy or an admin-only action."""

    status, code = HTTPStatus.FORBIDDEN, "Forbidden"


class NotFound(ApiError):
    status, code = HTTPStatus.NOT_FOUND, "NotFound"


class Conflict(ApiError):
    status, code = HTTPStatus.CONFLICT, "Conflict"


class PayloadTooLarge(ApiError):
    status, code = HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "PayloadTooLarge"


class ValidationFailed(ApiError):
    """The request does not match the route's schema (a missing, extra or mistyped field, a malformed id)."""

    status, code = HTTPStatus.UNPROCESSABLE_ENTITY, "ValidationError"


class UnsupportedMediaType(ApiError):
    status, code = HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaType"


class QuotaExceeded(ApiError):
    status, code = HTTPStatus.TOO_MANY_REQUESTS, "QuotaExceeded"


class Unavailable(ApiError):
    status, code = HTTPStatus.SERVICE_UNAVAILABLE, "Unavailable"
