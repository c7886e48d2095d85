# mypy: disable-error-code="method-assign,attr-defined,assignment,union-attr"
# mypy: disable-error-code="typeddict-item,arg-type,var-annotated,unused-ignore"
# (this module patches moto classes in place; moto's own annotations cannot describe that)
"""Correction of moto's server for SigV4 presigned URLs (credential scope in the query string)."""

from __future__ import annotations

from typing import Any


def fix_presigned_sigv4() -> None:
    """A SigV4 presigned URL (a presigned sts:GetCallerIdentity proves who signed it) carries its
    credential scope in `X-Amz-Credential=<key>/<date>/<region>/<service>/aws4_request`, not in an
    Authorization header. moto's server then routes the request to S3 and its STS answers for an
    anonymous key; AWS reads the key and service from the query, and so do these fixes."""
    from urllib.parse import parse_qs

    from moto.core.responses import BaseResponse
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    original_key = BaseResponse.get_access_key

    def get_access_key(self: Any) -> str:
        credential = (self.querystring.get("X-Amz-Credential") or [""])[0]
        if "Authorization" not in self.headers and credential:
            return str(credential).split("/", 1)[0]
        return str(original_key(self))

    original_infer = DomainDispatcherApplication.infer_service_region_host

    def infer_service_region_host(self: Any, environ: dict[str, Any], path: str) -> str | None:
        credential = parse_qs(environ.get("QUERY_STRING", "")).get("X-Amz-Credential", [""])[0]
        if environ.get("HTTP_AUTHORIZATION") or not credential:
            return original_infer(self, environ, path)
        environ["HTTP_AUTHORIZATION"] = f"AWS4-HMAC-SHA256 Credential={credential}, SignedHeaders=host"
        try:
            return original_infer(self, environ, path)
        finally:
            del environ["HTTP_AUTHORIZATION"]

    BaseResponse.get_access_key = get_access_key  # type: ignore[method-assign]
    DomainDispatcherApplication.infer_service_region_host = infer_service_region_host  # type: ignore[method-assign]
