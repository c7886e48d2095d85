"""What a terminal task may ask of the local AWS, decided as AWS decides it, before moto sees the request.

On AWS a task reaches only the services its VPC endpoints expose, and of those the container itself calls
two: S3 (the workspace, on credentials the vending function issued with a one-prefix session policy) and
Lambda (the vending function, on the task role's credentials). Everything else a task might try, DynamoDB,
ECS, SNS, STS, moto's own `/moto-api`, has no route from the task's subnets. Here every request from a
sandbox passes :class:`TaskAccess` (a WSGI middleware in front of moto's server application) first:

1. the service must be S3 or Lambda, and the request one this module can name as an IAM action on a
   resource (anything it cannot name, or cannot parse, is refused: the stand-in errs strict);
2. the SigV4 signature must verify against a session the local STS issued (moto's backends live in this
   process), with its token, unexpired, and within 15 minutes of the signing time;
3. the session's role policies, intersected with its session policy, must allow the action
   (:mod:`cloudide.offline.iam_policy`; moto's own IAM enforcement ignores session policies).

Refusals carry the error AWS gives for them, in the protocol the caller speaks (S3 XML, Lambda's REST
JSON, JSON or query protocol for the services a task cannot reach), and never reach moto. Request bodies
stream through to moto untouched, except a Lambda payload, which SigV4 hashes (at most Lambda's 6 MB).
"""

from __future__ import annotations

import io
import json
import logging
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from werkzeug.datastructures import EnvironHeaders

from cloudide.offline import iam_policy

logger = logging.getLogger(__name__)

REACHABLE_SERVICES = ("s3", "lambda")  # of template.yaml's VPC endpoints, those the container calls
MAX_SKEW = timedelta(minutes=15)  # SigV4: RequestTimeTooSkewed / "Signature expired" beyond this
LAMBDA_PAYLOAD_LIMIT = 6 * 1024 * 1024  # synchronous Invoke's request payload quota
# moto holds a request body in memory: a body past this is refused rather than taking the host down.
# S3 accepts 5 GiB in one PUT; the sync agent sends at most its multipart threshold (16 MiB by default).
S3_BODY_LIMIT = 128 * 1024 * 1024

_AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[A-Z0-9]{16,128})/(?P<date>\d{8})/(?P<region>[a-z0-9-]+)/"
    r"(?P<service>[a-z0-9-]+)/aws4_request, ?SignedHeaders=(?P<headers>[a-z0-9;-]+), ?"
    r"Signature=(?P<signature>[0-9a-f]{64})$"
)
_LAMBDA_INVOKE = re.compile(r"^/2015-03-31/functions/(?P<function>[^/]+)/invocations$")
# Query parameters of a ListObjects(V2) call; a bucket-level request with any other is another operation.
_LISTING_PARAMETERS = {
    "list-type", "prefix", "delimiter", "max-keys", "continuation-token", "start-after", "encoding-type",
    "fetch-owner", "marker", "x-id",
}  # fmt: skip
# Object subresources, by method, and the IAM action each needs; an object request with none is the plain
# Get/Put/Delete/Head. Multipart calls are authorized as s3:PutObject, as IAM documents.
_OBJECT_ACTIONS: dict[str, list[tuple[str, str]]] = {
    "GET": [("uploadId", "s3:ListMultipartUploadParts"), ("attributes", "s3:GetObjectAttributes"),
            ("tagging", "s3:GetObjectTagging"), ("acl", "s3:GetObjectAcl"), ("legal-hold", "s3:GetObjectLegalHold"),
            ("retention", "s3:GetObjectRetention"), ("torrent", "s3:GetObjectTorrent"),
            ("versionId", "s3:GetObjectVersion"), ("", "s3:GetObject")],
    "HEAD": [("versionId", "s3:GetObjectVersion"), ("", "s3:GetObject")],
    "PUT": [("tagging", "s3:PutObjectTagging"), ("acl", "s3:PutObjectAcl"), ("legal-hold", "s3:PutObjectLegalHold"),
            ("retention", "s3:PutObjectRetention"), ("", "s3:PutObject")],
    "POST": [("uploads", "s3:PutObject"), ("uploadId", "s3:PutObject"), ("restore", "s3:RestoreObject")],
    "DELETE": [("uploadId", "s3:AbortMultipartUpload"), ("tagging", "s3:DeleteObjectTagging"),
               ("versionId", "s3:DeleteObjectVersion"), ("", "s3:DeleteObject")],
}  # fmt: skip


