"""s3_multipart: completing a multipart upload costs the local AWS one chunk of memory, not the object twice."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from collections.abc import Iterator

import pytest

from cloudide.offline.stack import OfflineAws

PART = 5 * 1024 * 1024  # S3's smallest part but the last


@pytest.fixture
def s3() -> Iterator[object]:
    with OfflineAws() as aws:
        client = aws.client("s3")
        client.create_bucket(Bucket="parts")
        yield client


def test_a_completed_upload_is_whole_and_never_held_in_memory(s3: object) -> None:
    client: object = s3
    parts = [os.urandom(PART) for _ in range(4)] + [b"tail"]
    # SHA-256 part checksums, as the sync agent sends (moto's full-object CRC still joins the object)
    upload = client.create_multipart_upload(  # type: ignore[attr-defined]
        Bucket="parts", Key="big", ChecksumAlgorithm="SHA256"
    )["UploadId"]
    sent = [
        {"PartNumber": number, "ETag": client.upload_part(  # type: ignore[attr-defined]
            Bucket="parts", Key="big", UploadId=upload, PartNumber=number, Body=body, ChecksumAlgorithm="SHA256",
        )["ETag"]}
        for number, body in enumerate(parts, 1)
    ]  # fmt: skip

    tracemalloc.start()
    try:
        completed = client.complete_multipart_upload(  # type: ignore[attr-defined]
            Bucket="parts", Key="big", UploadId=upload, MultipartUpload={"Parts": sent}
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    whole = b"".join(parts)
    stored = client.get_object(Bucket="parts", Key="big")  # type: ignore[attr-defined]
    assert hashlib.sha256(stored["Body"].read()).digest() == hashlib.sha256(whole).digest()
    assert stored["ContentLength"] == len(whole)
    assert completed["ETag"].strip('"').endswith("-5")
    # moto's own join held the object twice (a bytearray and its bytes copy): over 40 MiB here
    assert peak < 2 * PART + 1024 * 1024, f"completing held {peak} bytes"
