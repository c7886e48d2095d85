"""Keep the local stack's workspaces and session history across restarts, in a folder.

moto keeps everything in memory and every start deploys afresh (new physical names), so state is saved
by logical resource: the workspace bucket's objects as files under ``s3/`` (their keys as paths, which is
also the easiest way to look at a workspace from the host), the sessions table's items as JSON lines.
Only ended sessions are ever saved, since shutdown stops every task first; a record still live at save
time is written as it is and closed by the reconciling control plane on the next start.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from cloudide.offline.stack import OfflineAws

BUCKET = "WorkspaceBucketName"
# Items are saved as DynamoDB JSON, every attribute type kept (numbers, string sets of exec sessions...).
_SERIALIZER, _DESERIALIZER = TypeSerializer(), TypeDeserializer()
TABLE = "SessionsTableName"


@dataclass(frozen=True)
class Restored:
    objects: int
    sessions: int


class Persistence:
    def __init__(self, aws: OfflineAws, folder: Path) -> None:
        self.aws = aws
        self.folder = folder
        assert aws.stack is not None, "deploy the stack before restoring into it"
        self._bucket = aws.stack.outputs[BUCKET]
        self._table: Any = (
            aws.session().resource("dynamodb", endpoint_url=aws.endpoint_url).Table(aws.stack.outputs[TABLE])
        )
        self._s3: Any = aws.client("s3")

    @property
    def _objects(self) -> Path:
        return self.folder / "s3"

    @property
    def _sessions(self) -> Path:
        return self.folder / "sessions.jsonl"

    def save(self) -> None:
        """Replace the folder's contents with the stack's current state."""
        saved = self.folder.with_name(self.folder.name + ".saving")
        shutil.rmtree(saved, ignore_errors=True)  # left over from a save that was interrupted
        objects = saved / "s3"
        objects.mkdir(parents=True, exist_ok=True)
        for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=self._bucket):
            for item in page.get("Contents", []):
                target = objects / _safe_relative(item["Key"])
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(self._s3.get_object(Bucket=self._bucket, Key=item["Key"])["Body"].read())
        with (saved / "sessions.jsonl").open("w") as out:
            for item in _scan(self._table):
                out.write(json.dumps(_SERIALIZER.serialize(item)["M"]) + "\n")
        _replace_folder(saved, self.folder)

    def restore(self) -> Restored:
        """Load what ``save`` wrote, if anything."""
        objects = sessions = 0
        if self._objects.is_dir():
            for file in sorted(p for p in self._objects.rglob("*") if p.is_file()):
                key = file.relative_to(self._objects).as_posix()
                self._s3.put_object(Bucket=self._bucket, Key=key, Body=file.read_bytes())
                objects += 1
        if self._sessions.is_file():
            with self._table.batch_writer() as batch:
                for line in self._sessions.read_text().splitlines():
                    batch.put_item(Item=_DESERIALIZER.deserialize({"M": json.loads(line)}))
                    sessions += 1
        return Restored(objects, sessions)


def _scan(table: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    arguments: dict[str, Any] = {}
    while True:
        page = table.scan(**arguments)
        items += page.get("Items", [])
        if "LastEvaluatedKey" not in page:
            return items
        arguments["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _safe_relative(key: str) -> Path:
    """An object key as a relative path that cannot leave the folder (keys are user-chosen file names)."""
    parts = [part for part in PurePosixPath(key).parts if part not in ("", ".", "..", "/")]
    if not parts:
        raise ValueError(f"object key {key!r} has no usable path")
    return Path(*parts)


def _replace_folder(new: Path, old: Path) -> None:
    if old.exists():
        shutil.rmtree(old)
    new.rename(old)