@dataclass(frozen=True)
class Ask:
    """One request as IAM sees it: an action on a resource, with the condition keys it brings."""

    action: str
    resource: str
    context: Mapping[str, str] = field(default_factory=dict)


class Refusal(Exception):
    """A request AWS would refuse; `code` and `status` are AWS's for it."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class _Session:
    arn: str
    secret: str
    token: str
    expiration: datetime
    role_policies: list[iam_policy.Document]
    session_policy: iam_policy.Document | None


# ------------------------------------------------------------------------------------------ naming


def s3_asks(method: str, path: str, query: Mapping[str, str], headers: Mapping[str, str]) -> list[Ask]:
    """The IAM actions a path-style S3 request needs (a copy also reads its source)."""
    bucket, _, key = unquote(path).lstrip("/").partition("/")
    if not bucket:
        return [Ask("s3:ListAllMyBuckets", "*")]
    bucket_arn = f"arn:aws:s3:::{bucket}"
    if not key:
        if method in ("GET", "HEAD") and set(query) <= _LISTING_PARAMETERS:
            context = {"s3:prefix": query["prefix"]} if "prefix" in query else {}
            return [Ask("s3:ListBucket", bucket_arn, context)]
        raise Refusal(403, "AccessDenied", f"Access Denied: {method} on bucket {bucket} is not an operation "
                      "a terminal task may make (the local stand-in authorizes object calls and ListBucket)")  # fmt: skip
    action = next(
        (name for marker, name in _OBJECT_ACTIONS.get(method, []) if not marker or marker in query), None
    )
    if action is None:
        raise Refusal(
            403, "AccessDenied", f"Access Denied: {method} {sorted(query)} is not an object operation"
        )
    asks = [Ask(action, f"{bucket_arn}/{key}")]
    source = headers.get("x-amz-copy-source")
    if source:
        source_path = unquote(source.split("?", 1)[0]).lstrip("/")
        asks.append(Ask("s3:GetObject", f"arn:aws:s3:::{source_path}"))
    return asks


def lambda_asks(method: str, path: str, query: Mapping[str, str], region: str, account: str) -> list[Ask]:
    """Invoke is the only Lambda call a task makes; any other is refused as its IAM check would."""
    match = _LAMBDA_INVOKE.match(path)
    if method != "POST" or not match:
        raise Refusal(
            403, "AccessDeniedException", f"{method} {path}: a terminal task may only invoke functions"
        )
    function = unquote(match["function"])
    arn = (
        function if function.startswith("arn:") else f"arn:aws:lambda:{region}:{account}:function:{function}"
    )
    if "Qualifier" in query:
        arn = f"{arn}:{query['Qualifier']}"
    return [Ask("lambda:InvokeFunction", arn)]


# ------------------------------------------------------------------------------------------- errors


def _request_id() -> str:
    return uuid.uuid4().hex.upper()[:16]


def error_response(
    service: str, refusal: Refusal, headers: Mapping[str, str]
) -> tuple[str, list[tuple[str, str]], bytes]:
    """Status line, headers and body of `refusal` in the protocol a caller of `service` parses."""
    status = f"{refusal.status} {HTTPStatus(refusal.status).phrase}"
    request_id = _request_id()
    if service == "s3":
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{refusal.code}</Code><Message>{_xml(refusal.message)}</Message>"
            f"<RequestId>{request_id}</RequestId></Error>"
        ).encode()
        return status, [("Content-Type", "application/xml"), ("x-amz-request-id", request_id)], body
    if headers.get("x-amz-target"):  # the JSON protocol (DynamoDB, ECS, Logs, ...)
        body = json.dumps({"__type": refusal.code, "message": refusal.message}).encode()
        return (
            status,
            [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-RequestId", request_id)],
            body,
        )
    if "x-www-form-urlencoded" in headers.get("content-type", ""):  # the query protocol (SNS, STS, ...)
        code = {
            "AccessDeniedException": "AccessDenied",
            "UnrecognizedClientException": "InvalidClientTokenId",
        }.get(refusal.code, refusal.code)
        body = (
            f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>"
            f"<Message>{_xml(refusal.message)}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>"
        ).encode()
        return status, [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)], body
    body = json.dumps({"Type": "User", "message": refusal.message}).encode()  # REST JSON (Lambda, ...)
    return status, [
        ("Content-Type", "application/json"), ("x-amzn-ErrorType", refusal.code), ("x-amzn-RequestId", request_id),
    ], body  # fmt: skip


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# --------------------------------------------------------------------------------------- the gate

SessionLookup = Callable[[str], "_Session | None"]


def moto_sessions(account: str) -> SessionLookup:
    """Sessions as the local STS issued them, with the role's policies from the local IAM."""

    def lookup(access_key_id: str) -> _Session | None:
        from moto.iam.models import iam_backends
        from moto.sts.models import sts_backends

        backend = sts_backends[account]["aws"]
        assumed = backend.get_assumed_role_from_access_key(access_key_id)
        if assumed is None:
            return None
        iam = iam_backends[account]["aws"]
        try:
            role = iam.get_role_by_arn(assumed.role_arn)
        except Exception:  # a role deleted since, or never there: it grants nothing
            documents: list[iam_policy.Document] = []
        else:
            documents = [_document(text) for text in role.policies.values()]
            documents += [
                _document(next(v.document for v in policy.versions if v.is_default))
                for policy in role.managed_policies.values()
            ]
        return _Session(
            arn=assumed.arn,
            secret=assumed.secret_access_key,
            token=assumed.session_token,
            expiration=assumed.expiration.replace(tzinfo=UTC),
            role_policies=documents,
            session_policy=_document(assumed.policy) if assumed.policy else None,
        )

    return lookup


