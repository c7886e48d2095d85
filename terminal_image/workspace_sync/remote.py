"""The remote side: the workspace's objects in S3, written with conditions so no writer is overwritten.

Every write is conditional on what the agent last saw (``If-Match`` the known ETag, or
``If-None-Match: *`` for a new key). A failed condition means someone else (the IDE editor) changed
the object meanwhile: :class:`Changed` is raised and the caller keeps both versions. Uploads carry
their SHA-256 so S3 verifies them; downloads are checked against S3's checksum (ChecksumMode) and the
agent's own SHA-256 metadata. Multipart is hand-rolled rather than s3transfer's because s3transfer
cannot make the final CompleteMultipartUpload conditional.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from . import layout
from .localfs import CHUNK, DIR, FILE, SYMLINK

_PRECONDITION = {"PreconditionFailed", "412", "ConditionalRequestConflict"}
_MISSING = {"NoSuchKey", "404", "NotFound"}


class Changed(Exception):
    """The object is not in the state the write was conditional on."""


class IntegrityError(Exception):
    """A downloaded body does not match its size or SHA-256."""


@dataclass(frozen=True)
class RemoteEntry:
    """One object from a listing."""

    etag: str
    size: int
    is_dir: bool


@dataclass(frozen=True)
class RemoteVersion:
    """One downloaded object: what the agent needs to install it and remember it."""

    kind: str
    etag: str
    size: int
    mode: int
    sha256: str
    mtime_ns: int | None
    link_target: bytes = b""


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _condition(expected_etag: str | None) -> dict[str, str]:
    return {"IfMatch": expected_etag} if expected_etag else {"IfNoneMatch": "*"}


def _b64(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()


class RemoteStore:
    """Reads and writes one workspace prefix of one bucket."""

    def __init__(
        self, client: Any, bucket: str, prefix: str, multipart_threshold: int, part_size: int
    ) -> None:
        self._s3 = client
        self.bucket = bucket
        self.layout = layout.Layout(prefix)
        self._threshold = multipart_threshold
        self._part_size = part_size

    def list(self) -> dict[str, RemoteEntry]:
        """Everything under the prefix, by relative path (a file wins over a same-named dir marker)."""
        found: dict[str, RemoteEntry] = {}
        pages = self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.layout.root
        )
        for page in pages:
            for obj in page.get("Contents", []):
                parsed = self.layout.rel(obj["Key"])
                if parsed is None:
                    continue
                rel, is_dir = parsed
                if is_dir and rel in found:
                    continue
                found[rel] = RemoteEntry(etag=obj["ETag"], size=obj["Size"], is_dir=is_dir)
        return found

    def head(self, rel: str, is_dir: bool) -> RemoteEntry | None:
        try:
            response = self._s3.head_object(Bucket=self.bucket, Key=self.layout.key(rel, is_dir))
        except ClientError as error:
            if _code(error) in _MISSING:
                return None
            raise
        return RemoteEntry(etag=response["ETag"], size=response["ContentLength"], is_dir=is_dir)

    def put_file(
        self, rel: str, path: Path, mode: int, mtime_ns: int, sha256: str, expected_etag: str | None
    ) -> str:
        metadata = {layout.KIND: FILE, layout.MODE: f"{mode:04o}", layout.SHA256: sha256}
        metadata[layout.MTIME_NS] = str(mtime_ns)
        size = path.stat().st_size
        if size >= self._threshold:
            return self._put_multipart(rel, path, metadata, expected_etag)
        with path.open("rb") as body:
            return self._put(self.layout.key(rel), body, metadata, expected_etag, ChecksumSHA256=_b64(sha256))

    def put_symlink(self, rel: str, target: bytes, mode: int, expected_etag: str | None) -> str:
        digest = hashlib.sha256(target).hexdigest()
        metadata = {layout.KIND: SYMLINK, layout.MODE: f"{mode:04o}", layout.SHA256: digest}
        return self._put(self.layout.key(rel), target, metadata, expected_etag, ChecksumSHA256=_b64(digest))

    def put_dir(self, rel: str, mode: int, expected_etag: str | None) -> str:
        metadata = {layout.KIND: DIR, layout.MODE: f"{mode:04o}"}
        return self._put(self.layout.key(rel, is_dir=True), b"", metadata, expected_etag)

    def delete(self, rel: str, is_dir: bool, expected_etag: str) -> None:
        """Delete only the version the agent knows; a missing object counts as deleted."""
        try:
            self._s3.delete_object(
                Bucket=self.bucket, Key=self.layout.key(rel, is_dir), IfMatch=expected_etag
            )
        except ClientError as error:
            if _code(error) in _MISSING:
                return
            if _code(error) in _PRECONDITION:
                raise Changed(rel) from error
            raise

    def get(
        self, rel: str, is_dir: bool, dest: Path, on_bytes: Callable[[int], None]
    ) -> RemoteVersion | None:
        """Download into ``dest`` (files) or return the link target (symlinks); None if gone."""
        try:
            response = self._s3.get_object(
                Bucket=self.bucket, Key=self.layout.key(rel, is_dir), ChecksumMode="ENABLED"
            )
        except ClientError as error:
            if _code(error) in _MISSING:
                return None
            raise
        meta = {k.lower(): v for k, v in response.get("Metadata", {}).items()}
        kind = DIR if is_dir else meta.get(layout.KIND, FILE)
        default_mode = 0o755 if kind == DIR else 0o644
        mode = int(meta.get(layout.MODE, f"{default_mode:o}"), 8) & 0o7777
        mtime = meta.get(layout.MTIME_NS)
        digest = hashlib.sha256()
        size = 0
        body = response["Body"]
        target = b""
        try:
            if kind == FILE:
                with dest.open("wb") as out:
                    while chunk := body.read(CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        size += len(chunk)
                        on_bytes(len(chunk))
            else:
                target = body.read()
                digest.update(target)
                size = len(target)
        finally:
            body.close()
        expected_size = response.get("ContentLength", size)
        if size != expected_size:
            raise IntegrityError(f"{rel}: got {size} bytes, expected {expected_size}")
        if layout.SHA256 in meta and meta[layout.SHA256] != digest.hexdigest():
            raise IntegrityError(f"{rel}: SHA-256 mismatch")
        return RemoteVersion(
            kind=kind,
            etag=response["ETag"],
            size=size,
            mode=mode,
            sha256=digest.hexdigest(),
            mtime_ns=int(mtime) if mtime and mtime.isdigit() else None,
            link_target=target,
        )

    def _put(
        self, key: str, body: Any, metadata: dict[str, str], expected_etag: str | None, **extra: Any
    ) -> str:
        try:
            response = self._s3.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=body,
                Metadata=metadata,
                **_condition(expected_etag),
                **extra,
            )
        except ClientError as error:
            if _code(error) in _PRECONDITION:
                raise Changed(key) from error
            raise
        return str(response["ETag"])

    def _put_multipart(
        self, rel: str, path: Path, metadata: dict[str, str], expected_etag: str | None
    ) -> str:
        key = self.layout.key(rel)
        upload_id = self._s3.create_multipart_upload(
            Bucket=self.bucket, Key=key, Metadata=metadata, ChecksumAlgorithm="SHA256"
        )["UploadId"]
        try:
            parts = []
            with path.open("rb") as handle:
                number = 1
                while chunk := handle.read(self._part_size):
                    checksum = base64.b64encode(hashlib.sha256(chunk).digest()).decode()
                    response = self._s3.upload_part(
                        Bucket=self.bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=chunk,
                        ChecksumSHA256=checksum,
                    )
                    parts.append({"PartNumber": number, "ETag": response["ETag"], "ChecksumSHA256": checksum})
                    number += 1
            response = self._s3.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                **_condition(expected_etag),
            )
        except BaseException as error:
            with suppress(ClientError, BotoCoreError):
                self._s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            if isinstance(error, ClientError) and _code(error) in _PRECONDITION:
                raise Changed(key) from error
            raise
        return str(response["ETag"])
