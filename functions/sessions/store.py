"""Data access for session records. Every write that changes a session's fate is a conditional write
named for what it guarantees, so concurrent writers (API, workflow steps, task events) never need locks.
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any

import boto3
from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import ClientError

from sessions import clock
from sessions.ecs_tasks import TaskFacts
from sessions.record import LIVE, Session, Status, WaitingFor

OWNER_INDEX = "byOwner"
LIVE_INDEX = "byLiveness"
# Present only while a session is live: the sparse LIVE_INDEX then counts live sessions cheaply.
LIVE_MARK = "live"


class RecordNotFound(Exception):
    """No session with that id (or not the caller's)."""


class TransitionRejected(Exception):
    """The record was not in a state that allows the write; carries the record as it is now."""

    def __init__(self, session: Session | None, message: str) -> None:
        super().__init__(message)
        self.session = session


EXEC_SESSIONS = "execSessionIds"
"""String set of the ECS Exec session ids connect handed out for a session (not part of its view)."""


def _is_condition_failure(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


class SessionStore:
    def __init__(self, table_name: str, *, table: Any | None = None) -> None:
        self._table = table or boto3.resource("dynamodb").Table(table_name)

    # Reads ---------------------------------------------------------------------------------------

    def get(self, session_id: str) -> Session | None:
        item = self._table.get_item(Key={"sessionId": session_id}, ConsistentRead=True).get("Item")
        return Session.from_item(item) if item else None

    def require(self, session_id: str) -> Session:
        session = self.get(session_id)
        if session is None:
            raise RecordNotFound(session_id)
        return session

    def get_owned(self, session_id: str, owner_id: str) -> Session:
        """The session if the owner owns it; otherwise indistinguishable from absent (no oracle)."""
        session = self.get(session_id)
        if session is None or session.owner_id != owner_id:
            raise RecordNotFound(session_id)
        return session

    def list_by_owner(self, owner_id: str, *, live_only: bool = False) -> list[Session]:
        query: dict[str, Any] = {
            "IndexName": OWNER_INDEX,
            "KeyConditionExpression": Key("ownerId").eq(owner_id),
        }
        if live_only:
            query["FilterExpression"] = Attr(LIVE_MARK).exists()
        return _newest_first(_all_pages(self._table.query, query))

    def list_all(self, *, live_only: bool = False) -> list[Session]:
        """Every user's sessions, newest first: a table scan, for operators and the admin-only route."""
        scan: dict[str, Any] = {"FilterExpression": Attr(LIVE_MARK).exists()} if live_only else {}
        return _newest_first(_all_pages(self._table.scan, scan))

    def count_live(self) -> int:
        """Live sessions across all users (eventually consistent: a cap, not an exact ledger)."""
        query: dict[str, Any] = {
            "IndexName": LIVE_INDEX,
            "KeyConditionExpression": Key(LIVE_MARK).eq("1"),
            "Select": "COUNT",
        }
        total = 0
        while True:
            page = self._table.query(**query)
            total += page.get("Count", 0)
            if "LastEvaluatedKey" not in page:
                return total
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def list_live(self) -> list[Session]:
        """Every live session, each read consistently (the sparse index only finds them, eventually)."""
        query: dict[str, Any] = {"IndexName": LIVE_INDEX, "KeyConditionExpression": Key(LIVE_MARK).eq("1")}
        sessions: list[Session] = []
        while True:
            page = self._table.query(**query)
            for key in page.get("Items", []):
                session = self.get(str(key["sessionId"]))
                if session is not None and session.status.is_live:
                    sessions.append(session)
            if "LastEvaluatedKey" not in page:
                return sessions
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    # Writes --------------------------------------------------------------------------------------

    def create(self, session: Session) -> Session:
        item = session.to_item() | {LIVE_MARK: "1"}
        self._table.put_item(Item=item, ConditionExpression=Attr("sessionId").not_exists())
        return session

    def _update(
        self,
        session_id: str,
        *,
        set_fields: dict[str, Any],
        remove: tuple[str, ...] = (),
        condition: Any,
        reject_message: str,
    ) -> Session:
        names = {f"#{k}": k for k in set_fields} | {f"#{k}": k for k in remove}
        values = {f":{k}": v for k, v in set_fields.items()}
        expression = ""
        if set_fields:
            expression += "SET " + ", ".join(f"#{k} = :{k}" for k in set_fields)
        if remove:
            expression += " REMOVE " + ", ".join(f"#{k}" for k in remove)
        kwargs: dict[str, Any] = {
            "Key": {"sessionId": session_id},
            "UpdateExpression": expression.strip(),
            "ExpressionAttributeNames": names,
            "ConditionExpression": Attr("sessionId").exists() & condition,
            "ReturnValues": "ALL_NEW",
        }
        if values:
            kwargs["ExpressionAttributeValues"] = values
        try:
            return Session.from_item(self._table.update_item(**kwargs)["Attributes"])
        except ClientError as error:
            if _is_condition_failure(error):
                raise TransitionRejected(self.get(session_id), reject_message) from error
            raise

    def transition(
        self,
        session_id: str,
        to: Status,
        *,
        reason: str | None = None,
        allowed_from: tuple[Status, ...] | None = None,
        **changes: Any,
    ) -> Session:
        """Move the session forward to `to`, setting `changes` (record fields) with it; refused
        (TransitionRejected) from any later status."""
        origins = allowed_from if allowed_from is not None else to.predecessors()
        if not to.is_live:
            changes.setdefault("stopped_at", clock.rfc3339(clock.now()))
        set_fields = Session.item_fields(**changes, status=to, status_reason=reason)
        remove = () if to.is_live else (LIVE_MARK, "waitToken", "waitingFor")
        return self._update(
            session_id,
            set_fields=set_fields,
            remove=remove,
            condition=Attr("status").is_in([s.value for s in origins]),
            reject_message=f"cannot move to {to.value}",
        )

    def park_token(self, session_id: str, token: str, waiting_for: WaitingFor) -> Session:
        """Store the workflow's callback token; the returned record tells whether it is already due."""
        return self._update(
            session_id,
            set_fields=Session.item_fields(wait_token=token, waiting_for=waiting_for),
            condition=Attr("status").is_in([s.value for s in LIVE]),
            reject_message="session has ended",
        )

    def request_stop(self, session_id: str, *, requested_by: str, reason: str | None = None) -> Session:
        """Record a stop request once; later requests keep the first one's time, author and reason."""
        stamp = clock.rfc3339(clock.now())
        try:
            return self._update(
                session_id,
                set_fields=Session.item_fields(
                    stop_requested_at=stamp, stop_requested_by=requested_by, stop_requested_reason=reason
                ),
                condition=Attr("stopRequestedAt").not_exists(),
                reject_message="stop already requested",
            )
        except TransitionRejected as rejected:
            if rejected.session is None:
                raise RecordNotFound(session_id) from rejected
            return rejected.session

    def remember_exec_session(self, session_id: str, exec_session_id: str) -> None:
        """Record an ECS Exec session opened into this session's task, so a later connect may end it.
        A record deleted meanwhile stays deleted (the write never creates one)."""
        try:
            self._table.update_item(
                Key={"sessionId": session_id},
                UpdateExpression="ADD #exec :id",
                ExpressionAttributeNames={"#exec": EXEC_SESSIONS},
                ExpressionAttributeValues={":id": {exec_session_id}},
                ConditionExpression=Attr("sessionId").exists(),
            )
        except ClientError as error:
            if not _is_condition_failure(error):
                raise

    def forget_exec_session(self, session_id: str, exec_session_id: str) -> bool:
        """Drop an exec session from the record; False if this session never opened it (or it was
        dropped already): the proof that a ``replaces`` names one of the caller's own exec sessions."""
        try:
            self._table.update_item(
                Key={"sessionId": session_id},
                UpdateExpression="DELETE #exec :id",
                ExpressionAttributeNames={"#exec": EXEC_SESSIONS},
                ExpressionAttributeValues={":id": {exec_session_id}},
                ConditionExpression=Attr(EXEC_SESSIONS).contains(exec_session_id),
            )
        except ClientError as error:
            if _is_condition_failure(error):
                return False
            raise
        return True

    def touch_activity(self, session_id: str, *, coalesce_seconds: int) -> Session | None:
        """Move the idle deadline forward; None when a report within `coalesce_seconds` already did.

        Coalescing bounds the write (and workflow heartbeat) rate whatever the client's report rate.
        """
        moment = clock.now()
        current = self.require(session_id)
        try:
            return self._update(
                session_id,
                set_fields=Session.item_fields(
                    last_activity_at=clock.rfc3339(moment),
                    idle_deadline=clock.later(moment, current.idle_timeout_seconds),
                ),
                condition=Attr("status").is_in([s.value for s in LIVE])
                & Attr("lastActivityAt").lte(clock.later(moment, -coalesce_seconds)),
                reject_message="activity already recorded recently",
            )
        except TransitionRejected:
            return None

    def record_usage(
        self, session: Session, *, task_arn: str, clients: int, used_at: datetime | None
    ) -> Session:
        """Record a usage report of the session's own task: its clients now and, when newer than the
        record's, its last use and the idle deadline that sets. The last use never moves back: if a
        newer use was recorded meanwhile (a concurrent report, the REST `/activity`), only the clients
        are written."""
        reported = Session.item_fields(clients_attached=clients, last_report_at=clock.rfc3339(clock.now()))
        own_task = Attr("status").is_in([s.value for s in LIVE]) & Attr("taskArn").eq(task_arn)
        if used_at is not None:
            used = clock.rfc3339(used_at)
            with contextlib.suppress(TransitionRejected):
                return self._update(
                    session.session_id,
                    set_fields=reported
                    | Session.item_fields(
                        last_activity_at=used,
                        idle_deadline=clock.later(used_at, session.idle_timeout_seconds),
                    ),
                    condition=own_task & Attr("lastActivityAt").lt(used),
                    reject_message="not the session's task, or newer use is recorded",
                )
        return self._update(
            session.session_id,
            set_fields=reported,
            condition=own_task,
            reject_message="the session has ended or runs on another task",
        )

    def record_task_facts(self, session_id: str, facts: TaskFacts) -> Session:
        """Record what ECS said about the session's own task: only while the record names that task, and
        only if newer than the last version of it applied (ECS counts versions per task)."""
        set_fields = Session.item_fields(**facts.record_fields())
        condition: Any = Attr("taskArn").eq(facts.task_arn)
        if facts.version is not None:
            set_fields["lastEventVersion"] = facts.version
            condition &= Attr("lastEventVersion").not_exists() | Attr("lastEventVersion").lt(facts.version)
        return self._update(
            session_id,
            set_fields=set_fields,
            condition=condition,
            reject_message="not the session's task, or a stale or duplicate event",
        )

    def note_stray_task(self, session_id: str, task_arn: str) -> bool:
        """Remember a task that carried the session's id without being its task; True the first time,
        so a redelivered event is not counted again."""
        try:
            self._table.update_item(
                Key={"sessionId": session_id},
                UpdateExpression="ADD #strays :task",
                ExpressionAttributeNames={"#strays": "strayTaskArns"},
                ExpressionAttributeValues={":task": {task_arn}},
                ConditionExpression=Attr("sessionId").exists() & ~Attr("strayTaskArns").contains(task_arn),
            )
        except ClientError as error:
            if _is_condition_failure(error):
                return False
            raise
        return True

    def update_fields(self, session_id: str, *, while_status: tuple[Status, ...], **changes: Any) -> Session:
        """Set record fields without changing status, only while the session is in one of `while_status`."""
        return self._update(
            session_id,
            set_fields=Session.item_fields(**changes),
            condition=Attr("status").is_in([s.value for s in while_status]),
            reject_message="session is no longer in a status that allows this",
        )


def _all_pages(call: Any, request: dict[str, Any]) -> list[dict[str, Any]]:
    """Every item of a paginated Query or Scan."""
    items: list[dict[str, Any]] = []
    while True:
        page = call(**request)
        items.extend(page.get("Items", []))
        if "LastEvaluatedKey" not in page:
            return items
        request = request | {"ExclusiveStartKey": page["LastEvaluatedKey"]}


def _newest_first(items: list[dict[str, Any]]) -> list[Session]:
    return sorted((Session.from_item(item) for item in items), key=lambda s: s.created_at, reverse=True)