def _document(stored: str | Mapping[str, Any]) -> iam_policy.Document:
    """moto keeps a policy as the JSON text it was given, or as the parsed document CloudFormation gave."""
    return json.loads(stored) if isinstance(stored, str) else stored


class TaskAccess:
    """WSGI middleware: a request from a task reaches `app` (moto) only if AWS would serve it.

    `hosts` are the Host headers a task's endpoint URL yields; `sessions` finds a session by access key
    (:func:`moto_sessions`); `account` and the request's signing region name Lambda functions."""

    def __init__(
        self, app: Any, *, hosts: Iterable[str], account: str, sessions: SessionLookup | None = None
    ) -> None:
        self._app = app
        self._hosts = {host.lower() for host in hosts}
        self._account = account
        self._sessions = sessions or moto_sessions(account)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        headers = EnvironHeaders(environ)
        lowered = {name.lower(): value for name, value in headers.items()}
        match = _AUTHORIZATION.match(lowered.get("authorization", ""))
        service = match["service"] if match else "s3"
        try:
            self._authorize(environ, lowered, match)
        except Refusal as refusal:
            logger.warning(
                "task request refused",
                extra={"method": environ.get("REQUEST_METHOD"), "path": environ.get("PATH_INFO"),
                       "service": service, "code": refusal.code, "reason": refusal.message},
            )  # fmt: skip
            status, response_headers, body = error_response(service, refusal, lowered)
            # werkzeug closes the connection after an error answered before the body was read
            start_response(status, [*response_headers, ("Content-Length", str(len(body)))])
            return [body]
        return self._app(environ, start_response)

    def _authorize(
        self, environ: dict[str, Any], headers: Mapping[str, str], match: re.Match[str] | None
    ) -> None:
        method = str(environ["REQUEST_METHOD"]).upper()
        raw = str(environ.get("REQUEST_URI") or environ.get("RAW_URI") or environ.get("PATH_INFO", "/"))
        path = urlsplit(raw).path
        query = dict(parse_qsl(urlsplit(raw).query, keep_blank_values=True))
        moto_api = any(str(p).startswith("/moto-api") for p in (path, environ.get("PATH_INFO", "")))
        if moto_api or headers.get("host", "").lower() not in self._hosts:
            raise Refusal(
                403, "AccessDenied", f"{path} on {headers.get('host')} is not an AWS endpoint a task reaches"
            )
        if match is None:
            raise Refusal(403, "AccessDenied", "Access Denied: an anonymous or non-SigV4 request (header "
                          "authentication with AWS4-HMAC-SHA256 is the only kind a task's SDK sends here)")  # fmt: skip
        service = match["service"]
        if service not in REACHABLE_SERVICES:
            raise Refusal(403, "AccessDeniedException" if service != "s3" else "AccessDenied",
                          f"{service} is not reachable from a terminal task: template.yaml gives its subnets no "
                          f"VPC endpoint for it that the container calls (only {', '.join(REACHABLE_SERVICES)})")  # fmt: skip
        if service == "s3":
            asks = s3_asks(method, path, query, headers)
        else:
            asks = lambda_asks(method, path, query, match["region"], self._account)
        session = self._authenticate(environ, method, raw, headers, match)
        for ask in asks:
            try:
                allowed = iam_policy.role_session_allows(
                    session.role_policies, session.session_policy, ask.action, ask.resource, ask.context
                )
            except iam_policy.UnsupportedPolicy as error:
                logger.error("a policy the stand-in cannot evaluate: refusing", extra={"error": str(error)})
                allowed = False
            if not allowed:
                denied = "AccessDenied" if service == "s3" else "AccessDeniedException"
                raise Refusal(403, denied, f"User: {session.arn} is not authorized to perform: {ask.action} on "
                              f"resource: {ask.resource} because no identity-based policy allows the "
                              f"{ask.action} action")  # fmt: skip

    def _authenticate(
        self, environ: dict[str, Any], method: str, raw: str, headers: Mapping[str, str], match: re.Match[str]
    ) -> _Session:
        s3 = match["service"] == "s3"
        session = self._sessions(match["key"])
        if session is None:
            raise Refusal(403, "InvalidAccessKeyId" if s3 else "UnrecognizedClientException",
                          "The AWS Access Key Id you provided does not exist in our records." if s3
                          else "The security token included in the request is invalid.")  # fmt: skip
        if headers.get("x-amz-security-token") != session.token:
            raise Refusal(400 if s3 else 403, "InvalidToken" if s3 else "UnrecognizedClientException",
                          "The provided token is malformed or otherwise invalid.")  # fmt: skip
        now = datetime.now(UTC)
        if session.expiration <= now:
            raise Refusal(400 if s3 else 403, "ExpiredToken" if s3 else "ExpiredTokenException",
                          "The provided token has expired.")  # fmt: skip
        signed_at = _signing_time(headers.get("x-amz-date", ""), match["date"])
        if abs(now - signed_at) > MAX_SKEW:
            raise Refusal(403, "RequestTimeTooSkewed" if s3 else "InvalidSignatureException",
                          "The difference between the request time and the current time is too large.")  # fmt: skip
        body = b""
        if s3:
            if "x-amz-content-sha256" not in headers:
                raise Refusal(
                    400, "InvalidRequest", "Missing required header for this request: x-amz-content-sha256"
                )
            if _content_length(environ) > S3_BODY_LIMIT:
                raise Refusal(
                    400, "EntityTooLarge", f"the local stack takes request bodies up to {S3_BODY_LIMIT} bytes"
                )
        else:
            body = _read_payload(environ)
        signed = match["headers"].split(";")
        request = AWSRequest(
            method=method,
            url=f"http://{headers.get('host', '')}{raw}",
            headers={name: headers.get(name, "") for name in signed},
            data=body,
        )
        request.context["timestamp"] = headers.get("x-amz-date", "")
        signer = (S3SigV4Auth if s3 else SigV4Auth)(
            Credentials(match["key"], session.secret, session.token), match["service"], match["region"]
        )
        if "host" not in signed or signer.signed_headers(signer.headers_to_sign(request)) != match["headers"]:
            raise Refusal(403, "SignatureDoesNotMatch" if s3 else "InvalidSignatureException",
                          "The request signature must cover the host header and every header it names.")  # fmt: skip
        canonical = signer.canonical_request(request)
        expected = signer.signature(signer.string_to_sign(request, canonical), request)
        if expected != match["signature"]:
            raise Refusal(403, "SignatureDoesNotMatch" if s3 else "InvalidSignatureException",
                          "The request signature we calculated does not match the signature you provided.")  # fmt: skip
        return session


def _signing_time(amz_date: str, scope_date: str) -> datetime:
    try:
        signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise Refusal(
            403, "AccessDenied", "X-Amz-Date is missing or not in the form YYYYMMDDTHHMMSSZ"
        ) from None
    if amz_date[:8] != scope_date:
        raise Refusal(403, "SignatureDoesNotMatch", "the credential scope's date is not the signing date")
    return signed_at


def _content_length(environ: Mapping[str, Any]) -> int:
    try:
        return int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise Refusal(400, "InvalidRequest", "Content-Length is not a number") from None


def _read_payload(environ: dict[str, Any]) -> bytes:
    """The whole (small) payload SigV4 hashes; put back for moto to read."""
    length = _content_length(environ)
    if length > LAMBDA_PAYLOAD_LIMIT:
        raise Refusal(
            413,
            "RequestEntityTooLargeException",
            f"Request must be smaller than {LAMBDA_PAYLOAD_LIMIT} bytes",
        )
    body = environ["wsgi.input"].read(length) if length else b""
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    return bytes(body)
