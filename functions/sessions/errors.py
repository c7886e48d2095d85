"""Errors the API reports to clients: each has an HTTP status, a stable code and a message that names
the field at fault when there is one."""

from __future__ import annotations

from http import HTTPStatus


class ApiError(Exception):
    status: HTTPStatus = HTTPStatus.BAD_REQUEST
    code: str = "BadRequest"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def body(self) -> dict[str, str]:
        body = {"code": self.code, "message": self.message}
        if self.field:
            body["field"] = self.field
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


class UnsupportedMediaType(ApiError):
    status, code = HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaType"


class QuotaExceeded(ApiError):
    status, code = HTTPStatus.TOO_MANY_REQUESTS, "QuotaExceeded"


class Unavailable(ApiError):
    status, code = HTTPStatus.SERVICE_UNAVAILABLE, "Unavailable"
